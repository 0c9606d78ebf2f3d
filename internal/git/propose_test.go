package git

import (
	"context"
	"strings"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/testgit"
)

func remoteBranches(t *testing.T, repo *testgit.Repo) map[string]string {
	t.Helper()
	out, err := repo.Output("ls-remote", "--heads", "origin")
	must(t, err)
	heads := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			heads[strings.TrimPrefix(f[1], "refs/heads/")] = f[0]
		}
	}
	return heads
}

// TestProposeRevert: the revert commit goes to a branch of its own and the base branch is
// left alone; asked again, the branch is found and nothing is pushed; a branch of the same
// name that holds something else is not touched and the next name is used.
func TestProposeRevert(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, repo, _ := newRepo(t)
	healthy := write(t, repo, "Healthy", map[string]string{"deploy/prod/app.yaml": "image: good\n", "other/x.yaml": "x: 1\n"})
	failed := write(t, repo, "Bad image", map[string]string{"deploy/prod/app.yaml": "image: bad\n", "other/x.yaml": "x: 2\n"})
	auth, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
	g.Expect(err).NotTo(HaveOccurred())
	req := RevertRequest{URL: repo.URL(), Branch: "main", Auth: auth, Path: "deploy/prod", Healthy: healthy, Failed: failed,
		Release: "shop/web", Reason: "Deployment/shop/web did not become healthy", AuthorName: "ImmutableRelease", AuthorEmail: "bot@example.com"}

	// Another release failed on the same commit first: its branch takes the short name.
	must(t, repo.Git("checkout", "-q", "-b", "immutable-release/revert-"+failed[:7]))
	write(t, repo, "Revert \"Bad image\"\n\nRelease: staging/web\nFailed-Revision: "+failed, map[string]string{"deploy/staging/app.yaml": "x\n"})
	must(t, repo.Git("checkout", "-q", "main"))
	taken := remoteBranches(t, repo)["immutable-release/revert-"+failed[:7]]

	res, err := NewCache(t.TempDir()).ProposeRevert(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Existing).To(BeFalse())
	g.Expect(res.Branch).To(Equal("immutable-release/revert-" + failed[:7] + "-shop-web"))
	g.Expect(res.Reverted).To(HaveLen(1))
	g.Expect(res.Message).To(HavePrefix("Revert \"Bad image\"\n\nThis reverts commit " + failed + ".\n"))
	g.Expect(res.Message).To(ContainSubstring("Release: shop/web\nFailed-Revision: " + failed + "\n"))
	heads := remoteBranches(t, repo)
	g.Expect(heads).To(HaveKeyWithValue("main", failed), "the base branch is left alone")
	g.Expect(heads).To(HaveKeyWithValue("immutable-release/revert-"+failed[:7], taken), "another release's branch is left alone")
	g.Expect(heads).To(HaveKeyWithValue(res.Branch, res.Commit))

	// The branch is one commit on the base: the path goes back, the rest stays.
	must(t, repo.Git("fetch", "-q", "origin"))
	parent, err := repo.Output("rev-parse", res.Commit+"^")
	must(t, err)
	g.Expect(strings.TrimSpace(parent)).To(Equal(failed))
	g.Expect(tree(t, repo.Dir, res.Commit, "deploy/prod")).To(Equal(tree(t, repo.Dir, healthy, "deploy/prod")))
	g.Expect(tree(t, repo.Dir, res.Commit, "other")).To(Equal(tree(t, repo.Dir, failed, "other")))

	// Again, as after a crash: found, nothing pushed.
	again, err := NewCache(t.TempDir()).ProposeRevert(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(again.Existing).To(BeTrue())
	g.Expect(again.Branch).To(Equal(res.Branch))
	g.Expect(again.Commit).To(Equal(res.Commit))
	g.Expect(again.Message).To(Equal(res.Message))
	g.Expect(again.Reverted).To(Equal([]Commit{{Hash: failed}}))
	g.Expect(remoteBranches(t, repo)).To(HaveLen(3))

	// Both names held by something else: nothing is pushed, and the message says what to do.
	other := req
	other.Release = "other/web"
	must(t, repo.Git("push", "-q", "origin", taken+":refs/heads/immutable-release/revert-"+failed[:7]+"-other-web"))
	_, err = NewCache(t.TempDir()).ProposeRevert(ctx, other)
	g.Expect(err).To(MatchError(ContainSubstring("already exist and do not hold a revert of " + failed[:7] + " for other/web: delete them")))
}

// TestOutcome: what became of a proposed revert once the branch moved.
func TestOutcome(t *testing.T) {
	cases := map[string]struct {
		// move moves main on from the failed revision; revert is the proposed commit.
		move       func(t *testing.T, repo *testgit.Repo, revert string) (merged string)
		pathChange bool
	}{
		"merged with a merge commit": {move: func(t *testing.T, repo *testgit.Repo, revert string) string {
			must(t, repo.Git("merge", "-q", "--no-ff", "-m", "Merge pull request 1", revert))
			must(t, repo.Git("push", "-q", "origin", "main"))
			return revert
		}},
		"rebased onto a newer head": {move: func(t *testing.T, repo *testgit.Repo, revert string) string {
			write(t, repo, "Docs", map[string]string{"README.md": "docs\n"})
			must(t, repo.Git("cherry-pick", revert))
			must(t, repo.Git("push", "-q", "origin", "main"))
			h, err := repo.Head()
			must(t, err)
			return h
		}},
		"fixed forward": {pathChange: true, move: func(t *testing.T, repo *testgit.Repo, _ string) string {
			write(t, repo, "Fix forward", map[string]string{"deploy/prod/app.yaml": "image: fixed\n"})
			return ""
		}},
		"a commit elsewhere": {move: func(t *testing.T, repo *testgit.Repo, _ string) string {
			write(t, repo, "Docs", map[string]string{"README.md": "docs\n"})
			return ""
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			srv, repo, _ := newRepo(t)
			healthy := write(t, repo, "Healthy", map[string]string{"deploy/prod/app.yaml": "image: good\n"})
			failed := write(t, repo, "Bad image", map[string]string{"deploy/prod/app.yaml": "image: bad\n"})
			auth, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
			g.Expect(err).NotTo(HaveOccurred())
			cache := NewCache(t.TempDir())
			res, err := cache.ProposeRevert(ctx, RevertRequest{URL: repo.URL(), Branch: "main", Auth: auth, Path: "deploy/prod",
				Healthy: healthy, Failed: failed, Release: "shop/web", Reason: "r", AuthorName: "a", AuthorEmail: "a@a"})
			g.Expect(err).NotTo(HaveOccurred())
			must(t, repo.Git("fetch", "-q", "origin"))

			merged := tc.move(t, repo, res.Commit)
			head, err := repo.Head()
			g.Expect(err).NotTo(HaveOccurred())
			ref := Reference{Branch: "main"}
			_, _, release, err := cache.Checkout(ctx, repo.URL(), ref, head, auth)
			g.Expect(err).NotTo(HaveOccurred())
			release()

			out, err := cache.Outcome(repo.URL(), auth, head, failed, res.Commit, "shop/web", "deploy/prod")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(out).To(Equal(ProposalOutcome{Merged: merged, PathChanged: tc.pathChange}))
		})
	}
}
