package git

import (
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
func (r *repository) checkoutTree(c *object.Commit, dir string) error {
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
			if err := updateTree(r.repo, from, c, reuseUse.dir, dir); err == nil {
				return nil
			}
			// Whatever went wrong (a folder that became a file), a full checkout is right.
			_ = os.RemoveAll(reuseUse.dir)
		}
	}
	return writeTree(c, dir)
}

// updateTree moves the checkout of commit from, in fromDir, to dir and brings it to the tree
// of commit to. On failure fromDir is gone and dir is not written.
func updateTree(repo *gogit.Repository, from, to *object.Commit, fromDir, dir string) error {
	fromTree, err := from.Tree()
	if err != nil {
		return err
	}
	toTree, err := to.Tree()
	if err != nil {
		return err
	}
	return intoPlace(dir, func(tmp string) error {
		if err := os.Rename(fromDir, tmp); err != nil {
			return err
		}
		return syncTree(repo, tmp, fromTree, toTree)
	})
}

// syncTree brings dir, a checkout of tree from, to tree to. Only the trees whose hashes
// differ are read: a change to one file among thousands reads the trees on its path.
func syncTree(repo *gogit.Repository, dir string, from, to *object.Tree) error {
	old := make(map[string]object.TreeEntry, len(from.Entries))
	for _, e := range from.Entries {
		old[e.Name] = e
	}
	for _, e := range to.Entries {
		p := filepath.Join(dir, e.Name)
		was, had := old[e.Name]
		delete(old, e.Name)
		switch {
		case had && was.Hash == e.Hash && was.Mode == e.Mode:
			continue
		case had && was.Mode == filemode.Dir && e.Mode == filemode.Dir:
			fromSub, err := repo.TreeObject(was.Hash)
			if err != nil {
				return err
			}
			toSub, err := repo.TreeObject(e.Hash)
			if err != nil {
				return err
			}
			if err := syncTree(repo, p, fromSub, toSub); err != nil {
				return err
			}
			continue
		case had:
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
		switch e.Mode {
		case filemode.Submodule:
			// Not checked out, as in writeTree.
		case filemode.Dir:
			sub, err := repo.TreeObject(e.Hash)
			if err != nil {
				return err
			}
			if err := sub.Files().ForEach(func(f *object.File) error { return writeFile(p, f.Name, f) }); err != nil {
				return err
			}
		default:
			blob, err := repo.BlobObject(e.Hash)
			if err != nil {
				return err
			}
			if err := writeFile(dir, e.Name, object.NewFile(e.Name, e.Mode, blob)); err != nil {
				return err
			}
		}
	}
	// What is left is gone from Git, folders included (Git has no empty folders).
	for name := range old {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// writeTree writes the commit's tree into dir.
func writeTree(c *object.Commit, dir string) error {
	tree, err := c.Tree()
	if err != nil {
		return err
	}
	return intoPlace(dir, func(tmp string) error {
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return err
		}
		return tree.Files().ForEach(func(f *object.File) error { return writeFile(tmp, f.Name, f) })
	})
}

// intoPlace has fill make a tree in a temporary folder and renames it to dir at the end, so
// that a crash never leaves a half-written tree under the final name.
func intoPlace(dir string, fill func(tmp string) error) error {
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := fill(tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// writeFile writes f (a file or a symbolic link) at name, a slash-separated path under root.
func writeFile(root, name string, f *object.File) error {
	p := filepath.Join(root, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	rd, err := f.Reader()
	if err != nil {
		return err
	}
	defer rd.Close()
	if f.Mode == filemode.Symlink {
		target, err := io.ReadAll(rd)
		if err != nil {
			return err
		}
		return os.Symlink(string(target), p)
	}
	w, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, rd); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}
