package manifest

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	kfilesys "github.com/fluxcd/pkg/kustomize/filesys"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// errReadOnly answers every write: building never writes, so a write is a kustomize feature
// this package has not reviewed, and it must not land in the checkout.
var errReadOnly = errors.New("kustomize may not write while building a release")

// kustomizeFS is the file system kustomize gets. Below it, fluxcd's secure file system keeps
// every path inside the repository, symlinks resolved. On top, it enforces the limits on every
// byte kustomize reads.
type kustomizeFS struct {
	filesys.FileSystem
	realRoot string
	limits   Limits
	read     int64
	// refused is the first refusal. kustomize wraps or swallows the errors it gets from a file
	// system, so the build reports this one instead, and fails even if kustomize carried on.
	refused *Error
}

func newKustomizeFS(realRoot string, limits Limits) (*kustomizeFS, error) {
	k := &kustomizeFS{realRoot: realRoot, limits: limits}
	var err error
	k.FileSystem, err = kfilesys.MakeFsOnDiskSecure(realRoot)
	if err != nil {
		return nil, fmt.Errorf("confining kustomize to the repository: %w", err)
	}
	return k, nil
}

// name is how problems name a file: relative to the repository.
func (k *kustomizeFS) name(path string) string {
	if rel, err := filepath.Rel(k.realRoot, path); err == nil && within(k.realRoot, path) {
		return filepath.ToSlash(rel)
	}
	return path
}

func (k *kustomizeFS) refuse(reason string, p ...Problem) error {
	if k.refused == nil {
		k.refused = newError(reason, p...)
	}
	return k.refused
}

// ReadFile reads within MaxFileSize per file and MaxTotalSize for the build. A file read twice
// counts twice: kustomize reads a base again for every overlay that names it, and that is how
// a small repository makes it do a great deal of work.
func (k *kustomizeFS) ReadFile(path string) ([]byte, error) {
	if k.refused != nil {
		return nil, k.refused
	}
	f, err := k.open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, k.limits.MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > k.limits.MaxFileSize {
		return nil, k.refuse(ReasonInvalidManifest, Problem{File: k.name(path), Message: fmt.Sprintf("file is over the limit of %d bytes", k.limits.MaxFileSize)})
	}
	return data, nil
}

// Open is not used by kustomize to build; it is held to the limits all the same.
func (k *kustomizeFS) Open(path string) (filesys.File, error) {
	if k.refused != nil {
		return nil, k.refused
	}
	return k.open(path)
}

// open opens a regular file and charges its size to the build before anything is read.
func (k *kustomizeFS) open(path string) (filesys.File, error) {
	f, err := k.FileSystem.Open(path)
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	switch {
	case info.IsDir():
		f.Close()
		return nil, fmt.Errorf("reading %s: is a directory", path)
	case !info.Mode().IsRegular():
		f.Close()
		return nil, fmt.Errorf("reading %s: not a regular file", path)
	case info.Size() > k.limits.MaxFileSize:
		f.Close()
		return nil, k.refuse(ReasonInvalidManifest, Problem{File: k.name(path), Message: fmt.Sprintf("file is %d bytes, over the limit of %d bytes", info.Size(), k.limits.MaxFileSize)})
	}
	k.read += info.Size()
	if k.read > k.limits.MaxTotalSize {
		f.Close()
		return nil, k.refuse(ReasonInvalidManifest, Problem{File: k.name(path), Message: fmt.Sprintf("kustomize read more than the limit of %d bytes in all (a file counts again each time a kustomization loads it)", k.limits.MaxTotalSize)})
	}
	return f, nil
}

func (k *kustomizeFS) Create(string) (filesys.File, error) { return nil, errReadOnly }
func (k *kustomizeFS) Mkdir(string) error                  { return errReadOnly }
func (k *kustomizeFS) MkdirAll(string) error               { return errReadOnly }
func (k *kustomizeFS) WriteFile(string, []byte) error      { return errReadOnly }

func (k *kustomizeFS) RemoveAll(string) error { return errReadOnly }
