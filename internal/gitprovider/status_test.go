package gitprovider

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/testgit"
)

// TestGiteaCommitStatusOnARealGitea posts pending then success on one commit and failure on
// another, and reads them back through Gitea's API: a later status of the same context
// replaces the earlier one in the combined state.
func TestGiteaCommitStatusOnARealGitea(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	gt := startGitea(t)
	repoURL, err := gt.CreateRepo(ctx, "statuses")
	g.Expect(err).NotTo(HaveOccurred())
	clone, err := testgit.NewClone(filepath.Join(t.TempDir(), "statuses"), repoURL, gt.PushURL("statuses"), "main")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(clone.Write(map[string]string{"app/deployment.yaml": "image: good\n"})).To(Succeed())
	good, err := clone.CommitAndPush("Release a good build")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(clone.Write(map[string]string{"app/deployment.yaml": "image: bad\n"})).To(Succeed())
	bad, err := clone.CommitAndPush("Release a broken build")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(gt.WaitForBranch(ctx, "statuses", "main")).To(Succeed())

	c, err := New(Options{Provider: Gitea, RepoURL: repoURL, Token: gt.Token})
	g.Expect(err).NotTo(HaveOccurred())
	const name = "immutable-release/shop/web"
	g.Expect(c.SetCommitStatus(ctx, good, CommitStatus{State: StatePending, Context: name, Description: "rolling out"})).To(Succeed())
	g.Expect(c.SetCommitStatus(ctx, good, CommitStatus{State: StateSuccess, Context: name, Description: "healthy"})).To(Succeed())
	revert := CommitURL(Gitea, repoURL, strings.Repeat("ab", 20))
	long := "revision main@sha1:" + bad + " failed its health check: " + strings.Repeat("Deployment shop/web has 0 of 2 replicas ready; ", 5)
	g.Expect(c.SetCommitStatus(ctx, bad, CommitStatus{State: StateFailure, Context: name, Description: long, TargetURL: revert})).To(Succeed())

	var combined struct {
		State    string `json:"state"`
		Statuses []struct {
			Status      string `json:"status"`
			Context     string `json:"context"`
			Description string `json:"description"`
			TargetURL   string `json:"target_url"`
		} `json:"statuses"`
	}
	g.Expect(gt.API(ctx, http.MethodGet, "/repos/"+gt.User+"/statuses/commits/"+good+"/status", nil, &combined)).To(Succeed())
	g.Expect(combined.State).To(Equal("success"))
	g.Expect(combined.Statuses).To(HaveLen(1))
	g.Expect(combined.Statuses[0].Context).To(Equal(name))
	g.Expect(combined.Statuses[0].Description).To(Equal("healthy"))

	var all []map[string]any
	g.Expect(gt.API(ctx, http.MethodGet, "/repos/"+gt.User+"/statuses/commits/"+good+"/statuses", nil, &all)).To(Succeed())
	g.Expect(all).To(HaveLen(2), "pending, then success")

	g.Expect(gt.API(ctx, http.MethodGet, "/repos/"+gt.User+"/statuses/commits/"+bad+"/status", nil, &combined)).To(Succeed())
	g.Expect(combined.State).To(Equal("failure"))
	g.Expect(combined.Statuses[0].TargetURL).To(Equal(revert))
	g.Expect(combined.Statuses[0].Description).To(HaveLen(maxDescription))
	g.Expect(combined.Statuses[0].Description).To(HavePrefix("revision main@sha1:" + bad + " failed"))
	g.Expect(revert).To(Equal(gt.URL + "/" + gt.User + "/statuses/commit/" + strings.Repeat("ab", 20)))

	// A commit the repository does not have is refused, and said so.
	err = c.SetCommitStatus(ctx, strings.Repeat("0", 40), CommitStatus{State: StatePending, Context: name})
	g.Expect(err).To(HaveOccurred())
}

// TestCommitStatusAgainstRecordedAnswers posts statuses to GitHub and GitLab servers that
// answer as their documentation shows, and checks what each client sends.
func TestCommitStatusAgainstRecordedAnswers(t *testing.T) {
	const sha = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
	status := CommitStatus{State: StateFailure, Context: "immutable-release/shop/web", Description: "revision failed\nits health check",
		TargetURL: "https://github.com/acme/shop/commit/aaaa"}

	t.Run("github", func(t *testing.T) {
		g := NewWithT(t)
		var got map[string]any
		f := &forge{t: t, token: "ghp_secret", header: "Authorization", prefix: "Bearer "}
		f.routes = map[string]func(http.ResponseWriter, *http.Request, map[string]any){
			"POST /api/v3/repos/acme/shop/statuses/" + sha: func(w http.ResponseWriter, _ *http.Request, body map[string]any) {
				got = body
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, fixture(t, "github-status.json"))
			},
		}
		srv := httptest.NewServer(f)
		defer srv.Close()
		c, err := New(Options{Provider: GitHub, RepoURL: "https://github.example.com/acme/shop.git", APIURL: srv.URL + "/api/v3", Token: "ghp_secret"})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(c.SetCommitStatus(context.Background(), sha, status)).To(Succeed())
		g.Expect(got).To(Equal(map[string]any{"state": "failure", "context": "immutable-release/shop/web",
			"description": "revision failed its health check", "target_url": "https://github.com/acme/shop/commit/aaaa"}))

		// A token without the statuses permission is reported as GitHub says it.
		f.routes["POST /api/v3/repos/acme/shop/statuses/"+sha] = func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"message":"Resource not accessible by personal access token","documentation_url":"https://docs.github.com/rest/commits/statuses#create-a-commit-status","status":"403"}`)
		}
		g.Expect(c.SetCommitStatus(context.Background(), sha, status)).To(MatchError(And(
			ContainSubstring("the token lacks a permission"), ContainSubstring("Resource not accessible by personal access token"))))
	})

	t.Run("gitlab", func(t *testing.T) {
		g := NewWithT(t)
		const path = "/api/v4/projects/platform%2Fapps%2Fshop/statuses/" + sha
		var posted []map[string]any
		f := &forge{t: t, token: "glpat-secret", header: "PRIVATE-TOKEN"}
		f.routes = map[string]func(http.ResponseWriter, *http.Request, map[string]any){
			"POST " + path: func(w http.ResponseWriter, _ *http.Request, body map[string]any) {
				posted = append(posted, body)
				if len(posted) > 1 && posted[len(posted)-2]["state"] == body["state"] {
					// GitLab refuses to post a state twice.
					w.WriteHeader(http.StatusBadRequest)
					io.WriteString(w, `{"message":"Cannot transition status via :drop from :failed (Reasons: ...)"}`)
					return
				}
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, fixture(t, "gitlab-status.json"))
			},
		}
		srv := httptest.NewServer(f)
		defer srv.Close()
		c, err := New(Options{Provider: GitLab, RepoURL: "https://gitlab.example.com/platform/apps/shop.git", APIURL: srv.URL + "/api/v4", Token: "glpat-secret"})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(c.SetCommitStatus(context.Background(), sha, status)).To(Succeed())
		g.Expect(posted[0]).To(Equal(map[string]any{"state": "failed", "name": "immutable-release/shop/web",
			"description": "revision failed its health check", "target_url": "https://github.com/acme/shop/commit/aaaa"}))
		// Posted again after its record was lost: the same state, which is no failure.
		g.Expect(c.SetCommitStatus(context.Background(), sha, status)).To(Succeed())
		g.Expect(posted).To(HaveLen(2))
		// Any other refusal is one.
		f.routes["POST "+path] = func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"404 Commit Not Found"}`)
		}
		g.Expect(c.SetCommitStatus(context.Background(), sha, status)).To(MatchError(ContainSubstring("404 Commit Not Found")))
	})
}

func TestCommitURL(t *testing.T) {
	const sha = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
	cases := []struct{ provider, repoURL, want string }{
		{GitHub, "https://github.com/acme/shop.git", "https://github.com/acme/shop/commit/" + sha},
		{GitHub, "ssh://git@ghe.example.com:2222/acme/shop.git", "https://ghe.example.com/acme/shop/commit/" + sha},
		{GitLab, "https://gitlab.com/platform/apps/shop.git", "https://gitlab.com/platform/apps/shop/-/commit/" + sha},
		{Gitea, "http://127.0.0.1:3000/imr-admin/shop.git", "http://127.0.0.1:3000/imr-admin/shop/commit/" + sha},
		{Gitea, "https://user:secret@example.com/acme/shop.git", "https://example.com/acme/shop/commit/" + sha},
		{Gitea, "file:///srv/git/shop.git", ""},
	}
	for _, tc := range cases {
		NewWithT(t).Expect(CommitURL(tc.provider, tc.repoURL, sha)).To(Equal(tc.want), tc.repoURL)
	}
}

// A description is cut to the forges' limit in characters, never inside one: a custom
// resource's status message (a tenant's text) may be in any script.
func TestCommitStatusDescriptionCut(t *testing.T) {
	g := NewWithT(t)
	for _, in := range []string{strings.Repeat("a", 200), strings.Repeat("é", 200), "ok\n  two\tlines", strings.Repeat("数", 139) + "x"} {
		d := CommitStatus{Description: in}.description()
		g.Expect(utf8.ValidString(d)).To(BeTrue(), "%q", d)
		g.Expect(utf8.RuneCountInString(d)).To(BeNumerically("<=", maxDescription))
		g.Expect(strings.ContainsAny(d, "\n\t")).To(BeFalse(), "%q", d)
	}
	g.Expect(CommitStatus{Description: strings.Repeat("é", 200)}.description()).To(Equal(strings.Repeat("é", maxDescription-3) + "..."))
}
