package pin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/pmezard/go-difflib/difflib"
	"golang.org/x/sync/errgroup"

	"github.com/immutable-release/operator/internal/manifest"
)

// Resolver returns the digest (sha256:...) that the registry gives for image (name:tag).
type Resolver func(ctx context.Context, image string) (string, error)

// Remote resolves with the image's registry, with the credentials of the Docker config
// ($DOCKER_CONFIG or ~/.docker/config.json, credential helpers included). The digest is the
// one of the manifest the tag points at: for a multi-arch image, its index.
func Remote(opts ...remote.Option) Resolver {
	return func(ctx context.Context, image string) (string, error) {
		ref, err := name.ParseReference(image)
		if err != nil {
			return "", fmt.Errorf("%s is not a valid image reference: %w", image, err)
		}
		options := append([]remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}, opts...)
		desc, err := remote.Head(ref, options...)
		var terr *transport.Error
		if errors.As(err, &terr) {
			// Some registries answer HEAD poorly; GET also says why it failed.
			var got *remote.Descriptor
			if got, err = remote.Get(ref, options...); err == nil {
				return got.Digest.String(), nil
			}
		}
		if err != nil {
			return "", explain(ref, err)
		}
		return desc.Digest.String(), nil
	}
}

// explain says what went wrong in words a person can act on.
func explain(ref name.Reference, err error) error {
	registry := ref.Context().RegistryStr()
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("the registry %s refused access (%d): log in with docker login %s, or point DOCKER_CONFIG at a folder whose config.json has its credentials", registry, terr.StatusCode, registry)
		case http.StatusNotFound:
			return fmt.Errorf("tag %q not found in %s", ref.Identifier(), ref.Context().Name())
		}
		return fmt.Errorf("the registry %s answered: %w", registry, err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("asking %s: %w", registry, err)
	}
	return fmt.Errorf("the registry %s is unreachable: %w", registry, err)
}

// Change is one image pinned.
type Change struct {
	Site
	Digest string
}

// String is file:line: object container: written -> pinned.
func (c Change) String() string {
	return manifest.Problem{File: c.File, Line: c.Line, Object: c.Object, Container: c.Container,
		Message: c.Written + " -> " + c.Pinned(c.Digest)}.String()
}

// Plan is the pinning of a folder, worked out in memory: nothing is written until Write.
type Plan struct {
	Changes []Change
	dir     string
	// before and after hold the content of every file that changes, by path relative to dir.
	before, after map[string][]byte
}

// Error lists, per image, why a folder cannot be pinned. No file was written.
type Error struct {
	Problems []manifest.Problem
}

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return fmt.Sprintf("%d images cannot be pinned, no file changed: %s", len(e.Problems), strings.Join(lines, "; "))
}

// maxParallel bounds the requests made to registries at once.
const maxParallel = 4

// Folder scans every .yaml and .yml file under dir (skipping dot-folders, as the operator
// does) and the kustomization files, and resolves each unpinned image. All or nothing: any
// image that cannot be resolved, or cannot be edited, makes an *Error, and the Plan is nil.
func Folder(ctx context.Context, dir string, resolve Resolver) (*Plan, error) {
	files, err := yamlFiles(dir)
	if err != nil {
		return nil, err
	}
	var (
		sites    []Site
		problems []manifest.Problem
		before   = map[string][]byte{}
	)
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f)))
		if err != nil {
			return nil, err
		}
		s, p := Scan(f, data)
		if len(s) > 0 {
			before[f] = data
		}
		sites, problems = append(sites, s...), append(problems, p...)
	}

	images := map[string]bool{}
	for _, s := range sites {
		images[s.Image] = true
	}
	var (
		mu      sync.Mutex
		digests = map[string]string{}
		failed  = map[string]error{}
	)
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(maxParallel)
	for image := range images {
		eg.Go(func() error {
			digest, err := resolve(ctx, image)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed[image] = err
			} else {
				digests[image] = digest
			}
			return nil
		})
	}
	_ = eg.Wait()
	for _, s := range sites {
		if err := failed[s.Image]; err != nil {
			problems = append(problems, manifest.Problem{File: s.File, Line: s.Line, Object: s.Object, Container: s.Container, Message: s.Image + ": " + err.Error()})
		}
	}
	if len(problems) > 0 {
		sort.SliceStable(problems, func(i, j int) bool {
			return problems[i].File < problems[j].File || (problems[i].File == problems[j].File && problems[i].Line < problems[j].Line)
		})
		return nil, &Error{Problems: problems}
	}

	p := &Plan{dir: dir, before: before, after: map[string][]byte{}}
	bySite := map[string][]Site{}
	for _, s := range sites {
		bySite[s.File] = append(bySite[s.File], s)
		p.Changes = append(p.Changes, Change{Site: s, Digest: digests[s.Image]})
	}
	for f, s := range bySite {
		p.after[f] = Rewrite(before[f], s, digests)
	}
	return p, nil
}

// yamlFiles lists the manifest files under dir, relative to it, slash-separated.
func yamlFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
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
		if (ext == ".yaml" || ext == ".yml" || d.Name() == "Kustomization") && d.Type().IsRegular() {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the files of %s: %w", dir, err)
	}
	sort.Strings(files)
	return files, nil
}

// Diff is a unified diff of every file that changes.
func (p *Plan) Diff() string {
	var b strings.Builder
	for _, f := range p.files() {
		d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A: difflib.SplitLines(string(p.before[f])), B: difflib.SplitLines(string(p.after[f])),
			FromFile: "a/" + f, ToFile: "b/" + f, Context: 2,
		})
		b.WriteString(d)
	}
	return b.String()
}

// Write writes the changed files. Each is written beside its original and renamed over it,
// and every file is written before any is renamed: a failure to write (a full disk, a
// read-only file) leaves the folder as it was. Only a rename failing part-way, which the
// same folder makes unlikely, would leave some files pinned and others not.
func (p *Plan) Write() error {
	var written []string
	cleanup := func() {
		for _, tmp := range written {
			_ = os.Remove(tmp)
		}
	}
	for _, f := range p.files() {
		target := filepath.Join(p.dir, filepath.FromSlash(f))
		info, err := os.Stat(target)
		if err != nil {
			cleanup()
			return err
		}
		tmp := target + ".pin-tmp"
		if err := os.WriteFile(tmp, p.after[f], info.Mode().Perm()); err != nil {
			cleanup()
			return fmt.Errorf("writing %s: %w", f, err)
		}
		written = append(written, tmp)
	}
	for _, tmp := range written {
		if err := os.Rename(tmp, strings.TrimSuffix(tmp, ".pin-tmp")); err != nil {
			cleanup()
			return fmt.Errorf("replacing %s: %w", strings.TrimSuffix(tmp, ".pin-tmp"), err)
		}
	}
	return nil
}

func (p *Plan) files() []string {
	files := make([]string, 0, len(p.after))
	for f := range p.after {
		files = append(files, f)
	}
	sort.Strings(files)
	return files
}
