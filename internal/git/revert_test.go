package git

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/testgit"
)

// scenario is what a history builds after the healthy commit: the commits to revert (newest
// first, as git revert takes them), which are merges, and the failed revision when later
// commits follow it ("" when the failed revision is the head).
type scenario struct {
	reverted []string
	merges   map[string]bool
	failed   string
}

type history func(t *testing.T, r *testgit.Repo) scenario

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

func remove(t *testing.T, r *testgit.Repo, msg string, paths ...string) string {
	t.Helper()
	must(t, r.Remove(paths...))
	h, err := r.CommitAndPush(msg)
	must(t, err)
	return h
}

// healthyFiles is the healthy revision of every history: a Deployment-like file with room
// for changes far apart, another environment and another team's folder.
var healthyFiles = map[string]string{
	"deploy/prod/app.yaml":    "kind: Deployment\nname: web\nreplicas: 2\nport: 80\nenv: prod\nmemory: 1Gi\nimage: good\n",
	"deploy/prod/cm.yaml":     "a: 1\n",
	"deploy/staging/app.yaml": "image: old\n",
	"other/x.yaml":            "x: 1\n",
}

const badApp = "kind: Deployment\nname: web\nreplicas: 2\nport: 80\nenv: prod\nmemory: 1Gi\nimage: bad\n"

// TestRevertMatchesGit compares our revert with `git revert --no-edit` of the same commits
// on the same head, restricted to the path: the path's files must be the same, everything
// outside the path must stay as the branch had it, and git fsck must pass after the push.
func TestRevertMatchesGit(t *testing.T) {
	cases := map[string]history{
		"one bad commit": func(t *testing.T, r *testgit.Repo) scenario {
			return scenario{reverted: []string{write(t, r, "Bad image", map[string]string{"deploy/prod/app.yaml": badApp})}}
		},
		"several commits": func(t *testing.T, r *testgit.Repo) scenario {
			a := write(t, r, "Add a config", map[string]string{"deploy/prod/new.yaml": "n: 1\n"})
			write(t, r, "Docs", map[string]string{"README.md": "docs\n"})
			b := write(t, r, "Bad image", map[string]string{"deploy/prod/app.yaml": badApp})
			c := remove(t, r, "Drop the config map", "deploy/prod/cm.yaml")
			return scenario{reverted: []string{c, b, a}}
		},
		"a commit that also changed another path": func(t *testing.T, r *testgit.Repo) scenario {
			return scenario{reverted: []string{write(t, r, "Bad image and staging", map[string]string{
				"deploy/prod/app.yaml": badApp, "deploy/staging/app.yaml": "image: new\n"})}}
		},
		"a merge commit": func(t *testing.T, r *testgit.Repo) scenario {
			must(t, r.Git("checkout", "-q", "-b", "feature"))
			write(t, r, "Feature image", map[string]string{"deploy/prod/app.yaml": badApp})
			must(t, r.Git("checkout", "-q", "main"))
			write(t, r, "Docs", map[string]string{"README.md": "docs\n"})
			must(t, r.Git("merge", "-q", "--no-ff", "-m", "Merge feature", "feature"))
			must(t, r.Git("push", "-q", "origin", "main"))
			m, err := r.Head()
			must(t, err)
			return scenario{reverted: []string{m}, merges: map[string]bool{m: true}}
		},
		"a later commit to other lines of the same file": func(t *testing.T, r *testgit.Repo) scenario {
			bad := write(t, r, "Bad image", map[string]string{"deploy/prod/app.yaml": badApp})
			write(t, r, "More replicas", map[string]string{"deploy/prod/app.yaml": strings.Replace(badApp, "replicas: 2", "replicas: 5", 1)})
			return scenario{reverted: []string{bad}, failed: bad}
		},
		"a later commit to another file of the path": func(t *testing.T, r *testgit.Repo) scenario {
			bad := write(t, r, "Bad image", map[string]string{"deploy/prod/app.yaml": badApp})
			write(t, r, "Config", map[string]string{"deploy/prod/cm.yaml": "a: 2\n", "deploy/prod/more.yaml": "m: 1\n"})
			return scenario{reverted: []string{bad}, failed: bad}
		},
		"a later merge commit": func(t *testing.T, r *testgit.Repo) scenario {
			bad := write(t, r, "Bad image", map[string]string{"deploy/prod/app.yaml": badApp})
			must(t, r.Git("checkout", "-q", "-b", "feature"))
			write(t, r, "Port", map[string]string{"deploy/prod/app.yaml": strings.Replace(badApp, "port: 80", "port: 8080", 1)})
			must(t, r.Git("checkout", "-q", "main"))
			write(t, r, "Docs", map[string]string{"README.md": "docs\n"})
			must(t, r.Git("merge", "-q", "--no-ff", "-m", "Merge feature", "feature"))
			must(t, r.Git("push", "-q", "origin", "main"))
			return scenario{reverted: []string{bad}, failed: bad}
		},
	}
	for name, build := range cases {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			srv, repo, _ := newRepo(t)
			healthy := write(t, repo, "Healthy", healthyFiles)
			sc := build(t, repo)
			head, err := repo.Head()
			g.Expect(err).NotTo(HaveOccurred())
			failed := sc.failed
			if failed == "" {
				failed = head
			}

			req := revertRequest(t, srv, repo, healthy, failed)
			res, err := NewCache(t.TempDir()).Revert(context.Background(), req)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res.Existing).To(BeFalse())
			var got []string
			for _, c := range res.Reverted {
				got = append(got, c.Hash)
			}
			g.Expect(got).To(Equal(sc.reverted))

			// Our commit, read back with the git CLI.
			must(t, repo.Git("pull", "-q", "--ff-only", "origin", "main"))
			ours, err := repo.Head()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(ours).To(Equal(res.Commit))
			parent, err := repo.Output("rev-parse", "HEAD^")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(strings.TrimSpace(parent)).To(Equal(head))
			msg, err := repo.Output("log", "-1", "--format=%B")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(msg).To(ContainSubstring("This reverts commit " + sc.reverted[0] + "."))
			g.Expect(msg).To(ContainSubstring("Release: shop/web\nFailed-Revision: " + failed + "\nReason: Deployment/shop/web did not become healthy"))
			author, err := repo.Output("log", "-1", "--format=%an <%ae>|%cn <%ce>")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(strings.TrimSpace(author)).To(Equal("ImmutableRelease <bot@example.com>|ImmutableRelease <bot@example.com>"))

			// The oracle: git revert of the same commits on the same head.
			oracle := oracleRevert(t, srv, repo, head, sc.reverted, sc.merges)
			g.Expect(oracle).NotTo(HaveOccurred())
			g.Expect(tree(t, repo.Dir, "HEAD", "deploy/prod")).To(Equal(tree(t, oracleDir(t, repo), "HEAD", "deploy/prod")))
			// Outside the path, nothing changed.
			diff, err := repo.Output("diff", "--stat", head, ours, "--", ".", ":(exclude)deploy/prod")
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

// TestRevertConflicts: when a later commit changed what a reverted commit changed, at the
// same place, git revert stops with a conflict; so do we, naming the commits and files, and
// nothing is pushed.
func TestRevertConflicts(t *testing.T) {
	type conflict struct{ path, detail string }
	cases := map[string]struct {
		later func(t *testing.T, r *testgit.Repo) string
		want  []conflict
	}{
		"a later commit to the same lines": {
			later: func(t *testing.T, r *testgit.Repo) string {
				return write(t, r, "Fix forward", map[string]string{"deploy/prod/app.yaml": strings.Replace(badApp, "image: bad", "image: fixed", 1)})
			},
			want: []conflict{{"deploy/prod/app.yaml", "line 7 of the branch's version"}},
		},
		"a later commit to the adjacent line": {
			later: func(t *testing.T, r *testgit.Repo) string {
				return write(t, r, "Less memory", map[string]string{"deploy/prod/app.yaml": strings.Replace(badApp, "memory: 1Gi", "memory: 512Mi", 1)})
			},
			want: []conflict{{"deploy/prod/app.yaml", "lines 6-7 of the branch's version"}},
		},
		"a later commit that deleted the file": {
			later: func(t *testing.T, r *testgit.Repo) string {
				return remove(t, r, "Drop the app", "deploy/prod/app.yaml")
			},
			want: []conflict{{"deploy/prod/app.yaml", "deleted on the branch since; the revert would change it"}},
		},
		"a later commit that changed an added file": {
			later: func(t *testing.T, r *testgit.Repo) string {
				return write(t, r, "Tune", map[string]string{"deploy/prod/added.yaml": "b: 2\n"})
			},
			want: []conflict{{"deploy/prod/added.yaml", "changed on the branch since; the revert would delete it"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			srv, repo, _ := newRepo(t)
			healthy := write(t, repo, "Healthy", healthyFiles)
			bad := write(t, repo, "Bad image", map[string]string{"deploy/prod/app.yaml": badApp, "deploy/prod/added.yaml": "b: 1\n"})
			later := tc.later(t, repo)

			_, err := NewCache(t.TempDir()).Revert(context.Background(), revertRequest(t, srv, repo, healthy, bad))
			g.Expect(errors.Is(err, ErrRevertConflict)).To(BeTrue(), "%v", err)
			var ce *ConflictError
			g.Expect(errors.As(err, &ce)).To(BeTrue())
			g.Expect(ce.Head).To(Equal(later))
			g.Expect(ce.Commits()).To(Equal([]string{bad}))
			var got []conflict
			for _, f := range ce.Files {
				got = append(got, conflict{f.Path, f.Detail})
				g.Expect(f.Reverted.Hash).To(Equal(bad))
				g.Expect(f.ChangedBy).To(HaveLen(1))
				g.Expect(f.ChangedBy[0].Hash).To(Equal(later))
			}
			g.Expect(got).To(Equal(tc.want))
			g.Expect(err.Error()).To(ContainSubstring(`reverting ` + bad[:7] + ` ("Bad image") conflicts with ` + later[:7]))

			// git revert conflicts too.
			g.Expect(oracleRevert(t, srv, repo, later, []string{bad}, nil)).To(HaveOccurred())
			// Nothing was pushed.
			head, err := repo.Output("ls-remote", "origin", "refs/heads/main")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(head).To(HavePrefix(later))
		})
	}
}

// TestRevertRefusesWhenFixedForward: commits after the failed revision that already undid its
// changes under the path (fixed forward by hand) leave nothing to revert; nothing is pushed.
func TestRevertRefusesWhenFixedForward(t *testing.T) {
	g := NewWithT(t)
	srv, repo, _ := newRepo(t)
	healthy := write(t, repo, "Healthy", healthyFiles)
	failed := write(t, repo, "Bad", map[string]string{"deploy/prod/app.yaml": badApp})
	fix := write(t, repo, "Fix forward", map[string]string{"deploy/prod/app.yaml": healthyFiles["deploy/prod/app.yaml"]})
	_, err := NewCache(t.TempDir()).Revert(context.Background(), revertRequest(t, srv, repo, healthy, failed))
	g.Expect(errors.Is(err, ErrFixedForward)).To(BeTrue(), "%v", err)
	head, err := repo.Output("ls-remote", "origin", "refs/heads/main")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(head).To(HavePrefix(fix))
}

func revertRequest(t *testing.T, srv *testgit.Server, repo *testgit.Repo, healthy, failed string) RevertRequest {
	t.Helper()
	auth, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
	must(t, err)
	return RevertRequest{URL: repo.URL(), Branch: "main", Auth: auth, Path: "./deploy/prod", Healthy: healthy, Failed: failed,
		Release: "shop/web", Reason: "Deployment/shop/web did not become healthy", AuthorName: "ImmutableRelease", AuthorEmail: "bot@example.com"}
}

func oracleDir(t *testing.T, repo *testgit.Repo) string {
	return filepath.Join(repo.Dir+".oracle", "oracle")
}

// oracleRevert runs git revert --no-edit of the commits, in order, in a fresh clone at head.
func oracleRevert(t *testing.T, srv *testgit.Server, repo *testgit.Repo, head string, commits []string, merges map[string]bool) error {
	t.Helper()
	dir := oracleDir(t, repo)
	must(t, os.RemoveAll(filepath.Dir(dir)))
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(dir)) })
	must(t, run("git", "clone", "-q", repo.URL()[:len("http://")]+srv.Username+":"+srv.Password+"@"+repo.URL()[len("http://"):], dir))
	must(t, run("git", "-C", dir, "checkout", "-q", head))
	for _, h := range commits {
		args := []string{"-C", dir, "-c", "user.name=o", "-c", "user.email=o@o", "revert", "--no-edit"}
		if merges[h] {
			args = append(args, "-m", "1")
		}
		if err := run("git", append(args, h)...); err != nil {
			return err
		}
	}
	return nil
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

// TestRevertPushRace: someone pushes while the revert is being pushed. A commit elsewhere
// in the repository: the revert is built again on the new head and pushed. A commit under
// the path: someone fixed forward; the rollback is dropped and nothing is pushed. The race is
// real: the revert reaches the server through a proxy that lets the other push land first,
// once the revert is built and its push asks which heads the server has.
func TestRevertPushRace(t *testing.T) {
	for _, tc := range []struct {
		name      string
		racing    map[string]string
		wantFixed bool
	}{
		{"elsewhere", map[string]string{"deploy/staging/app.yaml": "kind: ConfigMap\n"}, false},
		{"under the path", map[string]string{"deploy/prod/extra.yaml": "kind: ConfigMap\n"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			srv, repo, _ := newRepo(t)
			healthy := write(t, repo, "Healthy", healthyFiles)
			failed := write(t, repo, "Bad", map[string]string{"deploy/prod/app.yaml": badApp})
			var racing string
			var raceErr error
			proxy := raceFirstPush(t, srv.HTTPAddress(), func() {
				if raceErr = repo.Write(tc.racing); raceErr == nil {
					racing, raceErr = repo.CommitAndPush("Racing push")
				}
			})
			req := revertRequest(t, srv, repo, healthy, failed)
			req.URL = proxy + "/" + repo.Name
			res, err := NewCache(t.TempDir()).Revert(context.Background(), req)
			g.Expect(raceErr).NotTo(HaveOccurred())
			g.Expect(racing).NotTo(BeEmpty(), "the racing push ran")
			head, herr := repo.Output("ls-remote", "origin", "refs/heads/main")
			g.Expect(herr).NotTo(HaveOccurred())
			if tc.wantFixed {
				g.Expect(errors.Is(err, ErrFixedForward)).To(BeTrue(), "%v", err)
				g.Expect(head).To(HavePrefix(racing), "nothing pushed over the fix")
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(head).To(HavePrefix(res.Commit))
			must(t, repo.Git("fetch", "--quiet", "origin"))
			parent, perr := repo.Output("rev-parse", res.Commit+"^")
			g.Expect(perr).NotTo(HaveOccurred())
			g.Expect(strings.TrimSpace(parent)).To(Equal(racing), "the revert is built on the racing commit")
		})
	}
}

// raceFirstPush serves a proxy to the Git server at target and returns its address. The
// first push through it starts by asking for the server's heads (GET
// info/refs?service=git-receive-pack); race runs before that request is passed on, so the
// push is answered with heads it did not build on, as when someone else pushed first.
func raceFirstPush(t *testing.T, target string, race func()) string {
	t.Helper()
	u, err := url.Parse(target)
	must(t, err)
	forward := httputil.NewSingleHostReverseProxy(u)
	var once sync.Once
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Query().Get("service") == "git-receive-pack" {
			once.Do(race)
		}
		forward.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	return proxy.URL
}

// TestRevertBuildsInTheSharedStore: the revert is built in the store of the URL and
// credentials, not in a clone in memory: the revert commit is there afterwards, and the
// store keeps no reference of its own.
func TestRevertBuildsInTheSharedStore(t *testing.T) {
	g := NewWithT(t)
	srv, repo, _ := newRepo(t)
	healthy := write(t, repo, "Healthy", healthyFiles)
	failed := write(t, repo, "Bad image", map[string]string{"deploy/prod/app.yaml": badApp})
	dir := t.TempDir()
	cache := NewCache(dir)
	req := revertRequest(t, srv, repo, healthy, failed)
	_, _, release, err := cache.Checkout(context.Background(), repo.URL(), Reference{Branch: "main"}, failed, req.Auth)
	g.Expect(err).NotTo(HaveOccurred())
	release()

	res, err := cache.Revert(context.Background(), req)
	g.Expect(err).NotTo(HaveOccurred())
	changed, err := cache.PathsChanged(repo.URL(), req.Auth, []PathChange{{From: failed, To: res.Commit, Path: "deploy/prod"}})
	g.Expect(err).NotTo(HaveOccurred(), "the revert commit is in the shared store")
	g.Expect(changed).To(Equal([]bool{true}))
	stores, err := filepath.Glob(filepath.Join(dir, "*", "objects.git"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(stores).To(HaveLen(1), "one store for the URL and credentials")
	refs, err := exec.Command("git", "-C", stores[0], "for-each-ref", "--format=%(refname)").Output()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(refs)).NotTo(ContainSubstring("refs/immutable-release/"))
	g.Expect(string(refs)).To(ContainSubstring("refs/remotes/origin/main"))
}

// TestRevertTellsARewrittenHistoryFromADamagedStore: a failed revision that is no longer in
// the branch's history (force-pushed away) is reported as such, but a commit the store cannot
// read (here a loose object deleted from the store, as a full disk or a crash can leave it) is
// a read error, not a rewritten history that would send a person looking at the branch.
func TestRevertTellsARewrittenHistoryFromADamagedStore(t *testing.T) {
	g := NewWithT(t)
	srv, repo, _ := newRepo(t)
	healthy := write(t, repo, "Healthy", healthyFiles)
	failed := write(t, repo, "Bad", map[string]string{"deploy/prod/app.yaml": badApp})
	later := write(t, repo, "Later, elsewhere", map[string]string{"other/x.yaml": "x: 2\n"})
	write(t, repo, "Head, elsewhere", map[string]string{"other/x.yaml": "x: 3\n"})
	dir := t.TempDir()
	req := revertRequest(t, srv, repo, healthy, failed)
	_, _, release, err := NewCache(dir).Checkout(context.Background(), repo.URL(), Reference{Branch: "main"}, failed, req.Auth)
	g.Expect(err).NotTo(HaveOccurred())
	release()

	// Unpack the store's packs with git so that one commit can be taken out of it.
	stores, err := filepath.Glob(filepath.Join(dir, "*", "objects.git"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(stores).To(HaveLen(1))
	store := stores[0]
	packs, err := filepath.Glob(filepath.Join(store, "objects", "pack", "*.pack"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(packs).NotTo(BeEmpty())
	for _, p := range packs {
		moved := filepath.Join(t.TempDir(), filepath.Base(p))
		must(t, os.Rename(p, moved))
		must(t, os.Remove(strings.TrimSuffix(p, ".pack")+".idx"))
		f, err := os.Open(moved)
		must(t, err)
		cmd := exec.Command("git", "-C", store, "unpack-objects", "-q")
		cmd.Stdin = f
		out, err := cmd.CombinedOutput()
		f.Close()
		g.Expect(err).NotTo(HaveOccurred(), "%s", out)
	}
	must(t, os.Remove(filepath.Join(store, "objects", later[:2], later[2:])))

	_, err = NewCache(dir).Revert(context.Background(), req)
	g.Expect(err).To(HaveOccurred())
	g.Expect(err.Error()).NotTo(ContainSubstring("force-pushed"))
	g.Expect(err.Error()).To(ContainSubstring("reading commit " + later))
	g.Expect(errors.Is(err, plumbing.ErrObjectNotFound)).To(BeTrue(), "%v", err)

	// The same release after the failed revision is force-pushed away.
	must(t, repo.Git("reset", "--quiet", "--hard", healthy))
	must(t, repo.Write(map[string]string{"other/x.yaml": "x: 4\n"}))
	must(t, repo.Git("commit", "--quiet", "-am", "Rewritten"))
	must(t, repo.Git("push", "--quiet", "--force", "origin", "main"))
	_, err = NewCache(t.TempDir()).Revert(context.Background(), req)
	g.Expect(err).To(MatchError(ContainSubstring("is not in the first-parent history of branch main (was it force-pushed away?)")))
}
