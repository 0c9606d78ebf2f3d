package gitprovider

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	. "github.com/onsi/gomega"
)

// GitHub and GitLab cannot run here: their clients are tested against answers shaped like
// the ones their API documentation shows (testdata/), served by a forge that keeps the
// pull requests it was asked to open, and checks what the client sends.

// forge is a recorded forge: the answers are the documented ones, the state is real
// enough to test idempotence.
type forge struct {
	t      *testing.T
	token  string
	header string // the header that carries the token, and its prefix
	prefix string
	// routes answer by "METHOD escaped-path".
	routes map[string]func(w http.ResponseWriter, r *http.Request, body map[string]any)

	mu       sync.Mutex
	requests []string
	created  int
}

func (f *forge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := r.Method + " " + r.URL.EscapedPath()
	f.requests = append(f.requests, key+"?"+r.URL.RawQuery)
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get(f.header) != f.prefix+f.token {
		w.WriteHeader(http.StatusUnauthorized)
		if f.header == "PRIVATE-TOKEN" {
			io.WriteString(w, `{"message":"401 Unauthorized"}`)
		} else {
			io.WriteString(w, `{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest","status":"401"}`)
		}
		return
	}
	var body map[string]any
	if r.Body != nil {
		data, _ := io.ReadAll(r.Body)
		if len(data) > 0 {
			if err := json.Unmarshal(data, &body); err != nil {
				f.t.Errorf("%s: the body is not JSON: %s", key, data)
			}
			if r.Header.Get("Content-Type") != "application/json" {
				f.t.Errorf("%s: Content-Type %q", key, r.Header.Get("Content-Type"))
			}
		}
	}
	route, ok := f.routes[key]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"Not Found"}`)
		return
	}
	route(w, r, body)
}

func fixture(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

const revertBranch = "immutable-release/revert-6dcb09b"

func TestGitHubAgainstRecordedAnswers(t *testing.T) {
	g := NewWithT(t)
	hg := NewGomega(func(msg string, _ ...int) { t.Error(msg) })
	pull := fixture(t, "github-pull.json")
	open := false
	// alreadyOpened makes the forge hold a pull request that its list does not show yet, as
	// when another run opened it a moment ago.
	alreadyOpened := false
	f := &forge{t: t, token: "ghp_secret", header: "Authorization", prefix: "Bearer "}
	f.routes = map[string]func(http.ResponseWriter, *http.Request, map[string]any){
		"GET /api/v3/repos/acme/shop": func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
			hg.Expect(r.Header.Get("Accept")).To(Equal("application/vnd.github+json"))
			hg.Expect(r.Header.Get("X-GitHub-Api-Version")).To(Equal("2022-11-28"))
			io.WriteString(w, `{"id":1296269,"name":"shop","full_name":"acme/shop","private":true,"default_branch":"main"}`)
		},
		"GET /api/v3/repos/acme/shop/pulls": func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
			q := r.URL.Query()
			hg.Expect(q.Get("state")).To(Equal("open"))
			hg.Expect(q.Get("head")).To(Equal("acme:" + revertBranch))
			hg.Expect(q.Get("base")).To(Equal("main"))
			if open && !alreadyOpened {
				io.WriteString(w, "["+pull+"]")
				return
			}
			alreadyOpened = false
			io.WriteString(w, "[]")
		},
		"POST /api/v3/repos/acme/shop/pulls": func(w http.ResponseWriter, _ *http.Request, body map[string]any) {
			if open {
				w.WriteHeader(http.StatusUnprocessableEntity)
				io.WriteString(w, `{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom","message":"A pull request already exists for acme:`+revertBranch+`."}],"documentation_url":"https://docs.github.com/rest/pulls/pulls#create-a-pull-request","status":"422"}`)
				return
			}
			hg.Expect(body).To(HaveKeyWithValue("head", revertBranch))
			hg.Expect(body).To(HaveKeyWithValue("base", "main"))
			hg.Expect(body).To(HaveKeyWithValue("title", `Revert "Release a broken build"`))
			hg.Expect(body).To(HaveKeyWithValue("body", ContainSubstring("Failed-Revision: 6dcb09b5b57875f334f61aebed695e2e4193db5e")))
			open = true
			f.created++
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, pull)
		},
	}
	srv := httptest.NewServer(f)
	defer srv.Close()
	ctx := context.Background()
	c, err := New(Options{Provider: GitHub, RepoURL: "https://github.example.com/acme/shop.git", APIURL: srv.URL + "/api/v3", Token: "ghp_secret"})
	g.Expect(err).NotTo(HaveOccurred())
	want := NewPullRequest{Head: revertBranch, Base: "main", Title: `Revert "Release a broken build"`,
		Body: "This reverts commit 6dcb09b5b57875f334f61aebed695e2e4193db5e.\n\nFailed-Revision: 6dcb09b5b57875f334f61aebed695e2e4193db5e\n"}

	g.Expect(c.CheckAccess(ctx)).To(Succeed())
	pr, existing, err := Open(ctx, c, want)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(existing).To(BeFalse())
	g.Expect(*pr).To(Equal(PullRequest{Number: 1347, URL: "https://github.com/acme/shop/pull/1347", Head: revertBranch, Base: "main"}))

	// Again: found, not opened twice.
	again, existing, err := Open(ctx, c, want)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(existing).To(BeTrue())
	g.Expect(again.URL).To(Equal(pr.URL))

	// Opened by another run since the list was read: GitHub refuses a second, and it is found.
	alreadyOpened = true
	raced, existing, err := Open(ctx, c, want)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(existing).To(BeTrue())
	g.Expect(raced.URL).To(Equal(pr.URL))
	g.Expect(f.created).To(Equal(1))

	// A refused token says so.
	bad, err := New(Options{Provider: GitHub, RepoURL: "https://github.example.com/acme/shop.git", APIURL: srv.URL + "/api/v3", Token: "expired"})
	g.Expect(err).NotTo(HaveOccurred())
	err = bad.CheckAccess(ctx)
	g.Expect(err).To(MatchError(And(ContainSubstring("401 Unauthorized"), ContainSubstring("the token was refused"), ContainSubstring("Bad credentials"))))
	var apiErr *APIError
	g.Expect(err).To(BeAssignableToTypeOf(apiErr))
}

func TestGitLabAgainstRecordedAnswers(t *testing.T) {
	g := NewWithT(t)
	hg := NewGomega(func(msg string, _ ...int) { t.Error(msg) })
	mr := fixture(t, "gitlab-merge-request.json")
	open, alreadyOpened := false, false
	// Nested groups: the project is addressed by its URL-encoded path.
	const project = "/api/v4/projects/platform%2Fapps%2Fshop"
	f := &forge{t: t, token: "glpat-secret", header: "PRIVATE-TOKEN"}
	f.routes = map[string]func(http.ResponseWriter, *http.Request, map[string]any){
		"GET " + project: func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
			io.WriteString(w, `{"id":3,"path_with_namespace":"platform/apps/shop","default_branch":"main","visibility":"private"}`)
		},
		"GET " + project + "/merge_requests": func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
			q := r.URL.Query()
			hg.Expect(q.Get("state")).To(Equal("opened"))
			hg.Expect(q.Get("source_branch")).To(Equal(revertBranch))
			hg.Expect(q.Get("target_branch")).To(Equal("main"))
			if open && !alreadyOpened {
				io.WriteString(w, "["+mr+"]")
				return
			}
			alreadyOpened = false
			io.WriteString(w, "[]")
		},
		"POST " + project + "/merge_requests": func(w http.ResponseWriter, _ *http.Request, body map[string]any) {
			if open {
				w.WriteHeader(http.StatusConflict)
				io.WriteString(w, `{"message":["Another open merge request already exists for this source branch: !12"]}`)
				return
			}
			hg.Expect(body).To(HaveKeyWithValue("source_branch", revertBranch))
			hg.Expect(body).To(HaveKeyWithValue("target_branch", "main"))
			hg.Expect(body).To(HaveKeyWithValue("description", ContainSubstring("This reverts commit")))
			hg.Expect(body).To(HaveKeyWithValue("remove_source_branch", true))
			open = true
			f.created++
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, mr)
		},
	}
	srv := httptest.NewServer(f)
	defer srv.Close()
	ctx := context.Background()
	repoURL := "https://gitlab.example.com/platform/apps/shop.git"
	c, err := New(Options{Provider: GitLab, RepoURL: repoURL, APIURL: srv.URL + "/api/v4", Token: "glpat-secret"})
	g.Expect(err).NotTo(HaveOccurred())
	want := NewPullRequest{Head: revertBranch, Base: "main", Title: `Revert "Release a broken build"`, Body: "This reverts commit 6dcb09b.\n"}

	g.Expect(c.CheckAccess(ctx)).To(Succeed())
	pr, existing, err := Open(ctx, c, want)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(existing).To(BeFalse())
	g.Expect(*pr).To(Equal(PullRequest{Number: 12, URL: "https://gitlab.example.com/platform/apps/shop/-/merge_requests/12", Head: revertBranch, Base: "main"}))
	again, existing, err := Open(ctx, c, want)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(existing).To(BeTrue())
	g.Expect(again.URL).To(Equal(pr.URL))
	alreadyOpened = true
	raced, existing, err := Open(ctx, c, want)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(existing).To(BeTrue())
	g.Expect(raced.Number).To(Equal(12))
	g.Expect(f.created).To(Equal(1))

	bad, err := New(Options{Provider: GitLab, RepoURL: repoURL, APIURL: srv.URL + "/api/v4", Token: "revoked"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(bad.CheckAccess(ctx)).To(MatchError(And(ContainSubstring("gitlab API answered 401"), ContainSubstring("401 Unauthorized"))))

	// A conflict other than "already open" is reported with GitLab's list of messages.
	open, alreadyOpened = true, true
	f.routes["GET "+project+"/merge_requests"] = func(w http.ResponseWriter, _ *http.Request, _ map[string]any) { io.WriteString(w, "[]") }
	_, _, err = Open(ctx, c, want)
	g.Expect(err).To(MatchError(ContainSubstring(`Another open merge request already exists for this source branch: !12`)))
	g.Expect(strings.Join(f.requests, "\n")).To(ContainSubstring("POST " + project + "/merge_requests"))
}
