package manifest

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	kfilesys "github.com/fluxcd/pkg/kustomize/filesys"
	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/immutable-release/operator/internal/decrypt"
)

// errReadOnly answers every write: building never writes, so a write is a kustomize feature
// this package has not reviewed, and it must not land in the checkout.
var errReadOnly = errors.New("kustomize may not write while building a release")

// kustomizeFS is the file system kustomize gets. Below it, fluxcd's secure file system keeps
// every path inside the repository, symlinks resolved. On top, it enforces the limits on every
// byte kustomize reads, and, unless remote bases are allowed, checks every kustomization and
// builtin generator or transformer configuration kustomize reads for entries it could fetch.
//
// That second check repeats kustomizationScan at the moment kustomize reads each file, because
// kustomize has no switch to turn its network off: krusty.Options has none, its HTTP client and
// its git cloner are fixed inside its loader, and neither goes through this file system. The
// scan may miss a kustomization; kustomize cannot act on one it has not read through here.
type kustomizeFS struct {
	filesys.FileSystem
	realRoot    string
	limits      Limits
	allowRemote bool
	cloneDirs   string
	read        int64
	// decryptor decrypts the SOPS files kustomize reads; decrypted names them.
	decryptor *decrypt.Decryptor
	decrypted []string
	// refused is the first refusal. kustomize wraps or swallows the errors it gets from a file
	// system, so the build reports this one instead, and fails even if kustomize carried on.
	refused *Error
}

func newKustomizeFS(realRoot string, limits Limits) (*kustomizeFS, error) {
	k := &kustomizeFS{realRoot: realRoot, limits: limits, allowRemote: limits.AllowRemoteBases}
	var err error
	if limits.AllowRemoteBases {
		// kustomize clones remote bases into os.TempDir()/kustomize-*, which must be readable.
		k.FileSystem, err = kfilesys.MakeFsOnDiskSecureBuild(realRoot)
		if err == nil {
			k.cloneDirs, err = kfilesys.TmpConfirmedDirPrefix()
		}
	} else {
		k.FileSystem, err = kfilesys.MakeFsOnDiskSecure(realRoot)
	}
	if err != nil {
		return nil, fmt.Errorf("confining kustomize to the repository: %w", err)
	}
	return k, nil
}

// name is how problems name a file: relative to the repository, or as kustomize passed it
// when it lies in a remote base's clone.
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
	plain, decrypted, err := decryptFile(k.decryptor, k.name(path), data, k.limits)
	if err != nil {
		return nil, k.refuse(ReasonDecryptionFailed, Problem{File: k.name(path), Message: err.Error()})
	}
	if decrypted {
		k.decrypted = append(k.decrypted, k.name(path))
		data = plain
	}
	if !k.allowRemote {
		if problems := k.remoteEntries(path, data); len(problems) > 0 {
			return nil, k.refuse(ReasonRemoteResourceRefused, problems...)
		}
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

// remoteEntries checks a file kustomize is about to use: as a kustomization if it has the name
// of one, otherwise for builtin generator and transformer configurations among its documents.
func (k *kustomizeFS) remoteEntries(path string, data []byte) []Problem {
	name := k.name(path)
	if slices.Contains(konfig.RecognizedKustomizationFileNames(), filepath.Base(path)) {
		return remoteEntries(name, data)
	}
	docs, err := yamlDocuments(data)
	if err != nil {
		// Not YAML kustomize could configure a plugin from: an env file, a file for a ConfigMap.
		return nil
	}
	var configs []any
	for _, d := range docs {
		if m, ok := d.(map[string]any); ok {
			if v, _ := m["apiVersion"].(string); strings.HasSuffix(v, konfig.BuiltinPluginApiVersion) || m["items"] != nil {
				configs = append(configs, d)
			}
		}
	}
	return remoteConfigEntries(name, "", configs)
}

func (k *kustomizeFS) Create(string) (filesys.File, error) { return nil, errReadOnly }
func (k *kustomizeFS) Mkdir(string) error                  { return errReadOnly }
func (k *kustomizeFS) MkdirAll(string) error               { return errReadOnly }
func (k *kustomizeFS) WriteFile(string, []byte) error      { return errReadOnly }

// RemoveAll only lets kustomize remove its clones of allowed remote bases.
func (k *kustomizeFS) RemoveAll(path string) error {
	if k.allowRemote && k.cloneDirs != "" && strings.HasPrefix(filepath.Clean(path), k.cloneDirs) {
		return k.FileSystem.RemoveAll(path)
	}
	return errReadOnly
}
