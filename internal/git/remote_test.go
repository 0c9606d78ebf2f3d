package git

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/testgit"
)

// countingServer answers every request with 404 and counts them: a server that must not
// be asked anything.
func countingServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// TestRemoteRefusesBadURLsAndReferences: a URL or a reference the operator must not use is
// refused before anything is sent.
func TestRemoteRefusesBadURLsAndReferences(t *testing.T) {
	ctx := context.Background()
	srv, hits := countingServer(t)
	good := srv.URL + "/acme/shop.git"
	hash := strings.Repeat("a", 40)
	anonymous := &Auth{}
	cases := []struct {
		name string
		call func(c *Cache) error
		want error
	}{
		{"a branch that is a refspec", func(c *Cache) error {
			_, err := c.Resolve(ctx, good, Reference{Branch: "main:refs/heads/other"}, anonymous, true)
			return err
		}, ErrInvalidReference},
		{"a wildcard tag", func(c *Cache) error {
			_, _, _, err := c.Checkout(ctx, good, Reference{Tag: "*"}, hash, anonymous)
			return err
		}, ErrInvalidReference},
		{"a short commit", func(c *Cache) error {
			_, _, _, err := c.Checkout(ctx, good, Reference{Commit: "abc"}, "abc", anonymous)
			return err
		}, ErrInvalidReference},
		{"a file URL", func(c *Cache) error {
			_, err := c.Resolve(ctx, "file:///etc", Reference{Branch: "main"}, anonymous, true)
			return err
		}, ErrURLNotAllowed},
		{"credentials in the URL", func(c *Cache) error {
			_, _, _, err := c.Checkout(ctx, strings.Replace(good, "http://", "http://u:p@", 1), Reference{Branch: "main"}, hash, anonymous)
			return err
		}, ErrURLNotAllowed},
		{"a revert onto a refspec", func(c *Cache) error {
			_, err := c.Revert(ctx, RevertRequest{URL: good, Branch: "main:refs/heads/x", Auth: anonymous})
			return err
		}, ErrInvalidReference},
		{"a revert pushed to a refspec", func(c *Cache) error {
			_, err := c.Revert(ctx, RevertRequest{URL: good, Branch: "main", PushBranch: "+x:refs/heads/main", Auth: anonymous})
			return err
		}, ErrInvalidReference},
		{"a proposal from a file URL", func(c *Cache) error {
			_, err := c.ProposeRevert(ctx, RevertRequest{URL: "file:///srv/x.git", Branch: "main", Auth: anonymous, Failed: hash, Release: "a/b"})
			return err
		}, ErrURLNotAllowed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			err := tc.call(NewCache(t.TempDir()))
			g.Expect(errors.Is(err, tc.want)).To(BeTrue(), "%v", err)
		})
	}
	NewWithT(t).Expect(hits.Load()).To(BeZero(), "a refused request reached the server")
}

// TestFileURLsWhenAllowed: with AllowFileURLs, a local bare repository is read.
func TestFileURLsWhenAllowed(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	_, repo, head := newRepo(t)
	work := t.TempDir()
	must(t, run("git", "clone", "-q", "--bare", repo.Dir, filepath.Join(work, "shop.git")))
	url := "file://" + filepath.Join(work, "shop.git")
	auth, err := AuthFromSecret(url, nil)
	g.Expect(err).NotTo(HaveOccurred())
	cache := NewCache(t.TempDir())
	_, err = cache.Resolve(ctx, url, Reference{Branch: "main"}, auth, true)
	g.Expect(errors.Is(err, ErrURLNotAllowed)).To(BeTrue(), "%v", err)
	cache.AllowFileURLs = true
	hash, err := cache.Resolve(ctx, url, Reference{Branch: "main"}, auth, true)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hash).To(Equal(head))
	dir, _, release, err := cache.Checkout(ctx, url, Reference{Branch: "main"}, hash, auth)
	g.Expect(err).NotTo(HaveOccurred())
	defer release()
	g.Expect(os.ReadFile(filepath.Join(dir, "deploy/app.yaml"))).To(Equal([]byte("a: 1\n")))
}

// TestStoresAreNotSharedBetweenCredentials: a commit one tenant's credentials fetched is
// not served to a release on the same URL with no credentials or wrong ones; the server
// decides for each.
func TestStoresAreNotSharedBetweenCredentials(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, repo, head := newRepo(t)
	cache := NewCache(t.TempDir())
	owner, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
	g.Expect(err).NotTo(HaveOccurred())
	_, _, release, err := cache.Checkout(ctx, repo.URL(), Reference{Branch: "main"}, head, owner)
	g.Expect(err).NotTo(HaveOccurred())
	release()

	anonymous, err := AuthFromSecret(repo.URL(), nil)
	g.Expect(err).NotTo(HaveOccurred())
	wrong, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte("guess")})
	g.Expect(err).NotTo(HaveOccurred())
	for _, auth := range []*Auth{anonymous, wrong} {
		_, _, _, err = cache.Checkout(ctx, repo.URL(), Reference{Branch: "main"}, head, auth)
		g.Expect(err).To(MatchError(ContainSubstring("authentication required")))
		changed, err := cache.PathsChanged(repo.URL(), auth, []PathChange{{From: head, To: head, Path: "deploy"}})
		g.Expect(err).To(HaveOccurred(), "the commit is not in this store")
		g.Expect(changed).To(Equal([]bool{true}))
	}
	changed, err := cache.PathsChanged(repo.URL(), owner, []PathChange{{From: head, To: head, Path: "deploy"}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(changed).To(Equal([]bool{false}))
}

// TestFetchIgnoresTheStoresConfig: the store's config on disk is changed to send fetches
// (and their credentials) to another server; the next fetch still goes to the release's URL.
func TestFetchIgnoresTheStoresConfig(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, repo, head := newRepo(t)
	evil, hits := countingServer(t)
	dir := t.TempDir()
	cache := NewCache(dir)
	auth, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
	g.Expect(err).NotTo(HaveOccurred())
	_, _, release, err := cache.Checkout(ctx, repo.URL(), Reference{Branch: "main"}, head, auth)
	g.Expect(err).NotTo(HaveOccurred())
	release()

	configs, err := filepath.Glob(filepath.Join(dir, "*", "objects.git", "config"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(configs).To(HaveLen(1))
	tampered := fmt.Sprintf("[core]\n\tbare = true\n[remote \"origin\"]\n\turl = %[1]s/stolen.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n[url \"%[1]s/\"]\n\tinsteadOf = %[2]s\n", evil.URL, repo.URL())
	g.Expect(os.WriteFile(configs[0], []byte(tampered), 0o644)).To(Succeed())

	g.Expect(repo.Write(map[string]string{"deploy/app.yaml": "a: 2\n"})).To(Succeed())
	second, err := repo.CommitAndPush("Change the app")
	g.Expect(err).NotTo(HaveOccurred())
	co, _, release, err := cache.Checkout(ctx, repo.URL(), Reference{Branch: "main"}, second, auth)
	g.Expect(err).NotTo(HaveOccurred())
	release()
	g.Expect(os.ReadFile(filepath.Join(co, "deploy/app.yaml"))).To(Equal([]byte("a: 2\n")))
	g.Expect(hits.Load()).To(BeZero(), "the fetch went where the config on disk said")
}

// tarpit accepts connections and never answers.
func tarpit(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// trickle answers with headers and the start of a reference advertisement, then a byte of
// it every 100 ms for as long as the client reads.
func trickle(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
		w.WriteHeader(http.StatusOK)
		// A pkt-line of 65520 bytes, sent one at a time.
		if _, err := w.Write([]byte(pkt("# service=git-upload-pack\n") + "0000fff0")); err != nil {
			return
		}
		for {
			if _, err := w.Write([]byte("x")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestRemoteOperationsHaveADeadline: servers that accept and never answer, or answer a byte
// at a time forever, hold a listing or a fetch no longer than the cache's timeout, even when
// the caller's context has no deadline.
func TestRemoteOperationsHaveADeadline(t *testing.T) {
	servers := map[string]func(t *testing.T) string{"silent": tarpit, "trickling": trickle}
	for name, start := range servers {
		for _, op := range []string{"ResolveSince", "Checkout"} {
			t.Run(name+" "+op, func(t *testing.T) {
				g := NewWithT(t)
				url := "http://" + start(t) + "/acme/shop.git"
				cache := NewCache(t.TempDir())
				cache.Limits.Timeout = time.Second
				began := time.Now()
				var err error
				if op == "ResolveSince" {
					_, _, err = cache.ResolveSince(context.Background(), url, Reference{Branch: "main"}, &Auth{}, time.Now())
				} else {
					_, _, _, err = cache.Checkout(context.Background(), url, Reference{Branch: "main"}, strings.Repeat("a", 40), &Auth{})
				}
				took := time.Since(began)
				g.Expect(err).To(HaveOccurred())
				g.Expect(errors.Is(err, context.DeadlineExceeded)).To(BeTrue(), "%v", err)
				g.Expect(err.Error()).To(ContainSubstring("at most 1s for one Git operation"))
				g.Expect(took).To(BeNumerically("<", 5*time.Second))
				t.Logf("%s against a %s server returned after %s: %v", op, name, took.Round(time.Millisecond), err)
			})
		}
	}
}

// pkt is one pkt-line of the Git protocol.
func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

// packBomb is a smart HTTP server that advertises one branch and then answers either the
// listing (endlessRefs) or the fetch with an endless stream: more references, or progress
// messages on the side band that go-git reads and drops.
func packBomb(t *testing.T, endlessRefs bool) (string, *atomic.Int64) {
	var sent atomic.Int64
	head := strings.Repeat("1", 40)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		flush := func(s string) bool {
			n, err := w.Write([]byte(s))
			sent.Add(int64(n))
			w.(http.Flusher).Flush()
			return err == nil && r.Context().Err() == nil
		}
		switch {
		case strings.HasSuffix(r.URL.Path, "/info/refs"):
			w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
			flush(pkt("# service=git-upload-pack\n") + "0000" +
				pkt(head+" HEAD\x00side-band-64k ofs-delta symref=HEAD:refs/heads/main agent=git/bomb\n") +
				pkt(head+" refs/heads/main\n"))
			if !endlessRefs {
				flush("0000")
				return
			}
			for i := 0; flush(pkt(fmt.Sprintf("%s refs/heads/branch-%09d\n", head, i))); i++ {
			}
		case strings.HasSuffix(r.URL.Path, "/git-upload-pack"):
			w.Header().Set("Content-Type", "application/x-git-upload-pack-result")
			progress := pkt("\x02Counting objects: " + strings.Repeat("9", 4000) + "\r")
			if !flush(pkt("NAK\n")) {
				return
			}
			for flush(strings.Repeat(progress, 16)) {
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/bomb.git", &sent
}

// TestEndlessAnswersStopAtTheFetchCap: a server that lists references forever, or answers
// a fetch with an endless stream, is cut off at the cache's FetchBytes with ErrTooLarge,
// well before the timeout.
func TestEndlessAnswersStopAtTheFetchCap(t *testing.T) {
	for _, endlessRefs := range []bool{true, false} {
		name := "endless pack"
		if endlessRefs {
			name = "endless references"
		}
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			url, sent := packBomb(t, endlessRefs)
			cache := NewCache(t.TempDir())
			cache.Limits.FetchBytes = 4 << 20
			cache.Limits.Timeout = 30 * time.Second
			began := time.Now()
			var err error
			if endlessRefs {
				_, err = cache.Resolve(context.Background(), url, Reference{Branch: "main"}, &Auth{}, true)
			} else {
				_, _, _, err = cache.Checkout(context.Background(), url, Reference{Branch: "main"}, strings.Repeat("2", 40), &Auth{})
			}
			took := time.Since(began)
			g.Expect(errors.Is(err, ErrTooLarge)).To(BeTrue(), "%v", err)
			g.Expect(err.Error()).To(ContainSubstring("more than 4 MiB"))
			g.Expect(took).To(BeNumerically("<", 15*time.Second))
			t.Logf("stopped after %s, the server had sent %d bytes: %v", took.Round(time.Millisecond), sent.Load(), err)
		})
	}
}

// TestSSHHasADeadlineAndACap: over SSH, a server that accepts and never answers (no
// handshake) is held to the timeout, and a repository larger than the fetch cap is cut off
// with ErrTooLarge: go-git's SSH transport bounds neither by itself.
func TestSSHHasADeadlineAndACap(t *testing.T) {
	g := NewWithT(t)
	srv, repo, _ := newRepo(t)
	identity, err := testgit.NewIdentity()
	g.Expect(err).NotTo(HaveOccurred())
	knownHosts, err := srv.KnownHosts()
	g.Expect(err).NotTo(HaveOccurred())
	secret := map[string][]byte{"identity": identity, "known_hosts": knownHosts}

	silent := "ssh://git@" + tarpit(t) + "/acme/shop.git"
	auth, err := AuthFromSecret(silent, secret)
	g.Expect(err).NotTo(HaveOccurred())
	cache := NewCache(t.TempDir())
	cache.Limits.Timeout = time.Second
	began := time.Now()
	_, err = cache.Resolve(context.Background(), silent, Reference{Branch: "main"}, auth, true)
	took := time.Since(began)
	g.Expect(errors.Is(err, context.DeadlineExceeded)).To(BeTrue(), "%v", err)
	g.Expect(took).To(BeNumerically("<", 5*time.Second))
	t.Logf("a silent SSH server: returned after %s: %v", took.Round(time.Millisecond), err)

	big := make([]byte, 512<<10)
	_, _ = rand.Read(big)
	g.Expect(repo.Write(map[string]string{"blob.bin": string(big)})).To(Succeed())
	head, err := repo.CommitAndPush("A large file")
	g.Expect(err).NotTo(HaveOccurred())
	auth, err = AuthFromSecret(repo.SSHURL(), secret)
	g.Expect(err).NotTo(HaveOccurred())
	cache = NewCache(t.TempDir())
	cache.Limits.FetchBytes = 64 << 10
	_, _, _, err = cache.Checkout(context.Background(), repo.SSHURL(), Reference{Branch: "main"}, head, auth)
	g.Expect(errors.Is(err, ErrTooLarge)).To(BeTrue(), "%v", err)
	g.Expect(err.Error()).To(ContainSubstring("more than 64 KiB"))
	t.Logf("a pack over the cap over SSH: %v", err)

	// Within the cap, the same repository is read over SSH.
	cache.Limits.FetchBytes = 0
	_, _, release, err := cache.Checkout(context.Background(), repo.SSHURL(), Reference{Branch: "main"}, head, auth)
	g.Expect(err).NotTo(HaveOccurred())
	release()
}
