package git

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Git notes, as git notes keeps them: a reference (refs/notes/<name>) to a chain of
// commits whose tree maps each annotated commit's hash to a blob, the note. The path is
// the full hash at the root, or split into folders of two hex digits once a notes tree
// grows (ab/cdef..., ab/cd/ef...): both are read, and a note is rewritten where it is.

// DefaultNotesRef is the notes reference deployment records are written to, unless the
// release names another.
const DefaultNotesRef = "refs/notes/immutable-release"

// MaxNoteBytes is the largest note read or written: a note is written by whoever can push
// to the notes reference.
const MaxNoteBytes = 4 << 20

// MaxNotes bounds the notes one listing (EachNote) walks, and MaxNotesBytes what it reads
// of them in all: notes compress well, and a notes reference of a hostile repository could
// otherwise make a listing read without end.
const (
	MaxNotes      = 100_000
	MaxNotesBytes = 256 << 20
)

// maxNoteAttempts bounds the pushes of one note when other writers (other clusters, other
// processes) keep winning the race to the notes reference.
const maxNoteAttempts = 8

// ValidateNotesRef says whether ref is a notes reference the operator may write:
// refs/notes/<name>, with a name Git accepts. Anything else could climb into branches or
// tags.
func ValidateNotesRef(ref string) error {
	name, ok := strings.CutPrefix(ref, "refs/notes/")
	if !ok {
		return fmt.Errorf("%w: notes reference %q is not under refs/notes/", ErrInvalidReference, ref)
	}
	if why := refNameProblem(name); why != "" {
		return fmt.Errorf("%w: notes reference %q %s", ErrInvalidReference, ref, why)
	}
	return nil
}

// NoteRequest asks for the note on Commit under Ref to be changed by Edit and pushed.
type NoteRequest struct {
	URL  string
	Auth *Auth
	// Ref is the notes reference, refs/notes/<name>.
	Ref string
	// Commit is the annotated commit, 40 hex digits.
	Commit string
	// Edit returns the new note from the note the remote holds now (nil when there is
	// none). It is called again, on the newer note, each time another writer's push wins
	// the race: what the others wrote is never lost. Returning current unchanged pushes
	// nothing.
	Edit func(current []byte) ([]byte, error)
	// Message is the notes commit's message.
	Message     string
	AuthorName  string
	AuthorEmail string
}

// WriteNote fetches the notes reference, applies Edit to the note on the commit, and
// pushes a notes commit on top, starting again from the remote's newer notes when another
// push won (bounded). It returns the notes commit that holds the note.
//
// Writes of this process to the same store and notes reference take turns, and those that
// wait while another's push is under way go together in one notes commit: a fleet of
// releases that all became healthy on one commit costs a few pushes, not one each.
func (c *Cache) WriteNote(ctx context.Context, req NoteRequest) (string, error) {
	if err := c.checkNote(req.URL, req.Ref, req.Commit); err != nil {
		return "", err
	}
	r, err := c.repository(req.URL, req.Auth)
	if err != nil {
		return "", err
	}
	p := &pendingNote{req: req, done: make(chan struct{})}
	r.enqueueNote(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-p.done:
		// Written by the write that held the store before.
		return p.hash, p.err
	default:
	}
	c.writeNotes(ctx, r, r.takeNotes(req.Ref))
	return p.hash, p.err
}

// pendingNote is a write waiting for its turn at the store, and its outcome.
type pendingNote struct {
	req  NoteRequest
	done chan struct{}
	hash string
	err  error
}

// enqueueNote adds a write to those waiting for the store.
func (r *repository) enqueueNote(p *pendingNote) {
	r.notesMu.Lock()
	defer r.notesMu.Unlock()
	if r.notes == nil {
		r.notes = map[string][]*pendingNote{}
	}
	r.notes[p.req.Ref] = append(r.notes[p.req.Ref], p)
}

// takeNotes removes and returns the writes waiting for ref.
func (r *repository) takeNotes(ref string) []*pendingNote {
	r.notesMu.Lock()
	defer r.notesMu.Unlock()
	batch := r.notes[ref]
	delete(r.notes, ref)
	return batch
}

// writeNotes writes a batch, with the store locked, and gives each write its outcome.
func (c *Cache) writeNotes(ctx context.Context, r *repository, batch []*pendingNote) {
	defer func() {
		for _, p := range batch {
			close(p.done)
		}
	}()
	var lastErr error
	for attempt := 0; attempt < maxNoteAttempts; attempt++ {
		if attempt > 0 {
			// Writers that lost together should not race again in step.
			select {
			case <-ctx.Done():
				lastErr = ctx.Err()
				attempt = maxNoteAttempts
				continue
			case <-time.After(time.Duration(attempt*(20+rand.IntN(80))) * time.Millisecond):
			}
		}
		c.mu.Lock()
		c.stats.NotePushes++
		c.mu.Unlock()
		err := c.pushNotes(ctx, r, batch)
		if err == nil || !errors.Is(err, errNonFastForward) {
			if err != nil {
				for _, p := range batch {
					if p.err == nil && p.hash == "" {
						p.err = err
					}
				}
			}
			return
		}
		lastErr = err
	}
	err := fmt.Errorf("the notes reference kept moving during %d attempts to push the note: %w", maxNoteAttempts, lastErr)
	for _, p := range batch {
		p.hash, p.err = "", err
	}
}

// pushNotes applies the batch's edits to the notes the remote holds now and pushes them
// in one notes commit. An edit that fails fails its own write only. A lost race returns
// errNonFastForward, and the whole batch is done again on the newer notes.
func (c *Cache) pushNotes(ctx context.Context, r *repository, batch []*pendingNote) error {
	for _, p := range batch {
		p.hash, p.err = "", nil
	}
	ref, repoURL, auth := batch[0].req.Ref, batch[0].req.URL, batch[0].req.Auth
	tip, err := c.fetchNotes(ctx, r, repoURL, ref, auth)
	if err != nil {
		return err
	}
	repo := r.repo
	tree := &object.Tree{}
	if !tip.IsZero() {
		commit, err := repo.CommitObject(tip)
		if err != nil {
			return fmt.Errorf("reading notes commit %s: %w", tip, err)
		}
		if tree, err = commit.Tree(); err != nil {
			return fmt.Errorf("reading the tree of notes commit %s: %w", tip, err)
		}
	}
	var changed []*pendingNote
	for _, p := range batch {
		next, at, err := editNote(repo, tree, p.req)
		switch {
		case err != nil:
			p.err = err
			continue
		case at == nil:
			p.hash = tip.String()
			continue
		}
		treeHash, err := spliceTree(repo.Storer, tree, at, &object.TreeEntry{Mode: filemode.Regular, Hash: next})
		if err == nil {
			tree, err = object.GetTree(repo.Storer, treeHash)
		}
		if err != nil {
			return fmt.Errorf("writing the notes tree: %w", err)
		}
		changed = append(changed, p)
	}
	if len(changed) == 0 {
		return nil
	}
	first := changed[0].req
	message := first.Message
	if len(changed) > 1 {
		var b strings.Builder
		fmt.Fprintf(&b, "%d notes\n\n", len(changed))
		for _, p := range changed {
			subject, _, _ := strings.Cut(p.req.Message, "\n")
			fmt.Fprintf(&b, "%s\n", subject)
		}
		message = b.String()
	}
	sig := object.Signature{Name: first.AuthorName, Email: first.AuthorEmail, When: time.Now()}
	commit := &object.Commit{Author: sig, Committer: sig, Message: message, TreeHash: tree.Hash}
	if !tip.IsZero() {
		commit.ParentHashes = []plumbing.Hash{tip}
	}
	obj := repo.Storer.NewEncodedObject()
	if err := commit.Encode(obj); err != nil {
		return err
	}
	hash, err := repo.Storer.SetEncodedObject(obj)
	if err != nil {
		return err
	}
	local := plumbing.ReferenceName("refs/immutable-release/notes-push/" + strings.TrimPrefix(ref, "refs/notes/"))
	if err := repo.Storer.SetReference(plumbing.NewHashReference(local, hash)); err != nil {
		return err
	}
	defer func() { _ = repo.Storer.RemoveReference(local) }()
	push := c.remote(ctx)
	defer push.cancel()
	remote := gogit.NewRemote(repo.Storer, &config.RemoteConfig{Name: gogit.DefaultRemoteName, URLs: []string{repoURL}})
	err = push.err(remote.PushContext(push.ctx, &gogit.PushOptions{
		RemoteURL:    repoURL,
		Auth:         authMethod(auth),
		RefSpecs:     []config.RefSpec{config.RefSpec(fmt.Sprintf("%s:%s", local, ref))},
		ProxyOptions: push.proxyFor(repoURL),
	}))
	if err != nil {
		if err := c.afterFailedPush(ctx, r, repoURL, ref, auth, tip, hash, err); err != nil {
			return err
		}
	}
	// The store mirrors what was pushed: the next write starts from it.
	if err := repo.Storer.SetReference(plumbing.NewHashReference(fetchedNotes(ref), hash)); err != nil {
		return err
	}
	for _, p := range changed {
		p.hash = hash.String()
	}
	return nil
}

// editNote applies req's edit to the note on its commit in tree, and writes the new note;
// at is where it goes, nil when the edit changed nothing.
func editNote(repo *gogit.Repository, tree *object.Tree, req NoteRequest) (blob plumbing.Hash, at []string, err error) {
	current, at, err := readNote(repo, tree, req.Commit)
	if err != nil {
		return plumbing.ZeroHash, nil, err
	}
	next, err := req.Edit(current)
	if err != nil {
		return plumbing.ZeroHash, nil, err
	}
	if current != nil && string(next) == string(current) {
		return plumbing.ZeroHash, nil, nil
	}
	if len(next) > MaxNoteBytes {
		return plumbing.ZeroHash, nil, fmt.Errorf("%w: the note on %s would hold more than %s", ErrTooLarge, short(req.Commit), formatBytes(MaxNoteBytes))
	}
	obj := repo.Storer.NewEncodedObject()
	obj.SetType(plumbing.BlobObject)
	w, err := obj.Writer()
	if err != nil {
		return plumbing.ZeroHash, nil, err
	}
	if _, err := w.Write(next); err != nil {
		return plumbing.ZeroHash, nil, err
	}
	if err := w.Close(); err != nil {
		return plumbing.ZeroHash, nil, err
	}
	if blob, err = repo.Storer.SetEncodedObject(obj); err != nil {
		return plumbing.ZeroHash, nil, err
	}
	if at == nil {
		at = []string{req.Commit}
	}
	return blob, at, nil
}

// afterFailedPush asks the remote what a failed push did, rather than trusting how the
// server worded its refusal (servers word a lost race in many ways, some not even in the
// protocol's framing): the notes reference at the commit pushed means the push went
// through (nil); moved elsewhere, another writer won the race (errNonFastForward);
// unmoved, the push truly failed.
func (c *Cache) afterFailedPush(ctx context.Context, r *repository, repoURL, ref string, auth *Auth, base, pushed plumbing.Hash, pushErr error) error {
	now, err := c.fetchNotes(ctx, r, repoURL, ref, auth)
	switch {
	case err != nil:
		return fmt.Errorf("pushing %s to %s: %w", ref, Redact(repoURL), pushErr)
	case now == pushed:
		return nil
	case now != base || errors.Is(pushErr, gogit.ErrNonFastForwardUpdate):
		return fmt.Errorf("%w: %v", errNonFastForward, pushErr)
	}
	return fmt.Errorf("pushing %s to %s: %w", ref, Redact(repoURL), pushErr)
}

// ReadNote fetches the notes reference and returns the note on commit, nil when there is
// none (or no notes reference at all), and the notes commit it was read from.
func (c *Cache) ReadNote(ctx context.Context, repoURL string, auth *Auth, ref, commit string) (note []byte, notesCommit string, err error) {
	if err := c.checkNote(repoURL, ref, commit); err != nil {
		return nil, "", err
	}
	r, err := c.repository(repoURL, auth)
	if err != nil {
		return nil, "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	tip, err := c.fetchNotes(ctx, r, repoURL, ref, auth)
	if err != nil || tip.IsZero() {
		return nil, "", err
	}
	c2, err := r.repo.CommitObject(tip)
	if err != nil {
		return nil, "", err
	}
	tree, err := c2.Tree()
	if err != nil {
		return nil, "", err
	}
	note, _, err = readNote(r.repo, tree, commit)
	return note, tip.String(), err
}

// EachNote fetches the notes reference and calls fn with every annotated commit and its
// note, in no particular order, at most MaxNotes of them and MaxNotesBytes in all. A note
// over MaxNoteBytes is given as nil with the error saying so, and the walk goes on: one
// hostile note does not hide the others.
func (c *Cache) EachNote(ctx context.Context, repoURL string, auth *Auth, ref string, fn func(commit string, note []byte, err error) error) error {
	if err := c.checkNote(repoURL, ref, strings.Repeat("0", 40)); err != nil {
		return err
	}
	r, err := c.repository(repoURL, auth)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	tip, err := c.fetchNotes(ctx, r, repoURL, ref, auth)
	if err != nil || tip.IsZero() {
		return err
	}
	commit, err := r.repo.CommitObject(tip)
	if err != nil {
		return err
	}
	tree, err := commit.Tree()
	if err != nil {
		return err
	}
	seen, read := 0, 0
	var walk func(t *object.Tree, prefix string) error
	walk = func(t *object.Tree, prefix string) error {
		for _, e := range t.Entries {
			name := prefix + e.Name
			switch {
			case e.Mode == filemode.Dir && len(e.Name) == 2 && isHexString(e.Name) && len(name) < 40:
				sub, err := r.repo.TreeObject(e.Hash)
				if err != nil {
					return err
				}
				if err := walk(sub, name); err != nil {
					return err
				}
			case e.Mode.IsFile() && len(name) == 40 && isHexString(name):
				if seen++; seen > MaxNotes {
					return fmt.Errorf("%w: the notes reference %s holds more than %d notes", ErrTooLarge, ref, MaxNotes)
				}
				note, err := readBlob(r.repo, e.Hash)
				if read += len(note); read > MaxNotesBytes {
					return fmt.Errorf("%w: the notes under %s hold more than %s", ErrTooLarge, ref, formatBytes(MaxNotesBytes))
				}
				if err := fn(name, note, err); err != nil {
					return err
				}
			}
			// Anything else is not a note (git notes keeps such entries, and so do we).
		}
		return nil
	}
	return walk(tree, "")
}

// fetchNotes brings the notes reference into the store and returns its commit, zero when
// the remote has no such reference yet.
func (c *Cache) fetchNotes(ctx context.Context, r *repository, repoURL, ref string, auth *Auth) (plumbing.Hash, error) {
	c.mu.Lock()
	c.stats.Fetches++
	c.mu.Unlock()
	local := fetchedNotes(ref)
	op := c.remote(ctx)
	defer op.cancel()
	remote := gogit.NewRemote(r.repo.Storer, &config.RemoteConfig{Name: gogit.DefaultRemoteName, URLs: []string{repoURL}})
	err := remote.FetchContext(op.ctx, &gogit.FetchOptions{
		RemoteURL:    repoURL,
		RefSpecs:     []config.RefSpec{config.RefSpec(fmt.Sprintf("+%s:%s", ref, local))},
		Auth:         authMethod(auth),
		Tags:         gogit.NoTags,
		Force:        true,
		ProxyOptions: op.proxyFor(repoURL),
	})
	switch {
	case errors.Is(err, gogit.NoMatchingRefSpecError{}):
		// No notes yet (or someone deleted them): the next write starts the chain.
		_ = r.repo.Storer.RemoveReference(local)
		return plumbing.ZeroHash, nil
	case err != nil && !errors.Is(err, gogit.NoErrAlreadyUpToDate):
		return plumbing.ZeroHash, fmt.Errorf("fetching %s from %s: %w", ref, Redact(repoURL), op.err(err))
	}
	got, err := r.repo.Storer.Reference(local)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("reading the fetched %s: %w", ref, err)
	}
	return got.Hash(), nil
}

// fetchedNotes is where the store keeps the remote's notes reference.
func fetchedNotes(ref string) plumbing.ReferenceName {
	return plumbing.ReferenceName("refs/immutable-release/notes/" + strings.TrimPrefix(ref, "refs/notes/"))
}

// readNote finds the note on commit in a notes tree, at the root or under fan-out
// folders, and returns it with its path; nil and nil when there is none.
func readNote(repo *gogit.Repository, tree *object.Tree, commit string) ([]byte, []string, error) {
	var at []string
	rest := commit
	for t := tree; t != nil && rest != ""; {
		var next *object.Tree
		for _, e := range t.Entries {
			switch {
			case e.Name == rest && e.Mode.IsFile():
				note, err := readBlob(repo, e.Hash)
				if err != nil {
					return nil, nil, fmt.Errorf("the note on %s: %w", short(commit), err)
				}
				return note, append(at, e.Name), nil
			case e.Name == rest[:min(2, len(rest))] && e.Mode == filemode.Dir && len(rest) > 2:
				sub, err := repo.TreeObject(e.Hash)
				if err != nil {
					return nil, nil, err
				}
				next = sub
			}
		}
		if next == nil {
			break
		}
		at = append(at, rest[:2])
		rest = rest[2:]
		t = next
	}
	return nil, nil, nil
}

// readBlob reads a note, refusing one over MaxNoteBytes before reading it.
func readBlob(repo *gogit.Repository, h plumbing.Hash) ([]byte, error) {
	blob, err := repo.BlobObject(h)
	if err != nil {
		return nil, err
	}
	if blob.Size > MaxNoteBytes {
		return nil, fmt.Errorf("%w: the note holds %d bytes, more than %s", ErrTooLarge, blob.Size, formatBytes(MaxNoteBytes))
	}
	rd, err := blob.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(io.LimitReader(rd, MaxNoteBytes+1))
}

// checkNote refuses a URL, notes reference or commit the operator must not use, before
// anything is sent: the reference goes into refspecs.
func (c *Cache) checkNote(repoURL, ref, commit string) error {
	if err := CheckURL(repoURL, c.AllowFileURLs); err != nil {
		return err
	}
	if err := ValidateNotesRef(ref); err != nil {
		return err
	}
	if len(commit) != 40 || !isHexString(commit) {
		return fmt.Errorf("%w: commit %q is not a full SHA-1 in lower-case hex", ErrInvalidReference, commit)
	}
	return nil
}

func isHexString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
