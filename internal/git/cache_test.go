package git

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/testgit"
)

func newRepo(t *testing.T) (*testgit.Server, *testgit.Repo, string) {
	t.Helper()
	g := NewWithT(t)
	srv, err := testgit.NewServer()
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(srv.Stop)
	repo, err := srv.CreateRepo("acme/shop.git", "main")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(repo.Write(map[string]string{"deploy/app.yaml": "a: 1\n"})).To(Succeed())
	hash, err := repo.CommitAndPush("Add the app")
	g.Expect(err).NotTo(HaveOccurred())
	return srv, repo, hash
}

func TestResolveAndCheckoutOverHTTP(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, repo, first := newRepo(t)
	cache := NewCache(t.TempDir())
	auth, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
	g.Expect(err).NotTo(HaveOccurred())
	main := Reference{Branch: "main"}

	hash, err := cache.Resolve(ctx, repo.URL(), main, auth, false)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hash).To(Equal(first))
	dir, commit, release, err := cache.Checkout(ctx, repo.URL(), main, hash, auth)
	g.Expect(err).NotTo(HaveOccurred())
	defer release()
	g.Expect(os.ReadFile(filepath.Join(dir, "deploy/app.yaml"))).To(Equal([]byte("a: 1\n")))
	g.Expect(commit.Subject).To(Equal("Add the app"))
	g.Expect(commit.Author).To(Equal("Ada Developer <ada@example.com>"))

	// A second release on the same repository: no new list within the window, no fetch
	// for a commit already stored, the same checkout.
	_, err = cache.Resolve(ctx, repo.URL(), main, auth, false)
	g.Expect(err).NotTo(HaveOccurred())
	dir2, _, release2, err := cache.Checkout(ctx, repo.URL(), main, hash, auth)
	g.Expect(err).NotTo(HaveOccurred())
	release2()
	g.Expect(dir2).To(Equal(dir))
	g.Expect(cache.Stats()).To(Equal(Stats{Lists: 1, Fetches: 1, Repositories: 1, Heads: 1}))

	// A tag, annotated, resolves to its commit; a commit reference resolves to itself.
	g.Expect(repo.Git("tag", "-a", "v1.0.0", "-m", "First release")).To(Succeed())
	g.Expect(repo.Git("push", "--quiet", "origin", "v1.0.0")).To(Succeed())
	tagged, err := cache.Resolve(ctx, repo.URL(), Reference{Tag: "v1.0.0"}, auth, false)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tagged).To(Equal(first))
	g.Expect(Revision(Reference{Tag: "v1.0.0"}, tagged)).To(Equal("v1.0.0@sha1:" + first))
	g.Expect(Revision(main, first)).To(Equal("main@sha1:" + first))
	g.Expect(RevisionHash("main@sha1:" + first)).To(Equal(first))

	// A new commit is fetched into the same store.
	g.Expect(repo.Write(map[string]string{"deploy/app.yaml": "a: 2\n"})).To(Succeed())
	second, err := repo.CommitAndPush("Change the app")
	g.Expect(err).NotTo(HaveOccurred())
	dir3, _, release3, err := cache.Checkout(ctx, repo.URL(), Reference{Commit: second}, second, auth)
	g.Expect(err).NotTo(HaveOccurred())
	defer release3()
	g.Expect(os.ReadFile(filepath.Join(dir3, "deploy/app.yaml"))).To(Equal([]byte("a: 2\n")))
}

func TestGitErrors(t *testing.T) {
	ctx := context.Background()
	srv, repo, _ := newRepo(t)
	good := map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)}
	tests := []struct {
		name    string
		url     string
		ref     Reference
		secret  map[string][]byte
		message string
	}{
		{name: "wrong credentials", url: repo.URL(), ref: Reference{Branch: "main"},
			secret: map[string][]byte{"username": []byte(srv.Username), "password": []byte("nope")}, message: "authentication required"},
		{name: "no credentials", url: repo.URL(), ref: Reference{Branch: "main"}, message: "authentication required"},
		{name: "unknown branch", url: repo.URL(), ref: Reference{Branch: "nope"}, secret: good, message: `branch "nope" not found in ` + repo.URL()},
		{name: "unknown tag", url: repo.URL(), ref: Reference{Tag: "v9"}, secret: good, message: `tag "v9" not found`},
		{name: "unreachable", url: "http://127.0.0.1:1/acme/shop.git", ref: Reference{Branch: "main"}, message: "connection refused"},
		{name: "credentials not shown", url: "http://user:hunter2@127.0.0.1:1/x.git", ref: Reference{Branch: "main"}, message: "http://127.0.0.1:1/x.git carries credentials in the URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			auth, err := AuthFromSecret(tt.url, tt.secret)
			if err == nil {
				_, err = NewCache(t.TempDir()).Resolve(ctx, tt.url, tt.ref, auth, false)
			}
			g.Expect(err).To(MatchError(ContainSubstring(tt.message)))
			g.Expect(err.Error()).NotTo(ContainSubstring("hunter2"))
		})
	}
}

func TestSSHChecksHostKey(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, repo, first := newRepo(t)
	identity, err := testgit.NewIdentity()
	g.Expect(err).NotTo(HaveOccurred())
	knownHosts, err := srv.KnownHosts()
	g.Expect(err).NotTo(HaveOccurred())

	auth, err := AuthFromSecret(repo.SSHURL(), map[string][]byte{"identity": identity, "known_hosts": knownHosts})
	g.Expect(err).NotTo(HaveOccurred())
	cache := NewCache(t.TempDir())
	hash, err := cache.Resolve(ctx, repo.SSHURL(), Reference{Branch: "main"}, auth, false)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hash).To(Equal(first))
	_, _, release, err := cache.Checkout(ctx, repo.SSHURL(), Reference{Branch: "main"}, hash, auth)
	g.Expect(err).NotTo(HaveOccurred())
	release()

	// Another host's key: refused, never skipped.
	other, err := testgit.NewServer()
	g.Expect(err).NotTo(HaveOccurred())
	defer other.Stop()
	otherHosts, err := other.KnownHosts()
	g.Expect(err).NotTo(HaveOccurred())
	// Same host name and port, a different key.
	wrong := []byte(hostOf(string(knownHosts)) + " " + keyOf(string(otherHosts)))
	auth, err = AuthFromSecret(repo.SSHURL(), map[string][]byte{"identity": identity, "known_hosts": wrong})
	g.Expect(err).NotTo(HaveOccurred())
	_, err = NewCache(t.TempDir()).Resolve(ctx, repo.SSHURL(), Reference{Branch: "main"}, auth, false)
	g.Expect(err).To(MatchError(ContainSubstring("key mismatch")))

	_, err = AuthFromSecret(repo.SSHURL(), map[string][]byte{"identity": identity})
	g.Expect(err).To(MatchError(ContainSubstring("no known_hosts")))
	_, err = AuthFromSecret(repo.SSHURL(), nil)
	g.Expect(err).To(MatchError(ErrInvalidCredentials))
	_, err = AuthFromSecret(repo.SSHURL(), map[string][]byte{"identity": []byte("junk"), "known_hosts": knownHosts})
	g.Expect(err).To(MatchError(ContainSubstring("identity")))
}

func hostOf(line string) string {
	for i, c := range line {
		if c == ' ' {
			return line[:i]
		}
	}
	return line
}

func keyOf(line string) string { return line[len(hostOf(line))+1:] }

// TestCheckoutsAreEvictedButNeverInUse: many commits in a row each get a complete tree, and
// only idle checkouts beyond the limit are removed.
func TestCheckoutsAreEvictedButNeverInUse(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, repo, _ := newRepo(t)
	auth, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
	g.Expect(err).NotTo(HaveOccurred())
	cache := NewCache(t.TempDir())
	var dirs []string
	for i := 0; i < 12; i++ {
		g.Expect(repo.Write(map[string]string{"deploy/app.yaml": fmt.Sprintf("a: %d\n", i)})).To(Succeed())
		hash, err := repo.CommitAndPush(fmt.Sprintf("Change %d", i))
		g.Expect(err).NotTo(HaveOccurred())
		dir, _, release, err := cache.Checkout(ctx, repo.URL(), Reference{Branch: "main"}, hash, auth)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(os.ReadFile(filepath.Join(dir, "deploy/app.yaml"))).To(Equal([]byte(fmt.Sprintf("a: %d\n", i))))
		release()
		dirs = append(dirs, dir)
	}
	_, err = os.Stat(dirs[0])
	g.Expect(os.IsNotExist(err)).To(BeTrue(), "the oldest idle checkout is kept beyond the limit")
	g.Expect(dirs[11]).To(BeADirectory())
}

// TestPathsChanged: a push that changed one folder among several is seen as changing that
// folder only; a listing made after a push serves the callers that ask for one.
func TestPathsChanged(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, repo, first := newRepo(t)
	g.Expect(repo.Write(map[string]string{"apps/a/app.yaml": "a: 1\n", "apps/b/app.yaml": "b: 1\n"})).To(Succeed())
	before, err := repo.CommitAndPush("Add a and b")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(repo.Write(map[string]string{"apps/b/app.yaml": "b: 2\n"})).To(Succeed())
	after, err := repo.CommitAndPush("Change b")
	g.Expect(err).NotTo(HaveOccurred())

	cache := NewCache(t.TempDir())
	auth, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
	g.Expect(err).NotTo(HaveOccurred())
	pushed := time.Now()
	head, listedAt, err := cache.ResolveSince(ctx, repo.URL(), Reference{Branch: "main"}, auth, pushed)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(head).To(Equal(after))
	g.Expect(listedAt).NotTo(BeTemporally("<", pushed))
	_, _, release, err := cache.Checkout(ctx, repo.URL(), Reference{Branch: "main"}, head, auth)
	g.Expect(err).NotTo(HaveOccurred())
	release()
	again, againAt, err := cache.ResolveSince(ctx, repo.URL(), Reference{Branch: "main"}, auth, pushed)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(again).To(Equal(after))
	g.Expect(againAt).To(Equal(listedAt), "the second caller is told when the listing it reuses was made")
	g.Expect(cache.Stats().Lists).To(Equal(int64(1)), "a listing after the push serves the second caller")

	answers, err := cache.PathsChanged(repo.URL(), auth, []PathChange{
		{From: before, To: after, Path: "apps/a"},
		{From: before, To: after, Path: "/apps/b/"},
		{From: before, To: after, Path: "apps/missing"},
		{From: first, To: after, Path: "apps/a"},
		{From: strings.Repeat("f", 40), To: after, Path: "apps/a"},
	})
	g.Expect(answers).To(Equal([]bool{false, true, false, true, true}))
	g.Expect(err).To(HaveOccurred(), "an unknown commit is reported, and counts as a change")
}

// TestEvictUnusedStores: the store of a repository no release uses any more is removed
// from memory and disk with its heads; the store in use, and one with a checkout held,
// stay; an evicted repository is fetched again when it is wanted again.
func TestEvictUnusedStores(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, kept, keptHead := newRepo(t)
	gone, err := srv.CreateRepo("acme/gone.git", "main")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(gone.Write(map[string]string{"deploy/app.yaml": "b: 1\n"})).To(Succeed())
	goneHead, err := gone.CommitAndPush("Add the app")
	g.Expect(err).NotTo(HaveOccurred())
	held, err := srv.CreateRepo("acme/held.git", "main")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(held.Write(map[string]string{"deploy/app.yaml": "c: 1\n"})).To(Succeed())
	heldHead, err := held.CommitAndPush("Add the app")
	g.Expect(err).NotTo(HaveOccurred())

	dir := t.TempDir()
	cache := NewCache(dir)
	auth, err := AuthFromSecret(kept.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
	g.Expect(err).NotTo(HaveOccurred())
	main := Reference{Branch: "main"}
	checkout := func(url, hash string) func() {
		_, err := cache.Resolve(ctx, url, main, auth, true)
		g.Expect(err).NotTo(HaveOccurred())
		_, _, release, err := cache.Checkout(ctx, url, main, hash, auth)
		g.Expect(err).NotTo(HaveOccurred())
		return release
	}
	checkout(kept.URL(), keptHead)()
	checkout(gone.URL(), goneHead)()
	release := checkout(held.URL(), heldHead)
	stores, err := os.ReadDir(dir)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(stores).To(HaveLen(3))

	inUse := func(url, id string) bool { return url == kept.URL() && id == auth.ID }
	g.Expect(cache.Evict(inUse, time.Hour)).To(Equal(0), "a store used within idle is kept")
	g.Expect(cache.Evict(inUse, 0)).To(Equal(1), "only the store nobody uses nor holds goes")
	stores, err = os.ReadDir(dir)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(stores).To(HaveLen(2))
	cache.mu.Lock()
	g.Expect(cache.repos).To(HaveLen(2))
	for key := range cache.heads {
		g.Expect(key).NotTo(HavePrefix(gone.URL()+"\x00"), "the heads of the evicted store stay")
	}
	cache.mu.Unlock()

	release()
	g.Expect(cache.Evict(inUse, 0)).To(Equal(1), "a checkout let go of no longer holds its store")
	fetches := cache.Stats().Fetches
	checkout(gone.URL(), goneHead)()
	g.Expect(cache.Stats().Fetches).To(Equal(fetches+1), "an evicted repository is fetched again")
}
