package git

import (
	"context"
	"errors"

	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/testgit"
)

// history builds commits after a healthy one and returns the hashes to revert (newest first,
// as git revert takes them) and which of them are merges.
type history func(t *testing.T, r *testgit.Repo) (reverted []string, merges map[string]bool)

func write(t *testing.T, r *testgit.Repo, msg string, files map[string]string) string {
	t.Helper()
	if err := r.Write(files); err != nil {
		t.Fatal(err)
	}
	h, err := r.CommitAndPush(msg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestRevertMatchesGit compares our revert with `git revert --no-edit` restricted to the
// path: the path's files must be the same, everything outside the path must stay as the
// branch had it, and git fsck must pass after the push.
func TestRevertMatchesGit(t *testing.T) {
	cases := map[string]history{
		"one bad commit": func(t *testing.T, r *testgit.Repo) ([]string, map[string]bool) {
			return []string{write(t, r, "Bad image", map[string]string{"deploy/prod/app.yaml": "image: bad\n"})}, nil
		},
		"several commits": func(t *testing.T, r *testgit.Repo) ([]string, map[string]bool) {
			a := write(t, r, "Add a config", map[string]string{"deploy/prod/cm.yaml": "a: 1\n"})
			b := write(t, r, "Bad image", map[string]string{"deploy/prod/app.yaml": "image: bad\n"})
			return []string{b, a}, nil
		},
		"a commit that also changed another path": func(t *testing.T, r *testgit.Repo) ([]string, map[string]bool) {
			return []string{write(t, r, "Bad image and staging", map[string]string{
				"deploy/prod/app.yaml": "image: bad\n", "deploy/staging/app.yaml": "image: new\n"})}, nil
		},
		"a merge commit": func(t *testing.T, r *testgit.Repo) ([]string, map[string]bool) {
			must(t, r.Git("checkout", "-q", "-b", "feature"))
			write(t, r, "Feature image", map[string]string{"deploy/prod/app.yaml": "image: feature\n"})
			must(t, r.Git("checkout", "-q", "main"))
			write(t, r, "Docs", map[string]string{"README.md": "docs\n"})
			must(t, r.Git("merge", "-q", "--no-ff", "-m", "Merge feature", "feature"))
			must(t, r.Git("push", "-q", "origin", "main"))
			m, err := r.Head()
			must(t, err)
			return []string{m}, map[string]bool{m: true}
		},
	}
	for name, build := range cases {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			srv, repo, _ := newRepo(t)
			healthy := write(t, repo, "Healthy", map[string]string{
				"deploy/prod/app.yaml": "image: good\n", "deploy/staging/app.yaml": "image: old\n", "other/x.yaml": "x: 1\n"})
			reverted, merges := build(t, repo)
			failed, err := repo.Head()
			g.Expect(err).NotTo(HaveOccurred())

			auth, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
			g.Expect(err).NotTo(HaveOccurred())
			req := RevertRequest{URL: repo.URL(), Branch: "main", Auth: auth, Path: "./deploy/prod", Healthy: healthy, Failed: failed,
				Release: "shop/web", Reason: "Deployment/shop/web did not become healthy", AuthorName: "ImmutableRelease", AuthorEmail: "bot@example.com"}
			res, err := NewCache(t.TempDir()).Revert(context.Background(), req)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res.Existing).To(BeFalse())
			var got []string
			for _, c := range res.Reverted {
				got = append(got, c.Hash)
			}
			g.Expect(got).To(Equal(reverted))

			// Our commit, read back with the git CLI.
			must(t, repo.Git("pull", "-q", "--ff-only", "origin", "main"))
			ours, err := repo.Head()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(ours).To(Equal(res.Commit))
			msg, err := repo.Output("log", "-1", "--format=%B")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(msg).To(ContainSubstring("This reverts commit " + reverted[0] + "."))
			g.Expect(msg).To(ContainSubstring("Release: shop/web\nFailed-Revision: " + failed + "\nReason: Deployment/shop/web did not become healthy"))
			author, err := repo.Output("log", "-1", "--format=%an <%ae>")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(strings.TrimSpace(author)).To(Equal("ImmutableRelease <bot@example.com>"))

			// The oracle: git revert of the same commits, in a clone at the failed revision.
			oracle := filepath.Join(t.TempDir(), "oracle")
			must(t, run("git", "clone", "-q", repo.URL()[:len("http://")]+srv.Username+":"+srv.Password+"@"+repo.URL()[len("http://"):], oracle))
			must(t, run("git", "-C", oracle, "checkout", "-q", failed))
			for _, h := range reverted {
				args := []string{"-C", oracle, "-c", "user.name=o", "-c", "user.email=o@o", "revert", "--no-edit"}
				if merges[h] {
					args = append(args, "-m", "1")
				}
				must(t, run("git", append(args, h)...))
			}
			g.Expect(tree(t, repo.Dir, "HEAD", "deploy/prod")).To(Equal(tree(t, oracle, "HEAD", "deploy/prod")))
			// Outside the path, nothing changed.
			diff, err := repo.Output("diff", "--stat", failed, ours, "--", ".", ":(exclude)deploy/prod")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(diff).To(BeEmpty())
			must(t, run("git", "-C", filepath.Join(srv.Root(), repo.Name), "fsck", "--strict"))

			// Idempotent: the same request finds the revert and pushes nothing.
			again, err := NewCache(t.TempDir()).Revert(context.Background(), req)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(again.Existing).To(BeTrue())
			g.Expect(again.Commit).To(Equal(ours))
		})
	}
}

// TestRevertRefusesWhenFixedForward: a commit after the failed revision that changed the
// path means someone fixed forward; no revert is pushed.
func TestRevertRefusesWhenFixedForward(t *testing.T) {
	g := NewWithT(t)
	srv, repo, _ := newRepo(t)
	healthy := write(t, repo, "Healthy", map[string]string{"deploy/prod/app.yaml": "image: good\n"})
	failed := write(t, repo, "Bad", map[string]string{"deploy/prod/app.yaml": "image: bad\n"})
	fix := write(t, repo, "Fix forward", map[string]string{"deploy/prod/app.yaml": "image: fixed\n"})
	auth, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
	g.Expect(err).NotTo(HaveOccurred())
	_, err = NewCache(t.TempDir()).Revert(context.Background(), RevertRequest{URL: repo.URL(), Branch: "main", Auth: auth,
		Path: "deploy/prod", Healthy: healthy, Failed: failed, Release: "shop/web", AuthorName: "a", AuthorEmail: "a@a"})
	g.Expect(errors.Is(err, ErrFixedForward)).To(BeTrue(), "%v", err)
	head, err := repo.Output("ls-remote", "origin", "refs/heads/main")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(head).To(HavePrefix(fix))
}

func tree(t *testing.T, dir, rev, path string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", dir, "ls-tree", "-r", rev, "--", path).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return string(out)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return errors.New(string(out))
	}
	return nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
