package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

func deployment(name, image string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: ` + name + `
spec:
  selector: {matchLabels: {app: ` + name + `}}
  template:
    metadata: {labels: {app: ` + name + `}}
    spec:
      containers:
      - name: app
        image: ` + image + `
`
}

const configMap = `apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  a: "1"
`

// writeTree writes files (path -> content) under a new folder and returns it.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestBuildPlainManifests(t *testing.T) {
	g := NewWithT(t)
	root := writeTree(t, map[string]string{
		"deploy/prod/app.yaml":       deployment("web", "nginx:1.27@"+goodDigest) + "---\n" + configMap,
		"deploy/prod/nested/svc.yml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
		"deploy/prod/.hidden/x.yaml": "not: [valid",
		"deploy/prod/README.md":      "# not read",
		"deploy/prod/empty.yaml":     "---\n---\n",
		"deploy/staging/other.yaml":  configMap,
		"deploy/prod/list/list.yaml": "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ServiceAccount\n  metadata: {name: sa}\n",
		"deploy/prod/cronjob.yaml":   "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: tick}\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          initContainers: [{name: init, image: 'busybox@" + goodDigest + "'}]\n          containers: [{name: tick, image: 'busybox@" + goodDigest + "'}]\n",
	})
	objects, err := Build(root, "./deploy/prod", DefaultLimits)
	g.Expect(err).NotTo(HaveOccurred())
	var names []string
	for _, o := range objects {
		names = append(names, o.File+":"+ObjectName(o.Unstructured))
	}
	g.Expect(names).To(Equal([]string{
		"deploy/prod/app.yaml:Deployment/web",
		"deploy/prod/app.yaml:ConfigMap/settings",
		"deploy/prod/cronjob.yaml:CronJob/tick",
		"deploy/prod/list/list.yaml:ServiceAccount/sa",
		"deploy/prod/nested/svc.yml:Service/web",
	}))
	g.Expect(objects[1].Line).To(Equal(14))
	g.Expect(Containers(objects[2].Unstructured)).To(Equal([]Container{
		{Name: "init", Image: "busybox@" + goodDigest}, {Name: "tick", Image: "busybox@" + goodDigest},
	}))
}

func TestBuildKustomization(t *testing.T) {
	g := NewWithT(t)
	root := writeTree(t, map[string]string{
		"base/app.yaml":                    deployment("web", "ghcr.io/acme/web:1.0"),
		"base/kustomization.yaml":          "resources: [app.yaml]\n",
		"overlays/prod/kustomization.yaml": "resources: [../../base]\nnamespace: shop\nimages:\n- name: ghcr.io/acme/web\n  digest: " + goodDigest + "\n",
	})
	objects, err := Build(root, "overlays/prod", DefaultLimits)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(objects).To(HaveLen(1))
	g.Expect(objects[0].GetNamespace()).To(Equal("shop"))
	g.Expect(objects[0].File).To(Equal("overlays/prod/kustomization.yaml"))
	g.Expect(Containers(objects[0].Unstructured)[0].Image).To(Equal("ghcr.io/acme/web@" + goodDigest))

	// Without the digest, the same overlay is refused.
	_, err = Build(root, "base", DefaultLimits)
	g.Expect(reasonOf(err)).To(Equal(ReasonImageNotPinned))
}

func reasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// TestBuildRefuses is the bad-input table: each input is refused with its reason and a
// message that names what is wrong, and nothing is returned to apply.
func TestBuildRefuses(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.yaml"), []byte(configMap), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		files   map[string]string
		path    string
		setup   func(t *testing.T, root string)
		reason  string
		message []string
	}{
		{name: "tag only", files: map[string]string{"a.yaml": deployment("web", "nginx:1.27")},
			reason: ReasonImageNotPinned, message: []string{"a.yaml:1: Deployment/web container app:", `image "nginx:1.27" has a tag but no digest`}},
		{name: "latest", files: map[string]string{"a.yaml": deployment("web", "nginx:latest")},
			reason: ReasonImageNotPinned, message: []string{"uses the tag latest"}},
		{name: "no tag no digest", files: map[string]string{"a.yaml": deployment("web", "nginx")},
			reason: ReasonImageNotPinned, message: []string{"has no digest"}},
		{name: "short digest", files: map[string]string{"a.yaml": deployment("web", "nginx@sha256:abc123")},
			reason: ReasonImageNotPinned, message: []string{"malformed digest"}},
		{name: "sha512", files: map[string]string{"a.yaml": deployment("web", "nginx@sha512:"+strings.Repeat("ab", 64))},
			reason: ReasonImageNotPinned, message: []string{"uses a sha512 digest"}},
		{name: "every bad image is named", files: map[string]string{"a.yaml": deployment("web", "nginx:1") + "---\n" + deployment("api", "api:2")},
			reason: ReasonImageNotPinned, message: []string{"Deployment/web", "Deployment/api"}},
		{name: "malformed YAML", files: map[string]string{"a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n"},
			reason: ReasonInvalidManifest, message: []string{"a.yaml: YAML error"}},
		{name: "no kind", files: map[string]string{"a.yaml": "apiVersion: v1\nmetadata: {name: x}\n"},
			reason: ReasonInvalidManifest, message: []string{"a.yaml:1: object has no kind"}},
		{name: "no apiVersion", files: map[string]string{"a.yaml": "kind: ConfigMap\nmetadata: {name: x}\n"},
			reason: ReasonInvalidManifest, message: []string{"object has no apiVersion"}},
		{name: "no name", files: map[string]string{"a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: x-}\n"},
			reason: ReasonInvalidManifest, message: []string{"no metadata.name"}},
		{name: "not a mapping", files: map[string]string{"a.yaml": "- a\n- b\n"},
			reason: ReasonInvalidManifest, message: []string{"not a Kubernetes object"}},
		{name: "duplicate", files: map[string]string{"a.yaml": configMap, "b.yaml": configMap},
			reason: ReasonInvalidManifest, message: []string{"b.yaml:1: ConfigMap/settings: duplicate object, first defined at a.yaml:1"}},
		{name: "file too large", files: map[string]string{"a.yaml": configMap + "# " + strings.Repeat("x", 5<<20) + "\n"},
			reason: ReasonInvalidManifest, message: []string{"over the limit of 4194304 bytes"}},
		{name: "path escapes", files: map[string]string{"a.yaml": configMap}, path: "deploy/../../etc",
			reason: ReasonInvalidPath, message: []string{`path "deploy/../../etc" leads out of the repository`}},
		{name: "missing path", files: map[string]string{"a.yaml": configMap}, path: "deploy/nope",
			reason: ReasonPathNotFound, message: []string{`path "deploy/nope" does not exist`}},
		{name: "path symlink out", files: map[string]string{"a.yaml": configMap}, path: "link",
			setup:  func(t *testing.T, root string) { must(t, os.Symlink(outside, filepath.Join(root, "link"))) },
			reason: ReasonInvalidPath, message: []string{"through a symlink"}},
		{name: "file symlink out", files: map[string]string{"a.yaml": configMap},
			setup: func(t *testing.T, root string) {
				must(t, os.Symlink(filepath.Join(outside, "secret.yaml"), filepath.Join(root, "b.yaml")))
			},
			reason: ReasonInvalidManifest, message: []string{"b.yaml: symlink leads out of the repository"}},
		{name: "kustomize resource outside", files: map[string]string{"k/kustomization.yaml": "resources: [" + filepath.Join(outside, "secret.yaml") + "]\n"}, path: "k",
			reason: ReasonInvalidManifest, message: []string{"k/kustomization.yaml: kustomize build failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			root := writeTree(t, tt.files)
			if tt.setup != nil {
				tt.setup(t, root)
			}
			objects, err := Build(root, tt.path, DefaultLimits)
			g.Expect(objects).To(BeEmpty())
			g.Expect(reasonOf(err)).To(Equal(tt.reason), "error: %v", err)
			for _, m := range tt.message {
				g.Expect(err.Error()).To(ContainSubstring(m))
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzParse checks that no input makes the loader panic, and that every object it returns
// has a kind and an apiVersion and every problem names the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte(deployment("web", "nginx:1")))
	f.Add([]byte(configMap + "---\n" + configMap))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: ConfigMap, metadata: {name: a}}]\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("- 1\n---\n: :\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objects, problems := Parse("f.yaml", data)
		for _, o := range objects {
			if o.GetKind() == "" || o.GetAPIVersion() == "" {
				t.Fatalf("object without kind or apiVersion: %v", o.Object)
			}
			_ = CheckImages([]Object{o})
		}
		for _, p := range problems {
			if p.File != "f.yaml" || p.Message == "" {
				t.Fatalf("problem without file or message: %+v", p)
			}
		}
	})
}
