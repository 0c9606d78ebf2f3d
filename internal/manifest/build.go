// Package manifest loads the manifests of a release from a checked-out repository and
// validates them before anything is applied: they must parse, be unique, stay within the
// size limits, and name every container image by sha256 digest.
package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	goyaml "go.yaml.in/yaml/v3"

	"github.com/immutable-release/operator/internal/decrypt"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// Limits bound what a release may hold and reach, so one repository cannot exhaust the
// operator or use its network. They apply to kustomize builds as to plain folders: to every
// file kustomize reads and to what it renders.
type Limits struct {
	// MaxFileSize is the largest manifest file read, in bytes; for kustomize, also the largest
	// object it renders.
	MaxFileSize int64
	// MaxTotalSize is the most bytes read from all files of a release; for kustomize, every
	// read counts (a base loaded by two overlays counts twice), and so does its output.
	MaxTotalSize int64
	// MaxObjects is the most objects one release may hold.
	MaxObjects int
	// AllowRemoteBases lets kustomize fetch what a kustomization names by URL or Git address
	// (remote resources, bases, components, patches, OpenAPI schemas). The zero value refuses
	// them before kustomize runs: fetching reaches whatever the manager's network reaches, and
	// builds content that was never reviewed in the tenant's repository. It is meant to be set
	// by the platform admin (the manager flag --allow-remote-bases), never by a tenant.
	AllowRemoteBases bool
}

// DefaultLimits are generous for real releases: an object cannot exceed ~1.5 MiB in etcd.
// Remote bases are refused.
var DefaultLimits = Limits{MaxFileSize: 4 << 20, MaxTotalSize: 32 << 20, MaxObjects: 5000}

// Object is a manifest and where it was read.
type Object struct {
	*unstructured.Unstructured
	// File is relative to the repository root.
	File string
	// Line is where the object's document starts, 1-based; 0 for kustomize output.
	Line int
}

// Build reads the manifests under path inside the repository checked out at root, and
// validates them. path is relative to root; a leading slash or ./ is allowed, leaving the
// repository is not. When path holds a kustomization, the output of kustomize is used;
// otherwise every .yaml and .yml file below path, in lexical order, skipping dot-folders.
// Unless limits.AllowRemoteBases, a kustomization that names anything remote is refused
// before kustomize runs, with ReasonRemoteResourceRefused.
// The returned error is an *Error whenever the content, not the machine, is at fault.
// A SOPS-encrypted file is refused (ReasonDecryptionFailed): see BuildDecrypted.
func Build(root, path string, limits Limits) ([]Object, error) {
	return BuildDecrypted(root, path, limits, nil)
}

// BuildDecrypted is Build with the SOPS-encrypted files decrypted by d as they are read,
// in memory: plain manifests, and, for kustomize, every file it reads (resources, and the
// files and env files of Secret generators). The checkout on disk keeps the ciphertext.
// A file that does not decrypt refuses the build with ReasonDecryptionFailed, naming it;
// so does an encrypted file when d is nil.
func BuildDecrypted(root, path string, limits Limits, d *decrypt.Decryptor) ([]Object, error) {
	dir, rel, err := resolvePath(root, path)
	if err != nil {
		return nil, err
	}
	var objects []Object
	if k := kustomizationFile(dir); k != "" {
		objects, err = buildKustomization(root, dir, filepath.Join(rel, k), limits, d)
	} else {
		objects, err = readDir(root, dir, limits, d)
	}
	if err != nil {
		return nil, err
	}
	if err := checkDecrypted(objects); err != nil {
		return nil, err
	}
	if err := checkObjects(objects, limits); err != nil {
		return nil, err
	}
	if err := CheckImages(objects); err != nil {
		return nil, err
	}
	return objects, nil
}

// resolvePath turns path into a folder inside root, refusing .. and symlinks that lead out.
func resolvePath(root, path string) (dir, rel string, err error) {
	rel = filepath.Clean(strings.TrimLeft(filepath.FromSlash(path), string(filepath.Separator)))
	if rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", "", newError(ReasonInvalidPath, Problem{Message: fmt.Sprintf("path %q leads out of the repository; use a path relative to the repository root", path)})
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", "", fmt.Errorf("resolving repository root: %w", err)
	}
	dir = filepath.Join(root, rel)
	realDir, err := filepath.EvalSymlinks(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "", newError(ReasonPathNotFound, Problem{Message: fmt.Sprintf("path %q does not exist in the repository at this revision", path)})
	}
	if err != nil {
		return "", "", newError(ReasonInvalidPath, Problem{Message: fmt.Sprintf("path %q cannot be resolved: %v", path, err)})
	}
	if !within(realRoot, realDir) {
		return "", "", newError(ReasonInvalidPath, Problem{Message: fmt.Sprintf("path %q leads out of the repository through a symlink", path)})
	}
	info, err := os.Stat(realDir)
	if err != nil {
		return "", "", fmt.Errorf("reading %s: %w", path, err)
	}
	if !info.IsDir() {
		return "", "", newError(ReasonInvalidPath, Problem{Message: fmt.Sprintf("path %q is a file; name the folder that holds the manifests", path)})
	}
	return realDir, rel, nil
}

func within(root, p string) bool {
	r, err := filepath.Rel(root, p)
	return err == nil && r != ".." && !strings.HasPrefix(r, ".."+string(filepath.Separator))
}

// readDir reads every YAML file under dir, decrypting those SOPS encrypted.
func readDir(root, dir string, limits Limits, d *decrypt.Decryptor) ([]Object, error) {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, err
	}
	var files []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		ext := strings.ToLower(filepath.Ext(p))
		if ext == ".yaml" || ext == ".yml" {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walking manifests: %w", err)
	}
	sort.Strings(files)

	var (
		objects  []Object
		problems []Problem
		refusals []Problem
		total    int64
	)
	for _, p := range files {
		name, _ := filepath.Rel(realRoot, p)
		name = filepath.ToSlash(name)
		real, err := filepath.EvalSymlinks(p)
		if err != nil || !within(realRoot, real) {
			problems = append(problems, Problem{File: name, Message: "symlink leads out of the repository"})
			continue
		}
		info, err := os.Stat(real)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		if info.IsDir() {
			continue
		}
		if info.Size() > limits.MaxFileSize {
			problems = append(problems, Problem{File: name, Message: fmt.Sprintf("file is %d bytes, over the limit of %d bytes", info.Size(), limits.MaxFileSize)})
			continue
		}
		total += info.Size()
		if total > limits.MaxTotalSize {
			problems = append(problems, Problem{File: name, Message: fmt.Sprintf("the manifests exceed the limit of %d bytes in all", limits.MaxTotalSize)})
			break
		}
		data, err := os.ReadFile(real)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		plain, decrypted, err := decryptFile(d, name, data, limits)
		if err != nil {
			refusals = append(refusals, Problem{File: name, Message: err.Error()})
			continue
		}
		objs, probs := Parse(name, plain)
		if decrypted {
			probs = withheld(probs)
		}
		objects = append(objects, objs...)
		problems = append(problems, probs...)
	}
	if len(refusals) > 0 {
		return nil, newError(ReasonDecryptionFailed, refusals...)
	}
	if len(problems) > 0 {
		return nil, newError(ReasonInvalidManifest, problems...)
	}
	return objects, nil
}

// Parse reads the YAML documents of one file. Empty documents are skipped; a v1 List is
// expanded into its items. Every problem names the file and the document's line.
func Parse(file string, data []byte) ([]Object, []Problem) {
	var (
		objects  []Object
		problems []Problem
	)
	dec := goyaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc goyaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// The decoder cannot resynchronise after a syntax error: the rest of the file is lost.
			problems = append(problems, Problem{File: file, Message: "YAML error: " + strings.TrimPrefix(err.Error(), "yaml: ")})
			break
		}
		if len(doc.Content) == 0 || (doc.Content[0].Kind == goyaml.ScalarNode && doc.Content[0].Tag == "!!null") {
			continue
		}
		line := doc.Content[0].Line
		if doc.Content[0].Kind != goyaml.MappingNode {
			problems = append(problems, Problem{File: file, Line: line, Message: "document is not a Kubernetes object (a YAML mapping with apiVersion and kind)"})
			continue
		}
		raw, err := goyaml.Marshal(&doc)
		if err == nil {
			raw, err = yaml.YAMLToJSON(raw)
		}
		if err != nil {
			problems = append(problems, Problem{File: file, Line: line, Message: "YAML error: " + err.Error()})
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			problems = append(problems, Problem{File: file, Line: line, Message: objectError(raw, err)})
			continue
		}
		items := []*unstructured.Unstructured{u}
		if u.IsList() {
			items = nil
			err := u.EachListItem(func(o runtime.Object) error {
				items = append(items, o.(*unstructured.Unstructured))
				return nil
			})
			if err != nil {
				problems = append(problems, Problem{File: file, Line: line, Message: "reading list items: " + err.Error()})
				continue
			}
		}
		for _, item := range items {
			switch {
			case item.GetAPIVersion() == "":
				problems = append(problems, Problem{File: file, Line: line, Message: "object has no apiVersion"})
			case item.GetKind() == "":
				problems = append(problems, Problem{File: file, Line: line, Message: "object has no kind"})
			default:
				objects = append(objects, Object{Unstructured: item, File: file, Line: line})
			}
		}
	}
	return objects, problems
}

// objectError explains why a document is not an object in the words of the manifest.
func objectError(raw []byte, err error) string {
	var m struct {
		APIVersion any `json:"apiVersion"`
		Kind       any `json:"kind"`
	}
	if yaml.Unmarshal(raw, &m) == nil {
		switch {
		case m.APIVersion == nil || m.APIVersion == "":
			return "object has no apiVersion"
		case m.Kind == nil || m.Kind == "":
			return "object has no kind"
		}
	}
	return "not a Kubernetes object: " + err.Error()
}

// checkObjects enforces what every object needs, whatever produced it.
func checkObjects(objects []Object, limits Limits) error {
	if len(objects) > limits.MaxObjects {
		return newError(ReasonInvalidManifest, Problem{Message: fmt.Sprintf("the release holds %d objects, over the limit of %d", len(objects), limits.MaxObjects)})
	}
	var problems []Problem
	seen := make(map[string]Object, len(objects))
	for _, o := range objects {
		if o.GetAPIVersion() == "" || o.GetKind() == "" {
			problems = append(problems, Problem{File: o.File, Line: o.Line, Message: "object has no apiVersion or kind"})
			continue
		}
		if o.GetName() == "" {
			problems = append(problems, Problem{File: o.File, Line: o.Line, Object: o.GetKind(), Message: "object has no metadata.name (generateName cannot be applied server-side)"})
			continue
		}
		gvk := o.GroupVersionKind()
		key := gvk.Group + "/" + gvk.Kind + "/" + o.GetNamespace() + "/" + o.GetName()
		if first, ok := seen[key]; ok {
			problems = append(problems, Problem{File: o.File, Line: o.Line, Object: ObjectName(o.Unstructured),
				Message: fmt.Sprintf("duplicate object, first defined at %s:%d", first.File, first.Line)})
			continue
		}
		seen[key] = o
	}
	if len(problems) > 0 {
		return newError(ReasonInvalidManifest, problems...)
	}
	return nil
}

// ObjectName is Kind/namespace/name, or Kind/name for objects without a namespace.
func ObjectName(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return u.GetKind() + "/" + ns + "/" + u.GetName()
	}
	return u.GetKind() + "/" + u.GetName()
}

// Unstructured returns the objects without their sources.
func Unstructured(objects []Object) []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, len(objects))
	for i, o := range objects {
		out[i] = o.Unstructured
	}
	return out
}
