package manifest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"sigs.k8s.io/kustomize/api/types"
)

// kustomizationScan walks every kustomization reachable from the one being built, before
// kustomize runs, so that a remote entry is refused with its file and entry named rather than
// fetched. It reads through an os.Root, so a symlink cannot make it read outside the repository.
type kustomizationScan struct {
	root     *os.Root
	realRoot string
	limits   Limits
	visited  map[string]bool
	read     int64
	problems []Problem
	// configDirs are folders whose kustomize output configures generators, transformers or
	// validators, innermost first: what those configurations load is only known once built.
	configDirs []string
}

// scanKustomizations scans the kustomization in dir and every one it reaches through local
// resources, components, generators, transformers and validators. realRoot and dir have their
// symlinks resolved. It returns the configuration folders to build and check before the rest.
func scanKustomizations(realRoot, dir string, limits Limits) ([]string, error) {
	root, err := os.OpenRoot(realRoot)
	if err != nil {
		return nil, fmt.Errorf("opening repository: %w", err)
	}
	defer root.Close()
	s := &kustomizationScan{root: root, realRoot: realRoot, limits: limits, visited: map[string]bool{}}
	if err := s.walk(dir); err != nil {
		return nil, err
	}
	if len(s.problems) > 0 {
		return nil, newError(ReasonRemoteResourceRefused, s.problems...)
	}
	return s.configDirs, nil
}

func (s *kustomizationScan) walk(dir string) error {
	if s.visited[dir] {
		return nil
	}
	s.visited[dir] = true
	kf := kustomizationFile(dir)
	if kf == "" {
		// Not a kustomization: kustomize reports the folder it cannot build.
		return nil
	}
	name, data, err := s.readFile(filepath.Join(dir, kf))
	if err != nil {
		return err
	}
	var k types.Kustomization
	if k.Unmarshal(data) != nil {
		// kustomize decodes the file with this same function, so it refuses it too, in its words.
		return nil
	}
	for _, e := range kustomizationEntries(&k) {
		if err := s.entry(dir, name, e); err != nil {
			return err
		}
	}
	return nil
}

// entry checks one entry of the kustomization file name in dir, and follows it when it is a
// local kustomization or generator configuration.
func (s *kustomizationScan) entry(dir, name string, e pathEntry) error {
	if e.kind == entryPlugin {
		if docs, ok := inlinePluginConfig(e.value); ok {
			s.problems = append(s.problems, remoteConfigEntries(name, e.field+" (inline)", docs)...)
		}
	}
	if remoteEntry(e.value) {
		s.problems = append(s.problems, remoteProblem(name, e, false))
		return nil
	}
	local := e.value
	if !filepath.IsAbs(local) {
		local = filepath.Join(dir, local)
	}
	real, err := filepath.EvalSymlinks(local)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && e.kind != entryFile && hostLike(e.value) {
			s.problems = append(s.problems, remoteProblem(name, e, true))
		}
		return nil
	}
	if !within(s.realRoot, real) {
		// kustomize's file system refuses it when asked; nothing outside is read here.
		return nil
	}
	info, err := os.Stat(real)
	if err != nil || e.kind == entryFile {
		return nil
	}
	if info.IsDir() {
		if err := s.walk(real); err != nil {
			return err
		}
		if e.kind == entryPlugin && kustomizationFile(real) != "" && !slices.Contains(s.configDirs, real) {
			s.configDirs = append(s.configDirs, real)
		}
		return nil
	}
	if e.kind != entryPlugin {
		return nil
	}
	configName, data, err := s.readFile(real)
	if err != nil {
		return err
	}
	docs, err := yamlDocuments(data)
	if err != nil {
		// kustomize would read it with a YAML parser of the same family; what cannot be decoded
		// here cannot be checked, so it is refused rather than handed on.
		return newError(ReasonInvalidManifest, Problem{File: configName, Message: fmt.Sprintf("%s entry %q cannot be read as generator or transformer configuration: %v", e.field, e.value, err)})
	}
	s.problems = append(s.problems, remoteConfigEntries(configName, "", docs)...)
	return nil
}

// readFile reads p, a path inside the repository, within the size limits, and returns its
// name relative to the repository root.
func (s *kustomizationScan) readFile(p string) (string, []byte, error) {
	rel, err := filepath.Rel(s.realRoot, p)
	if err != nil {
		return "", nil, fmt.Errorf("naming %s: %w", p, err)
	}
	name := filepath.ToSlash(rel)
	if real, err := filepath.EvalSymlinks(p); err == nil && !within(s.realRoot, real) {
		return "", nil, newError(ReasonInvalidManifest, Problem{File: name, Message: "symlink leads out of the repository"})
	}
	f, err := s.root.Open(rel)
	if err != nil {
		return "", nil, newError(ReasonInvalidManifest, Problem{File: name, Message: "cannot be read inside the repository: " + err.Error()})
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if !info.Mode().IsRegular() {
		return "", nil, newError(ReasonInvalidManifest, Problem{File: name, Message: "is not a regular file"})
	}
	if info.Size() > s.limits.MaxFileSize {
		return "", nil, newError(ReasonInvalidManifest, Problem{File: name, Message: fmt.Sprintf("file is %d bytes, over the limit of %d bytes", info.Size(), s.limits.MaxFileSize)})
	}
	data, err := io.ReadAll(io.LimitReader(f, s.limits.MaxFileSize+1))
	if err != nil {
		return "", nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if int64(len(data)) > s.limits.MaxFileSize {
		return "", nil, newError(ReasonInvalidManifest, Problem{File: name, Message: fmt.Sprintf("file is over the limit of %d bytes", s.limits.MaxFileSize)})
	}
	s.read += int64(len(data))
	if s.read > s.limits.MaxTotalSize {
		return "", nil, newError(ReasonInvalidManifest, Problem{File: name, Message: fmt.Sprintf("the kustomizations exceed the limit of %d bytes in all", s.limits.MaxTotalSize)})
	}
	return name, data, nil
}
