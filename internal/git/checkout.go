package git

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// checkoutTree writes the tree of commit c into dir. A push usually changes a few files of a
// large repository, so when an idle checkout of another commit exists it is moved to dir and
// only the files that differ are written: a thousand releases in one repository cost a
// few files per push, not a thousand folders. Called with r.mu held.
func (r *repository) checkoutTree(c *object.Commit, dir string, limits Limits) (*checkout, error) {
	var (
		reuse    string
		reuseUse *checkout
	)
	for hash, co := range r.checkouts {
		if co.users == 0 && (reuseUse == nil || co.lastUse.After(reuseUse.lastUse)) {
			reuse, reuseUse = hash, co
		}
	}
	if reuseUse != nil {
		if from, err := r.repo.CommitObject(plumbing.NewHash(reuse)); err == nil {
			delete(r.checkouts, reuse)
			used, err := updateTree(r.repo, from, c, reuseUse, dir, limits)
			if err == nil {
				return &checkout{dir: dir, used: used}, nil
			}
			if errors.Is(err, ErrUnsafeTree) {
				// A full checkout would walk the same names.
				return nil, err
			}
			// Whatever else went wrong (a folder that became a file, a count that went
			// over the limit before a removal), a full checkout is right.
			_ = os.RemoveAll(reuseUse.dir)
		}
	}
	used, err := writeTree(r.repo, c, dir, limits)
	if err != nil {
		return nil, err
	}
	return &checkout{dir: dir, used: used}, nil
}

// updateTree moves the checkout of commit from to dir and brings it to the tree of commit
// to. On failure the old checkout is gone and dir is not written.
func updateTree(repo *gogit.Repository, from, to *object.Commit, old *checkout, dir string, limits Limits) (usage, error) {
	fromTree, err := readTree(repo, from.TreeHash, "")
	if err != nil {
		return usage{}, err
	}
	toTree, err := readTree(repo, to.TreeHash, "")
	if err != nil {
		return usage{}, err
	}
	if filepath.Dir(old.dir) != filepath.Dir(dir) {
		return usage{}, fmt.Errorf("checkouts %s and %s are not in one folder", old.dir, dir)
	}
	var used usage
	err = intoPlace(dir, func(parent *os.Root, tmp string) error {
		if err := parent.Rename(filepath.Base(old.dir), tmp); err != nil {
			return err
		}
		root, err := parent.OpenRoot(tmp)
		if err != nil {
			return err
		}
		defer root.Close()
		w := &treeWriter{repo: repo, root: root, limits: limits, used: old.used}
		if err := w.syncTree(fromTree, toTree, "", 0); err != nil {
			return err
		}
		used = w.used
		return nil
	})
	return used, err
}

// writeTree writes the commit's tree into dir and returns what it holds.
func writeTree(repo *gogit.Repository, c *object.Commit, dir string, limits Limits) (usage, error) {
	tree, err := readTree(repo, c.TreeHash, "")
	if err != nil {
		return usage{}, err
	}
	var used usage
	err = intoPlace(dir, func(parent *os.Root, tmp string) error {
		if err := parent.Mkdir(tmp, 0o755); err != nil {
			return err
		}
		root, err := parent.OpenRoot(tmp)
		if err != nil {
			return err
		}
		defer root.Close()
		w := &treeWriter{repo: repo, root: root, limits: limits}
		if err := w.writeTree(tree, "", 0); err != nil {
			return err
		}
		used = w.used
		return nil
	})
	return used, err
}

// intoPlace has fill make a tree in a temporary folder beside dir, named tmp in parent,
// and renames it to dir at the end, so that a crash or a refused tree never leaves a
// half-written tree under the final name.
func intoPlace(dir string, fill func(parent *os.Root, tmp string) error) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	parent, err := os.OpenRoot(filepath.Dir(dir))
	if err != nil {
		return err
	}
	defer parent.Close()
	name := filepath.Base(dir)
	tmp := name + ".tmp"
	if err := parent.RemoveAll(tmp); err != nil {
		return err
	}
	if err := fill(parent, tmp); err != nil {
		_ = parent.RemoveAll(tmp)
		return err
	}
	if err := parent.RemoveAll(name); err != nil {
		return err
	}
	return parent.Rename(tmp, name)
}

// treeWriter writes the trees of one repository into one checkout. Every write goes
// through root, so that nothing reaches out of the checkout even through a link, and every
// entry is checked before it is written: the names are the repository's, that is a
// tenant's, and the server's. It walks trees itself, entry by entry, to see the names as
// stored.
type treeWriter struct {
	repo   *gogit.Repository
	root   *os.Root
	limits Limits
	used   usage
}

// readTree reads the tree hash found at p; a tree Git could not have written is unsafe.
func readTree(repo *gogit.Repository, hash plumbing.Hash, p string) (*object.Tree, error) {
	tree, err := repo.TreeObject(hash)
	if errors.Is(err, object.ErrMalformedTree) {
		return nil, unsafeEntry(p, fmt.Sprintf("is a malformed tree (%v)", err))
	}
	if err != nil {
		return nil, fmt.Errorf("reading the tree at %q: %w", p, err)
	}
	return tree, nil
}

// checkNames refuses a tree with an unsafe name or a name twice: a link and a folder of the
// same name would have the folder's files written through the link.
func checkNames(t *object.Tree, dir string) error {
	seen := make(map[string]struct{}, len(t.Entries))
	for _, e := range t.Entries {
		p := join(dir, e.Name)
		if why := entryNameProblem(e.Name); why != "" {
			return unsafeEntry(p, why)
		}
		if _, dup := seen[e.Name]; dup {
			return unsafeEntry(p, "appears twice in one folder")
		}
		seen[e.Name] = struct{}{}
	}
	return nil
}

// join names an entry of the folder dir, both slash-separated from the checkout's root.
// Names are checked, so no cleaning is wanted: it would hide a "..".
func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// writeTree writes the entries of t into the folder dir, depth folders below the root.
func (w *treeWriter) writeTree(t *object.Tree, dir string, depth int) error {
	if err := checkNames(t, dir); err != nil {
		return err
	}
	for _, e := range t.Entries {
		if err := w.writeEntry(e, join(dir, e.Name), depth); err != nil {
			return err
		}
	}
	return nil
}

// writeEntry writes e at p, a path that does not exist yet: files are created exclusively,
// so that nothing already there (a link above all) is ever opened.
func (w *treeWriter) writeEntry(e object.TreeEntry, p string, depth int) error {
	switch e.Mode {
	case filemode.Submodule:
		// Not checked out: the operator reads one repository.
		return nil
	case filemode.Dir:
		if err := w.count(p, 0); err != nil {
			return err
		}
		sub, err := readTree(w.repo, e.Hash, p)
		if err != nil {
			return err
		}
		if err := w.root.Mkdir(p, 0o755); err != nil {
			return err
		}
		return w.writeTree(sub, p, depth+1)
	}
	blob, err := w.repo.BlobObject(e.Hash)
	if err != nil {
		return fmt.Errorf("reading %q: %w", p, err)
	}
	// Counted before it is read: the size is known from the object's header.
	if err := w.count(p, blob.Size); err != nil {
		return err
	}
	rd, err := blob.Reader()
	if err != nil {
		return err
	}
	defer rd.Close()
	if e.Mode == filemode.Symlink {
		target, err := io.ReadAll(io.LimitReader(rd, blob.Size))
		if err != nil {
			return err
		}
		if err := checkLinkTarget(depth, string(target)); err != nil {
			return unsafeEntry(p, err.Error())
		}
		// Written as a link, never resolved here.
		return w.root.Symlink(string(target), p)
	}
	f, err := w.root.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, io.LimitReader(rd, blob.Size)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// count adds an entry of size bytes at p to what the checkout holds.
func (w *treeWriter) count(p string, size int64) error {
	w.used.files++
	w.used.bytes += size
	return w.limits.check(w.used, p)
}

// syncTree brings the folder dir, a checkout of tree from, to tree to. Only the trees whose
// hashes differ are read: a change to one file among thousands reads the trees on its
// path. Trees whose hash is unchanged were checked when they were first written.
func (w *treeWriter) syncTree(from, to *object.Tree, dir string, depth int) error {
	if err := checkNames(to, dir); err != nil {
		return err
	}
	next := make(map[string]struct{}, len(to.Entries))
	for _, e := range to.Entries {
		next[e.Name] = struct{}{}
	}
	old := make(map[string]object.TreeEntry, len(from.Entries))
	for _, e := range from.Entries {
		if _, ok := next[e.Name]; ok {
			old[e.Name] = e
			continue
		}
		// Gone from Git, folders included (Git has no empty folders). Removed first, so
		// that a rename is never counted twice against the limits.
		if err := w.remove(e, join(dir, e.Name)); err != nil {
			return err
		}
	}
	for _, e := range to.Entries {
		p := join(dir, e.Name)
		was, had := old[e.Name]
		switch {
		case had && was.Hash == e.Hash && was.Mode == e.Mode:
			continue
		case had && was.Mode == filemode.Dir && e.Mode == filemode.Dir:
			// The folder on disk must be one this code made, not a link that took its place.
			if info, err := w.root.Lstat(p); err != nil || !info.IsDir() {
				return fmt.Errorf("the checkout's %q is not a folder", p)
			}
			fromSub, err := readTree(w.repo, was.Hash, p)
			if err != nil {
				return err
			}
			toSub, err := readTree(w.repo, e.Hash, p)
			if err != nil {
				return err
			}
			if err := w.syncTree(fromSub, toSub, p, depth+1); err != nil {
				return err
			}
			continue
		case had:
			if err := w.remove(was, p); err != nil {
				return err
			}
		}
		if err := w.writeEntry(e, p, depth); err != nil {
			return err
		}
	}
	return nil
}

// remove deletes the entry e at p (a link itself, never what it points at) and takes it
// off what the checkout holds.
func (w *treeWriter) remove(e object.TreeEntry, p string) error {
	u, err := w.measure(e, p)
	if err != nil {
		return err
	}
	w.used.bytes -= u.bytes
	w.used.files -= u.files
	return w.root.RemoveAll(p)
}

// measure is what the entry e at p counts for in a checkout.
func (w *treeWriter) measure(e object.TreeEntry, p string) (usage, error) {
	switch e.Mode {
	case filemode.Submodule:
		return usage{}, nil
	case filemode.Dir:
		t, err := readTree(w.repo, e.Hash, p)
		if err != nil {
			return usage{}, err
		}
		u := usage{files: 1}
		for _, sub := range t.Entries {
			su, err := w.measure(sub, join(p, sub.Name))
			if err != nil {
				return usage{}, err
			}
			u.bytes += su.bytes
			u.files += su.files
		}
		return u, nil
	}
	size, err := w.repo.Storer.EncodedObjectSize(e.Hash)
	if err != nil {
		return usage{}, fmt.Errorf("reading %q: %w", p, err)
	}
	return usage{bytes: size, files: 1}, nil
}
