package git

import (
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"

	"github.com/immutable-release/operator/internal/merge3"
)

// ErrRevertConflict matches a *ConflictError with errors.Is.
var ErrRevertConflict = errors.New("the revert conflicts with later changes on the branch")

// ConflictError says that the revert cannot be made without guessing: a later commit on the
// branch changed what a reverted commit changed, at the same place. Nothing was pushed.
type ConflictError struct {
	// Head is the branch head the revert was tried on.
	Head string
	// Files are the conflicts, in the order the commits were reverted (newest first).
	Files []FileConflict
}

// FileConflict is one file whose change by a reverted commit cannot be undone cleanly.
type FileConflict struct {
	// Path is relative to the repository root.
	Path string
	// Reverted is the commit whose change to Path could not be undone.
	Reverted Commit
	// ChangedBy are the later commits on the branch, not reverted, that changed Path.
	ChangedBy []Commit
	// Detail says where, in the branch's version of the file, or how the file conflicts.
	Detail string
}

func (e *ConflictError) Error() string {
	var parts []string
	for _, f := range e.Files {
		with := ""
		if len(f.ChangedBy) > 0 {
			var by []string
			for _, c := range f.ChangedBy {
				by = append(by, fmt.Sprintf("%s (%q)", short(c.Hash), c.Subject))
			}
			with = " with " + strings.Join(by, ", ")
		}
		parts = append(parts, fmt.Sprintf("reverting %s (%q) conflicts%s in %s (%s)", short(f.Reverted.Hash), f.Reverted.Subject, with, f.Path, f.Detail))
	}
	return strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrRevertConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrRevertConflict }

// Commits are the hashes of the reverted commits in conflict, without repeats.
func (e *ConflictError) Commits() []string {
	var out []string
	seen := map[string]bool{}
	for _, f := range e.Files {
		if !seen[f.Reverted.Hash] {
			seen[f.Reverted.Hash] = true
			out = append(out, f.Reverted.Hash)
		}
	}
	return out
}

// entry is a file of a tree: its mode and blob (or submodule commit).
type entry struct {
	mode filemode.FileMode
	hash plumbing.Hash
}

// reverter undoes commits' changes under one path, as git revert does, without a worktree.
type reverter struct {
	repo   *gogit.Repository
	prefix string
}

// revert applies, onto the files under the path at head, the inverse of each commit's
// changes (newest first), the way `git revert -m 1` does: a three-way merge per file with
// the commit as base, the files so far as ours, and the commit's first parent as theirs.
// later are the commits between head and the newest reverted one, for conflict reports.
func (r *reverter) revert(head *object.Commit, commits, later []*object.Commit) (plumbing.Hash, []FileConflict, error) {
	ours, err := r.entries(head)
	if err != nil {
		return plumbing.ZeroHash, nil, err
	}
	var conflicts []FileConflict
	conflicted := map[string]bool{}
	for i, c := range commits {
		base, err := r.entries(c)
		if err != nil {
			return plumbing.ZeroHash, nil, err
		}
		theirs := map[string]entry{}
		p, err := firstParent(r.repo, c)
		if err != nil {
			return plumbing.ZeroHash, nil, err
		}
		if p != nil {
			if theirs, err = r.entries(p); err != nil {
				return plumbing.ZeroHash, nil, err
			}
		}
		for _, name := range unionNames(base, theirs) {
			if conflicted[name] {
				continue
			}
			b, bok := base[name]
			t, tok := theirs[name]
			if bok == tok && b == t {
				continue
			}
			o, ook := ours[name]
			detail, err := r.mergeFile(ours, name, b, bok, o, ook, t, tok)
			if err != nil {
				return plumbing.ZeroHash, nil, err
			}
			if detail != "" {
				conflicted[name] = true
				// The newer reverted commits were undone first; what stands in the way is
				// a later commit that is not reverted.
				newer := append(append([]*object.Commit(nil), later...), commits[:i]...)
				changedBy, err := r.changedBy(name, newer, commits)
				if err != nil {
					return plumbing.ZeroHash, nil, err
				}
				conflicts = append(conflicts, FileConflict{Path: name, Reverted: describe(c), ChangedBy: changedBy, Detail: detail})
			}
		}
	}
	if len(conflicts) > 0 {
		return plumbing.ZeroHash, conflicts, nil
	}
	tree, err := r.write(head, ours)
	return tree, nil, err
}

// mergeFile puts into ours the result of undoing base→theirs on ours, or returns what
// conflicts. Present flags say whether the file exists in each version.
func (r *reverter) mergeFile(ours map[string]entry, name string, b entry, bok bool, o entry, ook bool, t entry, tok bool) (string, error) {
	switch {
	case ook && tok && o == t:
		return "", nil // the branch already has it
	case !ook && !tok:
		return "", nil // already gone
	case !ook && !bok: // the commit deleted it, and the branch has not brought it back
		ours[name] = t
		return "", nil
	case bok && ook && o == b: // unchanged since: take the parent's version
		if tok {
			ours[name] = t
		} else {
			delete(ours, name)
		}
		return "", nil
	case bok && !tok:
		return "changed on the branch since; the revert would delete it", nil
	case bok && !ook:
		return "deleted on the branch since; the revert would change it", nil
	}
	// Both sides have a version that differs: merge contents and modes.
	mode, ok := mergeMode(b.mode, bok, o.mode, t.mode)
	if !ok {
		return fmt.Sprintf("file mode %s on the branch, %s before the commit", o.mode, t.mode), nil
	}
	if !mergeable(o.mode) || !mergeable(t.mode) || (bok && !mergeable(b.mode)) {
		return "not a regular file on both sides", nil
	}
	var baseText []byte
	if bok {
		var err error
		if baseText, err = r.blob(b.hash); err != nil {
			return "", err
		}
	}
	oursText, err := r.blob(o.hash)
	if err != nil {
		return "", err
	}
	theirsText, err := r.blob(t.hash)
	if err != nil {
		return "", err
	}
	res := merge3.Merge(baseText, oursText, theirsText)
	if !res.Clean() {
		var where []string
		for _, c := range res.Conflicts {
			where = append(where, c.Ours.String())
		}
		detail := strings.Join(where, ", ") + " of the branch's version"
		if !bok {
			detail = "added on the branch since with other content"
		}
		return detail, nil
	}
	hash, err := r.writeBlob(res.Text)
	if err != nil {
		return "", err
	}
	ours[name] = entry{mode: mode, hash: hash}
	return "", nil
}

// mergeMode merges file modes three ways; without a base, both sides must agree.
func mergeMode(base filemode.FileMode, hasBase bool, ours, theirs filemode.FileMode) (filemode.FileMode, bool) {
	switch {
	case ours == theirs:
		return ours, true
	case hasBase && ours == base:
		return theirs, true
	case hasBase && theirs == base:
		return ours, true
	}
	return 0, false
}

func mergeable(m filemode.FileMode) bool { return m.IsFile() && m != filemode.Symlink }

// changedBy lists the commits of candidates, other than those reverted, that changed name.
func (r *reverter) changedBy(name string, candidates, reverted []*object.Commit) ([]Commit, error) {
	skip := map[plumbing.Hash]bool{}
	for _, c := range reverted {
		skip[c.Hash] = true
	}
	var out []Commit
	for _, c := range candidates {
		if skip[c.Hash] {
			continue
		}
		changed, err := touches(r.repo, c, name)
		if err != nil {
			return nil, err
		}
		if changed {
			out = append(out, describe(c))
		}
	}
	return out, nil
}

// entries lists the files under the path in c's tree, by their path from the root.
func (r *reverter) entries(c *object.Commit) (map[string]entry, error) {
	out := map[string]entry{}
	root, err := c.Tree()
	if err != nil {
		return nil, err
	}
	t := root
	if r.prefix != "" {
		e, err := root.FindEntry(r.prefix)
		if errors.Is(err, object.ErrEntryNotFound) || errors.Is(err, object.ErrDirectoryNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if e.Mode != filemode.Dir {
			out[r.prefix] = entry{mode: e.Mode, hash: e.Hash}
			return out, nil
		}
		if t, err = root.Tree(r.prefix); err != nil {
			return nil, err
		}
	}
	w := object.NewTreeWalker(t, true, nil)
	defer w.Close()
	for {
		name, e, err := w.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if e.Mode != filemode.Dir {
			out[path.Join(r.prefix, name)] = entry{mode: e.Mode, hash: e.Hash}
		}
	}
}

func (r *reverter) blob(h plumbing.Hash) ([]byte, error) {
	b, err := r.repo.BlobObject(h)
	if err != nil {
		return nil, err
	}
	rd, err := b.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(rd)
}

func (r *reverter) writeBlob(content []byte) (plumbing.Hash, error) {
	obj := r.repo.Storer.NewEncodedObject()
	obj.SetType(plumbing.BlobObject)
	w, err := obj.Writer()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if _, err := w.Write(content); err != nil {
		return plumbing.ZeroHash, err
	}
	if err := w.Close(); err != nil {
		return plumbing.ZeroHash, err
	}
	return r.repo.Storer.SetEncodedObject(obj)
}

// write stores the tree of head with the files under the path replaced by files, and
// returns its hash. Everything outside the path is head's, untouched.
func (r *reverter) write(head *object.Commit, files map[string]entry) (plumbing.Hash, error) {
	s := r.repo.Storer
	if r.prefix == "" {
		return buildTree(s, files)
	}
	var replacement *object.TreeEntry
	if e, ok := files[r.prefix]; ok {
		replacement = &object.TreeEntry{Mode: e.mode, Hash: e.hash}
	} else if len(files) > 0 {
		rel := map[string]entry{}
		for name, e := range files {
			rel[strings.TrimPrefix(name, r.prefix+"/")] = e
		}
		h, err := buildTree(s, rel)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		replacement = &object.TreeEntry{Mode: filemode.Dir, Hash: h}
	}
	root, err := head.Tree()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	return spliceTree(s, root, strings.Split(r.prefix, "/"), replacement)
}

// buildTree writes the trees holding files (paths relative to the tree) and returns the
// top one's hash; an empty tree is written as such.
func buildTree(s storer.EncodedObjectStorer, files map[string]entry) (plumbing.Hash, error) {
	var entries []object.TreeEntry
	dirs := map[string]map[string]entry{}
	for name, e := range files {
		dir, rest, ok := strings.Cut(name, "/")
		if !ok {
			entries = append(entries, object.TreeEntry{Name: name, Mode: e.mode, Hash: e.hash})
			continue
		}
		if dirs[dir] == nil {
			dirs[dir] = map[string]entry{}
		}
		dirs[dir][rest] = e
	}
	for dir, sub := range dirs {
		if _, clash := files[dir]; clash {
			return plumbing.ZeroHash, fmt.Errorf("%s would be both a file and a folder", dir)
		}
		h, err := buildTree(s, sub)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		entries = append(entries, object.TreeEntry{Name: dir, Mode: filemode.Dir, Hash: h})
	}
	return storeTree(s, entries)
}

// spliceTree writes a copy of t with the entry at the path replaced, or removed when
// replacement is nil; folders left empty are removed, as git does.
func spliceTree(s storer.EncodedObjectStorer, t *object.Tree, at []string, replacement *object.TreeEntry) (plumbing.Hash, error) {
	var entries []object.TreeEntry
	found := false
	for _, e := range t.Entries {
		if e.Name != at[0] {
			entries = append(entries, e)
			continue
		}
		found = true
		var next *object.TreeEntry
		if len(at) == 1 {
			next = replacement
		} else {
			sub := &object.Tree{}
			if e.Mode == filemode.Dir {
				var err error
				if sub, err = object.GetTree(s, e.Hash); err != nil {
					return plumbing.ZeroHash, err
				}
			}
			h, err := spliceTree(s, sub, at[1:], replacement)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			if h != emptyTree {
				next = &object.TreeEntry{Mode: filemode.Dir, Hash: h}
			}
		}
		if next != nil {
			next.Name = e.Name
			entries = append(entries, *next)
		}
	}
	if !found && replacement != nil {
		next := *replacement
		if len(at) > 1 {
			h, err := spliceTree(s, &object.Tree{}, at[1:], replacement)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			next = object.TreeEntry{Mode: filemode.Dir, Hash: h}
		}
		next.Name = at[0]
		entries = append(entries, next)
	}
	return storeTree(s, entries)
}

// emptyTree is the hash of the tree with no entries.
var emptyTree = plumbing.NewHash("4b825dc642cb6eb9a060e54bf8d69288fbee4904")

// storeTree writes a tree with its entries in git's order: by name, a folder's name
// compared as if it ended with a slash.
func storeTree(s storer.EncodedObjectStorer, entries []object.TreeEntry) (plumbing.Hash, error) {
	key := func(e object.TreeEntry) string {
		if e.Mode == filemode.Dir {
			return e.Name + "/"
		}
		return e.Name
	}
	sort.Slice(entries, func(i, j int) bool { return key(entries[i]) < key(entries[j]) })
	obj := s.NewEncodedObject()
	if err := (&object.Tree{Entries: entries}).Encode(obj); err != nil {
		return plumbing.ZeroHash, err
	}
	return s.SetEncodedObject(obj)
}

func unionNames(a, b map[string]entry) []string {
	var names []string
	for n := range a {
		names = append(names, n)
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}
