//go:build linux || darwin

package manifest

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	. "github.com/onsi/gomega"
)

// openTrap makes a named pipe at path and returns a function that reports whether anything
// opened it to read. A regular file can be read without a trace; a pipe cannot be opened
// without its writer here knowing, so "refused" can be told apart from "read, then refused".
func openTrap(t *testing.T, path string) (opened func() bool) {
	t.Helper()
	must(t, syscall.Mkfifo(path, 0o644))
	var hit, released atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Blocks until a reader opens the pipe: the code under test, or the cleanup below.
		w, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		if !released.Load() {
			hit.Store(true)
			_, _ = w.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: manager-secret}\n")
		}
		_ = w.Close()
	}()
	t.Cleanup(func() {
		released.Store(true)
		if r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			<-done
			_ = r.Close()
		}
	})
	return hit.Load
}

// TestBuildKustomizeNeverReadsOutsideRepository links files and folders of a kustomization to
// a file outside the repository (as /etc/passwd or another tenant's checkout would be). Each
// build is refused, and the file outside is never opened: not by the scan, not by kustomize.
func TestBuildKustomizeNeverReadsOutsideRepository(t *testing.T) {
	tests := []struct {
		name  string
		files tree
		// link is made in the repository, pointing at the trap outside; linkDir makes it point
		// at a folder outside whose kustomization.yaml is the trap.
		link    string
		linkDir bool
		message string
	}{
		{name: "the kustomization file", files: tree{"app/cm.yaml": configMap}, link: "app/kustomization.yaml",
			message: "app/kustomization.yaml: symlink leads out of the repository"},
		{name: "a base's kustomization file", files: kust("resources: [../base]"), link: "base/kustomization.yaml",
			message: "base/kustomization.yaml: symlink leads out of the repository"},
		{name: "a resource", files: kust("resources: [cm.yaml, secret.yaml]"), link: "app/secret.yaml", message: "is not in or below"},
		{name: "a base folder", files: kust("resources: [cm.yaml, base]"), link: "app/base", linkDir: true, message: "is not in or below"},
		{name: "a component folder", files: kust("resources: [cm.yaml]\ncomponents: [comp]"), link: "app/comp", linkDir: true, message: "is not in or below"},
		{name: "a patch", files: kust("resources: [cm.yaml]\npatches: [{path: patch.yaml}]"), link: "app/patch.yaml", message: "is not in or below"},
		{name: "a generator's file", files: kust("configMapGenerator: [{name: c, files: [passwd]}]"), link: "app/passwd", message: "is not in or below"},
		{name: "a transformer configuration", files: kust("resources: [cm.yaml]\ntransformers: [t.yaml]"), link: "app/t.yaml", message: "is not in or below"},
		{name: "a chain of links", files: kust("resources: [cm.yaml, a.yaml]"), link: "app/b.yaml", message: "is not in or below"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			outside := t.TempDir()
			target := filepath.Join(outside, "secret.yaml")
			if tt.linkDir {
				target = filepath.Join(outside, "base")
				must(t, os.Mkdir(target, 0o755))
			}
			trap := filepath.Join(outside, "secret.yaml")
			if tt.linkDir {
				trap = filepath.Join(target, "kustomization.yaml")
			}
			opened := openTrap(t, trap)
			root := writeTree(t, tt.files)
			link := filepath.Join(root, filepath.FromSlash(tt.link))
			must(t, os.MkdirAll(filepath.Dir(link), 0o755))
			must(t, os.Symlink(target, link))
			if tt.name == "a chain of links" {
				must(t, os.Symlink(link, filepath.Join(root, "app", "a.yaml")))
			}

			objects, err := Build(root, "app", DefaultLimits)
			g.Expect(opened()).To(BeFalse(), "the file outside the repository was opened")
			g.Expect(objects).To(BeEmpty())
			g.Expect(reasonOf(err)).To(Equal(ReasonInvalidManifest), "error: %v", err)
			g.Expect(err.Error()).To(ContainSubstring(tt.message))
			g.Expect(err.Error()).NotTo(ContainSubstring("manager-secret"))
		})
	}
}
