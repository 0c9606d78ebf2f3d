package git

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
)

// TestCheckoutTreeIncremental: moving an idle checkout to another commit gives exactly the
// tree a full checkout writes, through adds, changes, deletions that empty a folder,
// symbolic links, and a file that becomes a folder and back.
func TestCheckoutTreeIncremental(t *testing.T) {
	work := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	write := func(files map[string]string) {
		for name, content := range files {
			if content == "" {
				_ = os.RemoveAll(filepath.Join(work, name))
			}
		}
		for name, content := range files {
			p := filepath.Join(work, name)
			if content == "" {
				continue
			}
			_ = os.RemoveAll(p)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if target, ok := strings.CutPrefix(content, "->"); ok {
				if err := os.Symlink(target, p); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	git("init", "-q", "-b", "main")
	steps := []map[string]string{
		{"apps/a/deployment.yaml": "a: 1\n", "apps/a/service.yaml": "s: 1\n", "apps/b/x.yaml": "x: 1\n", "current": "->apps/a", "top.yaml": "t: 1\n"},
		{"apps/a/deployment.yaml": "a: 2\n", "apps/b/x.yaml": "", "apps/c/new.yaml": "n: 1\n", "current": "->apps/c"},
		{"top.yaml": "", "apps/c/new.yaml": "", "apps/c": "now a file\n", "current": "plain\n"},
		{"apps/c": "", "apps/c/again.yaml": "again\n", "deep/er/still/f.yaml": "f\n"},
		{"deep/er/still/f.yaml": ""},
	}
	var commits []string
	for _, files := range steps {
		write(files)
		git("add", "-A")
		git("commit", "-q", "--allow-empty", "-m", "step")
		commits = append(commits, git("rev-parse", "HEAD"))
	}
	repo, err := gogit.PlainOpen(work)
	if err != nil {
		t.Fatal(err)
	}
	r := &repository{dir: t.TempDir(), repo: repo, checkouts: map[string]*checkout{}}
	var unchanged []uint64 // the inode of a file no step changes: moved, not written again
	for _, hash := range commits {
		c, err := repo.CommitObject(plumbing.NewHash(hash))
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(r.dir, "trees", hash)
		co, err := r.checkoutTree(c, dir, DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		r.checkouts[hash] = co
		if len(r.checkouts) != 1 {
			t.Fatalf("%d checkouts on disk, want the one moved forward", len(r.checkouts))
		}
		want := filepath.Join(t.TempDir(), "full")
		full, err := writeTree(repo, c, want, DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		if co.used != full {
			t.Fatalf("commit %s: the moved checkout counts %+v against the limits, a full checkout %+v", hash[:7], co.used, full)
		}
		if got, exp := listTree(t, dir), listTree(t, want); got != exp {
			t.Fatalf("commit %s: incremental checkout\n%s\nfull checkout\n%s", hash[:7], got, exp)
		}
		info, err := os.Stat(filepath.Join(dir, "apps/a/service.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		unchanged = append(unchanged, info.Sys().(*syscall.Stat_t).Ino)
	}
	if unchanged[1] != unchanged[0] {
		t.Errorf("the second commit was written out in full, not moved forward from the first")
	}
}

// listTree describes every entry under root: folders, files with their content, links with
// their target.
func listTree(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			b.WriteString(rel + " -> " + target + "\n")
		case info.IsDir():
			b.WriteString(rel + "/\n")
		default:
			data, _ := os.ReadFile(p)
			b.WriteString(rel + ": " + string(data))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
