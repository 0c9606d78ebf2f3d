package gitprovider

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/testgit"
	"github.com/immutable-release/operator/internal/testgitea"
)

// startGitea runs a real Gitea for one test. It skips under -short when Gitea is not built
// and fails otherwise: a test that silently skips proves nothing.
func startGitea(t *testing.T) *testgitea.Server {
	t.Helper()
	gt, err := testgitea.Start(t.Context(), testgitea.Options{})
	if errors.Is(err, testgitea.ErrMissingBinary) && testing.Short() {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("starting Gitea: %v", err)
	}
	t.Cleanup(gt.Stop)
	return gt
}

// TestGiteaAgainstARealGitea opens a pull request on a real Gitea, finds it again instead of
// opening a second, and reports a refused token.
func TestGiteaAgainstARealGitea(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	gt := startGitea(t)
	repoURL, err := gt.CreateRepo(ctx, "shop")
	g.Expect(err).NotTo(HaveOccurred())
	clone, err := testgit.NewClone(filepath.Join(t.TempDir(), "shop"), repoURL, gt.PushURL("shop"), "main")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(clone.Write(map[string]string{"app/deployment.yaml": "image: bad\n"})).To(Succeed())
	_, err = clone.CommitAndPush("Release a broken build")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(clone.Git("checkout", "-q", "-b", revertBranch)).To(Succeed())
	g.Expect(clone.Write(map[string]string{"app/deployment.yaml": "image: good\n"})).To(Succeed())
	_, err = clone.CommitAndPush(`Revert "Release a broken build"`)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(gt.WaitForBranch(ctx, "shop", "main")).To(Succeed())
	g.Expect(gt.WaitForBranch(ctx, "shop", revertBranch)).To(Succeed())

	c, err := New(Options{Provider: Gitea, RepoURL: repoURL, Token: gt.Token})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c.CheckAccess(ctx)).To(Succeed())
	none, err := c.FindOpen(ctx, revertBranch, "main")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(none).To(BeNil())

	want := NewPullRequest{Head: revertBranch, Base: "main", Title: `Revert "Release a broken build"`, Body: "Failed-Revision: 6dcb09b\n"}
	pr, existing, err := Open(ctx, c, want)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(existing).To(BeFalse())
	g.Expect(*pr).To(Equal(PullRequest{Number: 1, URL: gt.URL + "/" + gt.User + "/shop/pulls/1", Head: revertBranch, Base: "main"}))

	again, existing, err := Open(ctx, c, want)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(existing).To(BeTrue())
	g.Expect(*again).To(Equal(*pr))

	// Gitea itself refuses a second pull request for the same branches; Open finds the first.
	_, err = c.Create(ctx, want)
	var apiErr *APIError
	g.Expect(errors.As(err, &apiErr)).To(BeTrue(), "%v", err)
	g.Expect(apiErr.StatusCode).To(Equal(http.StatusConflict))

	var all []map[string]any
	g.Expect(gt.API(ctx, http.MethodGet, "/repos/"+gt.User+"/shop/pulls?state=all", nil, &all)).To(Succeed())
	g.Expect(all).To(HaveLen(1))
	g.Expect(all[0]).To(HaveKeyWithValue("title", want.Title))
	g.Expect(all[0]).To(HaveKeyWithValue("body", want.Body))

	// Into another base there is none.
	other, err := c.FindOpen(ctx, revertBranch, "release")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(other).To(BeNil())

	bad, err := New(Options{Provider: Gitea, RepoURL: repoURL, Token: "0123456789abcdef0123456789abcdef01234567"})
	g.Expect(err).NotTo(HaveOccurred())
	err = bad.CheckAccess(ctx)
	g.Expect(errors.As(err, &apiErr)).To(BeTrue(), "%v", err)
	g.Expect(apiErr.Unauthorized()).To(BeTrue(), "%v", err)
	g.Expect(err).To(MatchError(ContainSubstring("the token was refused")))

	missing, err := New(Options{Provider: Gitea, RepoURL: gt.URL + "/" + gt.User + "/nothing.git", Token: gt.Token})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(missing.CheckAccess(ctx)).To(MatchError(ContainSubstring("404 Not Found (no such repository, or the token cannot see it)")))
}
