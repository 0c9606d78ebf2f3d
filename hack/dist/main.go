// Command dist writes the single install manifest, dist/install.yaml: the kustomize build of
// config/default with the manager image named by digest. `make dist` runs it with the
// digest ko gives the image it builds.
//
// The output is built and checked by the operator's own manifest.Build, the code that
// judges a release's manifests: an install whose images are not pinned by digest cannot be
// written, just as it could not be applied by an ImmutableRelease.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/fluxcd/pkg/ssa"

	"sigs.k8s.io/yaml"

	"github.com/immutable-release/operator/internal/manifest"
)

// placeholderImage is the manager image config/manager names; dist replaces it.
const placeholderImage = "ghcr.io/immutable-release/manager"

func main() {
	image := flag.String("image", "", "The manager image, by digest: <repository>@sha256:<64 hex>.")
	config := flag.String("config", "config/default", "The kustomization to build, relative to the repository root (the working directory).")
	out := flag.String("out", "dist/install.yaml", "Where to write the install manifest.")
	flag.Parse()
	if err := run(*image, *config, *out); err != nil {
		fmt.Fprintln(os.Stderr, "dist:", err)
		os.Exit(1)
	}
}

func run(image, config, out string) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	data, err := render(root, config, image)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(out, data, 0o644); err != nil {
		return err
	}
	fmt.Printf("Wrote %s with the manager image %s\n", out, image)
	return nil
}

// render builds config (a folder relative to root) with the manager image set to image,
// through a throwaway overlay in root/dist, and returns the objects as one YAML stream.
func render(root, config, image string) ([]byte, error) {
	ref, err := manifest.PinnedImage(image)
	if err != nil {
		return nil, fmt.Errorf("-image %q: %w", image, err)
	}
	if err := os.MkdirAll(filepath.Join(root, "dist"), 0o755); err != nil {
		return nil, err
	}
	overlay, err := os.MkdirTemp(filepath.Join(root, "dist"), ".overlay-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(overlay)
	base, err := filepath.Rel(overlay, filepath.Join(root, config))
	if err != nil {
		return nil, err
	}
	// A tag beside the digest is dropped: the digest alone says what runs.
	repository, digest := ref.Name, ref.Digest
	kustomization := fmt.Sprintf("resources:\n- %s\nimages:\n- name: %s\n  newName: %s\n  digest: %s\n",
		filepath.ToSlash(base), placeholderImage, repository, digest)
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(root, overlay)
	if err != nil {
		return nil, err
	}
	objects, err := manifest.Build(root, rel, manifest.DefaultLimits)
	if err != nil {
		return nil, fmt.Errorf("building %s: %w", config, err)
	}

	// Namespaces and CRDs first, workloads last: the order kubectl apply -f needs.
	sorted := manifest.Unstructured(objects)
	sort.Stable(ssa.SortableUnstructureds(sorted))

	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# ImmutableRelease operator: kubectl apply --server-side -f install.yaml\n# Built by `make dist` from %s; manager image %s@%s\n", config, repository, digest)
	found := false
	for _, o := range sorted {
		for _, c := range manifest.Containers(o) {
			if c.Name == "manager" && o.GetKind() == "Deployment" {
				found = c.Image == repository+"@"+digest
			}
		}
		y, err := yaml.Marshal(o.Object)
		if err != nil {
			return nil, err
		}
		buf.WriteString("---\n")
		buf.Write(y)
	}
	if !found {
		return nil, errors.New("the manager Deployment does not use the built image: config/manager must name " + placeholderImage)
	}
	return buf.Bytes(), nil
}
