package git

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// node is one entry of a tree a hostile server serves: a file (content), a symbolic link
// (mode Symlink, content is the target) or a folder (children).
type node struct {
	name     string
	mode     filemode.FileMode
	content  string
	children []node
}

func file(name, content string) node {
	return node{name: name, mode: filemode.Regular, content: content}
}
func link(name, target string) node { return node{name: name, mode: filemode.Symlink, content: target} }
func folder(name string, children ...node) node {
	return node{name: name, mode: filemode.Dir, children: children}
}

// craftCommit writes, into the bare repository at bare, a commit whose tree is exactly
// entries (names as given: no validation, as a hostile server would) on top of parent
// (empty for a root commit), and points branch at it. Git's own tools refuse to make most
// of these trees; go-git's encoder writes whatever it is given.
func craftCommit(t *testing.T, bare, branch, parent string, entries ...node) string {
	t.Helper()
	repo, err := gogit.PlainOpen(bare)
	must(t, err)
	tree := writeNodes(t, repo.Storer, entries)
	sig := object.Signature{Name: "Mallory", Email: "mallory@example.com", When: time.Now()}
	c := &object.Commit{Author: sig, Committer: sig, Message: "Hostile tree\n", TreeHash: tree}
	if parent != "" {
		c.ParentHashes = []plumbing.Hash{plumbing.NewHash(parent)}
	}
	obj := repo.Storer.NewEncodedObject()
	must(t, c.Encode(obj))
	hash, err := repo.Storer.SetEncodedObject(obj)
	must(t, err)
	must(t, repo.Storer.SetReference(plumbing.NewHashReference(plumbing.NewBranchReferenceName(branch), hash)))
	return hash.String()
}

func writeNodes(t *testing.T, s storer.EncodedObjectStorer, nodes []node) plumbing.Hash {
	t.Helper()
	var entries []object.TreeEntry
	for _, n := range nodes {
		var h plumbing.Hash
		if n.mode == filemode.Dir {
			h = writeNodes(t, s, n.children)
		} else {
			obj := s.NewEncodedObject()
			obj.SetType(plumbing.BlobObject)
			w, err := obj.Writer()
			must(t, err)
			_, err = w.Write([]byte(n.content))
			must(t, err)
			must(t, w.Close())
			h, err = s.SetEncodedObject(obj)
			must(t, err)
		}
		entries = append(entries, object.TreeEntry{Name: n.name, Mode: n.mode, Hash: h})
	}
	sort.Stable(object.TreeEntrySorter(entries))
	obj := s.NewEncodedObject()
	must(t, (&object.Tree{Entries: entries}).Encode(obj))
	h, err := s.SetEncodedObject(obj)
	must(t, err)
	return h
}

// snapshot describes every file under root except those under skip (a folder the test
// expects to change), for a before and after comparison.
func snapshot(t *testing.T, root, skip string) string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(root, p)
		line := rel + " " + info.Mode().String()
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += " " + string(data)
		}
		out = append(out, line)
		return nil
	})
	must(t, err)
	sort.Strings(out)
	b := ""
	for _, l := range out {
		b += l + "\n"
	}
	return b
}
