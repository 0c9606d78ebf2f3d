package git

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/testgit"
)

// appendLine is an Edit that adds line to the note, as a record is merged.
func appendLine(line string) func([]byte) ([]byte, error) {
	return func(cur []byte) ([]byte, error) {
		return append(append([]byte{}, cur...), line+"\n"...), nil
	}
}

func noteRequest(srvURL string, auth *Auth, commit string, edit func([]byte) ([]byte, error)) NoteRequest {
	return NoteRequest{URL: srvURL, Auth: auth, Ref: DefaultNotesRef, Commit: commit, Edit: edit,
		Message: "Deployment record", AuthorName: "ImmutableRelease", AuthorEmail: "immutable-release@noreply.local"}
}

// gitNotesShow is what plain git shows of the note on commit, fetched fresh into the
// working clone.
func gitNotesShow(t *testing.T, repo *testgit.Repo, commit string) string {
	t.Helper()
	must(t, repo.Git("fetch", "-q", "origin", "+"+DefaultNotesRef+":"+DefaultNotesRef))
	out, err := repo.Output("notes", "--ref=immutable-release", "show", commit)
	must(t, err)
	return out
}

func httpAuth(t *testing.T, srv *testgit.Server, url string) *Auth {
	t.Helper()
	auth, err := AuthFromSecret(url, map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
	must(t, err)
	return auth
}

func TestWriteNoteShownByGit(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, repo, first := newRepo(t)
	second := write(t, repo, "Second", map[string]string{"deploy/app.yaml": "a: 2\n"})
	auth := httpAuth(t, srv, repo.URL())
	cache := NewCache(t.TempDir())

	// No notes reference yet: the first write starts it.
	note, _, err := cache.ReadNote(ctx, repo.URL(), auth, DefaultNotesRef, first)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(note).To(BeNil())
	c1, err := cache.WriteNote(ctx, noteRequest(repo.URL(), auth, first, appendLine("record one")))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(gitNotesShow(t, repo, first)).To(Equal("record one\n"))

	// A note a person adds with plain git on another commit, and a line appended with git
	// to ours, are kept by the next write.
	must(t, repo.Git("notes", "--ref=immutable-release", "add", "-m", "by hand", second))
	must(t, repo.Git("notes", "--ref=immutable-release", "append", "-m", "appended by git", first))
	must(t, repo.Git("push", "-q", "origin", DefaultNotesRef))
	c2, err := cache.WriteNote(ctx, noteRequest(repo.URL(), auth, first, appendLine("record two")))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c2).NotTo(Equal(c1))
	g.Expect(gitNotesShow(t, repo, first)).To(Equal("record one\n\nappended by git\nrecord two\n"))
	g.Expect(gitNotesShow(t, repo, second)).To(Equal("by hand\n"))
	// The notes history is a chain: git log of the notes reference shows every write.
	out, err := repo.Output("log", "--format=%s", DefaultNotesRef)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(strings.Split(strings.TrimSpace(out), "\n")).To(HaveLen(4), out)

	// An Edit that changes nothing pushes nothing.
	c3, err := cache.WriteNote(ctx, noteRequest(repo.URL(), auth, first, func(cur []byte) ([]byte, error) { return cur, nil }))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c3).To(Equal(c2))

	// Reading with another cache (another process) sees the same.
	note, at, err := NewCache(t.TempDir()).ReadNote(ctx, repo.URL(), auth, DefaultNotesRef, first)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(at).To(Equal(c2))
	g.Expect(string(note)).To(HaveSuffix("record two\n"))

	var listed []string
	g.Expect(cache.EachNote(ctx, repo.URL(), auth, DefaultNotesRef, func(commit string, note []byte, err error) error {
		g.Expect(err).NotTo(HaveOccurred())
		listed = append(listed, commit)
		return nil
	})).To(Succeed())
	sort.Strings(listed)
	want := []string{first, second}
	sort.Strings(want)
	g.Expect(listed).To(Equal(want))

	// git fsck finds the notes sound.
	bare := filepath.Join(srv.Root(), repo.Name)
	gitStdin(t, bare, "", "fsck", "--strict")
}

// TestNoteFanout: once a notes tree grows, git keeps notes under folders of two hex
// digits. A note there is read, and rewritten in place rather than beside itself.
func TestNoteFanout(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, repo, first := newRepo(t)
	auth := httpAuth(t, srv, repo.URL())

	// A notes commit built with git's plumbing: the note at <2 hex>/<38 hex>.
	blob := gitStdin(t, repo.Dir, "fanned out\n", "hash-object", "-w", "--stdin")
	sub := mktree(t, repo, fmt.Sprintf("100644 blob %s\t%s\n", blob, first[2:]))
	root := mktree(t, repo, fmt.Sprintf("040000 tree %s\t%s\n", sub, first[:2]))
	notesCommit := gitStdin(t, repo.Dir, "", "commit-tree", root, "-m", "Notes")
	must(t, repo.Git("update-ref", DefaultNotesRef, notesCommit))
	must(t, repo.Git("push", "-q", "origin", DefaultNotesRef))
	g.Expect(gitNotesShow(t, repo, first)).To(Equal("fanned out\n"), "git reads the fan-out tree")

	cache := NewCache(t.TempDir())
	note, _, err := cache.ReadNote(ctx, repo.URL(), auth, DefaultNotesRef, first)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(note)).To(Equal("fanned out\n"))
	_, err = cache.WriteNote(ctx, noteRequest(repo.URL(), auth, first, appendLine("record")))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(gitNotesShow(t, repo, first)).To(Equal("fanned out\nrecord\n"))
	out, err := repo.Output("ls-tree", "-r", "--name-only", DefaultNotesRef)
	must(t, err)
	g.Expect(strings.Fields(out)).To(Equal([]string{first[:2] + "/" + first[2:]}), "one note, where it was")
}

// TestNoteWritersRace: two processes (two clusters) write records on the same commit at
// the same time, several each. Every push that loses the race fetches the notes again and
// merges; no record is lost.
func TestNoteWritersRace(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, repo, first := newRepo(t)
	auth := httpAuth(t, srv, repo.URL())
	caches := []*Cache{NewCache(t.TempDir()), NewCache(t.TempDir())}
	const each = 4
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	var want []string
	for w, cache := range caches {
		for i := 0; i < each; i++ {
			line := fmt.Sprintf("cluster-%d release-%d", w, i)
			want = append(want, line)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := cache.WriteNote(ctx, noteRequest(repo.URL(), auth, first, appendLine(line)))
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		g.Expect(err).NotTo(HaveOccurred())
	}
	got := strings.Split(strings.TrimSpace(gitNotesShow(t, repo, first)), "\n")
	sort.Strings(got)
	sort.Strings(want)
	g.Expect(got).To(Equal(want))
	t.Logf("%d records written in %d pushes", 2*each, caches[0].Stats().NotePushes+caches[1].Stats().NotePushes)
}

func TestNotesRefused(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, repo, first := newRepo(t)
	auth := httpAuth(t, srv, repo.URL())
	cache := NewCache(t.TempDir())

	for _, ref := range []string{"refs/heads/main", "refs/notes/../heads/main", "refs/notes/", "refs/notes/a..b",
		"refs/notes/x.lock", "refs/notes/a b", "refs/notes/a~1", "refs/notes//x", "refs/tags/v1", "immutable-release", "refs/notes/a:refs/heads/main"} {
		g.Expect(ValidateNotesRef(ref)).To(MatchError(ErrInvalidReference), ref)
		req := noteRequest(repo.URL(), auth, first, appendLine("x"))
		req.Ref = ref
		_, err := cache.WriteNote(ctx, req)
		g.Expect(err).To(MatchError(ErrInvalidReference), ref)
	}
	g.Expect(ValidateNotesRef("refs/notes/team/prod-eu")).To(Succeed())
	for _, commit := range []string{"main", strings.ToUpper(first), first[:39], first + "0"} {
		_, err := cache.WriteNote(ctx, noteRequest(repo.URL(), auth, commit, appendLine("x")))
		g.Expect(err).To(MatchError(ErrInvalidReference), commit)
	}
	out, err := repo.Output("ls-remote", "origin")
	must(t, err)
	g.Expect(out).NotTo(ContainSubstring("refs/notes"), "nothing was pushed")

	// A note over the bound, pushed with plain git, is refused when read and not
	// rewritten; the other notes are still listed.
	second := write(t, repo, "Second", map[string]string{"deploy/app.yaml": "a: 2\n"})
	must(t, os.WriteFile(filepath.Join(repo.Dir, ".huge"), []byte(strings.Repeat("x", MaxNoteBytes+1)), 0o600))
	must(t, repo.Git("notes", "--ref=immutable-release", "add", "-F", ".huge", first))
	must(t, repo.Git("notes", "--ref=immutable-release", "add", "-m", "small", second))
	must(t, repo.Git("push", "-q", "origin", DefaultNotesRef))
	_, _, err = cache.ReadNote(ctx, repo.URL(), auth, DefaultNotesRef, first)
	g.Expect(err).To(MatchError(ErrTooLarge))
	_, err = cache.WriteNote(ctx, noteRequest(repo.URL(), auth, first, appendLine("x")))
	g.Expect(err).To(MatchError(ErrTooLarge))
	var small, huge int
	g.Expect(cache.EachNote(ctx, repo.URL(), auth, DefaultNotesRef, func(commit string, note []byte, err error) error {
		if err != nil {
			g.Expect(err).To(MatchError(ErrTooLarge))
			g.Expect(commit).To(Equal(first))
			huge++
		} else {
			g.Expect(string(note)).To(Equal("small\n"))
			small++
		}
		return nil
	})).To(Succeed())
	g.Expect([]int{small, huge}).To(Equal([]int{1, 1}))

	// An Edit that would make the note too large is refused before anything is pushed.
	_, err = cache.WriteNote(ctx, noteRequest(repo.URL(), auth, second, func([]byte) ([]byte, error) {
		return []byte(strings.Repeat("y", MaxNoteBytes+1)), nil
	}))
	g.Expect(err).To(MatchError(ErrTooLarge))
}

func mktree(t *testing.T, repo *testgit.Repo, entries string) string {
	t.Helper()
	return gitStdin(t, repo.Dir, entries, "mktree")
}

// gitStdin runs git in dir with stdin and returns what it printed, trimmed.
func gitStdin(t *testing.T, dir, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.com",
		"GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestNoteWritesBatched: the writes of one process that wait while the store is busy go
// together in one notes commit, each getting it as its answer.
func TestNoteWritesBatched(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, repo, first := newRepo(t)
	second := write(t, repo, "Second", map[string]string{"deploy/app.yaml": "a: 2\n"})
	auth := httpAuth(t, srv, repo.URL())
	cache := NewCache(t.TempDir())
	store, err := cache.repository(repo.URL(), auth)
	g.Expect(err).NotTo(HaveOccurred())

	store.mu.Lock() // busy, as with a checkout under way
	const writers = 10
	hashes := make(chan string, writers)
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		commit := []string{first, second}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := cache.WriteNote(ctx, noteRequest(repo.URL(), auth, commit, appendLine(fmt.Sprintf("release-%d", i))))
			if err != nil {
				t.Error(err)
			}
			hashes <- h
		}()
	}
	g.Eventually(func() int {
		store.notesMu.Lock()
		defer store.notesMu.Unlock()
		return len(store.notes[DefaultNotesRef])
	}, 5*time.Second, 10*time.Millisecond).Should(Equal(writers))
	store.mu.Unlock()
	wg.Wait()
	close(hashes)

	g.Expect(cache.Stats().NotePushes).To(Equal(int64(1)))
	var got []string
	for h := range hashes {
		got = append(got, h)
	}
	g.Expect(got).To(HaveLen(writers))
	for _, h := range got {
		g.Expect(h).To(Equal(got[0]), "one notes commit holds them all")
	}
	g.Expect(strings.Count(gitNotesShow(t, repo, first), "release-")).To(Equal(writers / 2))
	g.Expect(strings.Count(gitNotesShow(t, repo, second), "release-")).To(Equal(writers / 2))
}

// TestWriteNoteOverSSH: notes are pushed over SSH as over HTTP, the host key checked.
func TestWriteNoteOverSSH(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, repo, first := newRepo(t)
	identity, err := testgit.NewIdentity()
	g.Expect(err).NotTo(HaveOccurred())
	knownHosts, err := srv.KnownHosts()
	g.Expect(err).NotTo(HaveOccurred())
	auth, err := AuthFromSecret(repo.SSHURL(), map[string][]byte{"identity": identity, "known_hosts": knownHosts})
	g.Expect(err).NotTo(HaveOccurred())
	_, err = NewCache(t.TempDir()).WriteNote(ctx, noteRequest(repo.SSHURL(), auth, first, appendLine("over ssh")))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(gitNotesShow(t, repo, first)).To(Equal("over ssh\n"))
}
