package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/internal/controlplane"
	"github.com/immutable-release/operator/internal/manifest"
)

const testImage = "registry.example.com/team/manager@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestInstallManifest renders the install manifest and creates every object of it, in its
// order, on a real API server: the CRD is accepted, the RBAC and the Deployment are valid,
// and the Deployment meets the restricted Pod Security level of its namespace (the API
// server warns about any violation; none may come back).
func TestInstallManifest(t *testing.T) {
	g := NewWithT(t)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	g.Expect(err).NotTo(HaveOccurred())
	data, err := render(root, "config/default", testImage)
	g.Expect(err).NotTo(HaveOccurred())

	objects, problems := manifest.Parse("install.yaml", data)
	g.Expect(problems).To(BeEmpty())
	g.Expect(manifest.CheckImages(objects)).To(Succeed())
	var images []string
	for _, o := range objects {
		for _, c := range manifest.Containers(o.Unstructured) {
			images = append(images, c.Image)
		}
		if o.GetKind() != "CustomResourceDefinition" {
			g.Expect(o.GetName()).To(HavePrefix("immutable-release"), "every object is named for the operator: %s", manifest.ObjectName(o.Unstructured))
		}
	}
	g.Expect(images).To(Equal([]string{testImage}))
	// The CRDs first (ImmutableRelease and Receiver), then the namespace.
	g.Expect(objects[0].GetKind()).To(Equal("CustomResourceDefinition"))
	g.Expect(objects[1].GetKind()).To(Equal("CustomResourceDefinition"))
	g.Expect(objects[2].GetKind()).To(Equal("Namespace"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{})
	g.Expect(err).NotTo(HaveOccurred())
	defer cp.Stop()

	warnings := &warningRecorder{}
	cfg := rest.CopyConfig(cp.Config)
	cfg.WarningHandler = warnings
	c, err := client.New(cfg, client.Options{})
	g.Expect(err).NotTo(HaveOccurred())
	for _, o := range objects {
		g.Expect(c.Create(ctx, o.Unstructured)).To(Succeed(), manifest.ObjectName(o.Unstructured))
	}
	g.Expect(warnings.all()).To(BeEmpty(), "the API server warned about the install manifest")
}

// TestRenderRefusesAnUnpinnedImage checks that dist names the image by digest or not at all.
func TestRenderRefusesAnUnpinnedImage(t *testing.T) {
	g := NewWithT(t)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	g.Expect(err).NotTo(HaveOccurred())
	_, err = render(root, "config/default", "ghcr.io/immutable-release/manager:v1")
	g.Expect(err).To(MatchError(ContainSubstring("has a tag but no digest")))
	entries, _ := os.ReadDir(filepath.Join(root, "dist"))
	for _, e := range entries {
		g.Expect(strings.HasPrefix(e.Name(), ".overlay-")).To(BeFalse(), "the throwaway overlay is removed")
	}
}

type warningRecorder struct {
	mu       sync.Mutex
	warnings []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.warnings = append(w.warnings, text)
}

func (w *warningRecorder) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.warnings...)
}
