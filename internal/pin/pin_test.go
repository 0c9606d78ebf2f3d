package pin

import (
	"context"
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/manifest"
)

// testRegistry is a real OCI distribution registry, in process, on loopback. With a user
// set, it asks for HTTP basic credentials.
type testRegistry struct {
	server *httptest.Server
	host   string
	user   string
}

func newTestRegistry(t *testing.T, user string) *testRegistry {
	t.Helper()
	r := &testRegistry{user: user}
	handler := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.user != "" {
			if u, _, ok := req.BasicAuth(); !ok || u != r.user {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		handler.ServeHTTP(w, req)
	}))
	t.Cleanup(r.server.Close)
	r.host = strings.TrimPrefix(r.server.URL, "http://")
	// No credentials from the machine's Docker config, unless a test writes some.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	return r
}

// pushImage pushes a random single-platform image as host/repo:tag and returns its digest.
func (r *testRegistry) pushImage(t *testing.T, repoTag string) string {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	user := r.user
	r.user = "" // push without the auth gate
	defer func() { r.user = user }()
	if err := remote.Write(r.ref(t, repoTag), img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// pushIndex pushes a multi-arch image (linux/amd64 and linux/arm64) and returns the index's
// digest and the digests of its images.
func (r *testRegistry) pushIndex(t *testing.T, repoTag string) (string, []string) {
	t.Helper()
	var (
		adds      []mutate.IndexAddendum
		platforms []string
	)
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(512, 1)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		platforms = append(platforms, d.String())
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	idx := mutate.AppendManifests(empty.Index, adds...)
	if err := remote.WriteIndex(r.ref(t, repoTag), idx); err != nil {
		t.Fatal(err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String(), platforms
}

func (r *testRegistry) ref(t *testing.T, repoTag string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func readFiles(t *testing.T, dir string, names ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = string(b)
	}
	return out
}

func deploymentFile(images ...string) string {
	s := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n"
	for i, im := range images {
		s += "      - name: c" + string(rune('0'+i)) + "\n        image: " + im + "  # keep this comment\n"
	}
	return s
}

func TestFolder(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	reg := newTestRegistry(t, "")
	single := reg.pushImage(t, "acme/web:1.0")
	index, platforms := reg.pushIndex(t, "acme/multi:2")
	pinnedAlready := reg.pushImage(t, "acme/done:1")

	dir := writeFiles(t, map[string]string{
		"base/deployment.yaml":       deploymentFile(reg.host+"/acme/web:1.0", `"`+reg.host+`/acme/multi:2"`, reg.host+"/acme/done:1@"+pinnedAlready),
		"base/kustomization.yaml":    "resources: [deployment.yaml]\n",
		"overlay/kustomization.yaml": "resources: [../base]\nimages:\n- name: " + reg.host + "/acme/web # swap the tag\n  newTag: \"2\" # from CI\n",
		"overlay/.hidden/skip.yaml":  deploymentFile(reg.host + "/acme/nope:1"),
	})
	reg.pushImage(t, "acme/web:2")
	webV2 := reg.pushImage(t, "acme/web:2") // a new push moves the tag: pin takes the current digest

	plan, err := Folder(ctx, dir, Remote())
	g.Expect(err).NotTo(HaveOccurred())
	var changes []string
	for _, c := range plan.Changes {
		changes = append(changes, c.String())
	}
	g.Expect(changes).To(ConsistOf(
		"base/deployment.yaml:12: Deployment/web container c0: "+reg.host+"/acme/web:1.0 -> "+reg.host+"/acme/web:1.0@"+single,
		"base/deployment.yaml:14: Deployment/web container c1: "+reg.host+"/acme/multi:2 -> "+reg.host+"/acme/multi:2@"+index,
		"overlay/kustomization.yaml:4: kustomization images entry "+reg.host+"/acme/web: 2 -> digest: "+webV2,
	))
	g.Expect(index).NotTo(BeElementOf(platforms), "a multi-arch image is pinned by its index")
	g.Expect(plan.Diff()).To(ContainSubstring("--- a/overlay/kustomization.yaml\n+++ b/overlay/kustomization.yaml\n"))
	g.Expect(plan.Diff()).To(ContainSubstring("+  digest: " + webV2 + "\n"))
	g.Expect(readFiles(t, dir, "base/deployment.yaml")["base/deployment.yaml"]).NotTo(ContainSubstring(single), "nothing written before Write")

	g.Expect(plan.Write()).To(Succeed())
	files := readFiles(t, dir, "base/deployment.yaml", "overlay/kustomization.yaml")
	g.Expect(files["base/deployment.yaml"]).To(Equal(deploymentFile(reg.host+"/acme/web:1.0@"+single, `"`+reg.host+`/acme/multi:2@`+index+`"`, reg.host+"/acme/done:1@"+pinnedAlready)))
	g.Expect(files["overlay/kustomization.yaml"]).To(Equal("resources: [../base]\nimages:\n- name: " + reg.host + "/acme/web # swap the tag\n  newTag: \"2\" # from CI\n  digest: " + webV2 + "\n"))
	entries, err := os.ReadDir(filepath.Join(dir, "base"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(entries).To(HaveLen(2), "no temporary file left")

	// The operator's own validation accepts the result, and kustomize keeps tag and digest.
	objects, err := manifest.Build(dir, "overlay", manifest.DefaultLimits)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(manifest.Containers(objects[0].Unstructured)[0].Image).To(Equal(reg.host + "/acme/web:2@" + webV2))

	// Nothing left to pin.
	plan, err = Folder(ctx, dir, Remote())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(plan.Changes).To(BeEmpty())
}

func TestFolderAllOrNothing(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t, "")
	reg.pushImage(t, "acme/web:1.0")
	files := map[string]string{
		"a.yaml": deploymentFile(reg.host + "/acme/web:1.0"),
		"b.yaml": deploymentFile(reg.host+"/acme/web:9.9", "bad@md5:00"),
	}

	t.Run("unknown tag", func(t *testing.T) {
		g := NewWithT(t)
		dir := writeFiles(t, files)
		_, err := Folder(ctx, dir, Remote())
		var perr *Error
		g.Expect(err).To(BeAssignableToTypeOf(perr))
		g.Expect(err.Error()).To(HavePrefix("2 images cannot be pinned, no file changed: "))
		g.Expect(err.(*Error).Problems[0].String()).To(Equal("b.yaml:12: Deployment/web container c0: " + reg.host + "/acme/web:9.9: tag \"9.9\" not found in " + reg.host + "/acme/web"))
		g.Expect(err.(*Error).Problems[1].String()).To(ContainSubstring(`b.yaml:14: Deployment/web container c1: image "bad@md5:00" uses a md5 digest`))
		g.Expect(readFiles(t, dir, "a.yaml", "b.yaml")).To(Equal(files))
	})

	t.Run("registry down", func(t *testing.T) {
		g := NewWithT(t)
		down := newTestRegistry(t, "")
		down.server.Close()
		only := map[string]string{"a.yaml": deploymentFile(reg.host+"/acme/web:1.0", down.host+"/acme/web:1.0")}
		dir := writeFiles(t, only)
		_, err := Folder(ctx, dir, Remote())
		g.Expect(err).To(HaveOccurred())
		g.Expect(err.(*Error).Problems).To(HaveLen(1))
		g.Expect(err.(*Error).Problems[0].String()).To(HavePrefix("a.yaml:14: Deployment/web container c1: " + down.host + "/acme/web:1.0: the registry " + down.host + " is unreachable: "))
		g.Expect(readFiles(t, dir, "a.yaml")).To(Equal(only))
	})

	t.Run("credentials from the Docker config", func(t *testing.T) {
		g := NewWithT(t)
		private := newTestRegistry(t, "ci")
		digest := private.pushImage(t, "acme/private:1")
		only := map[string]string{"a.yaml": deploymentFile(private.host + "/acme/private:1")}
		dir := writeFiles(t, only)
		_, err := Folder(ctx, dir, Remote())
		g.Expect(err).To(HaveOccurred())
		g.Expect(err.Error()).To(ContainSubstring("the registry " + private.host + " refused access (401): log in with docker login " + private.host))
		g.Expect(readFiles(t, dir, "a.yaml")).To(Equal(only))

		config := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte("ci:secret"))
		g.Expect(os.WriteFile(filepath.Join(config, "config.json"), []byte(`{"auths":{"`+private.host+`":{"auth":"`+auth+`"}}}`), 0o600)).To(Succeed())
		t.Setenv("DOCKER_CONFIG", config)
		plan, err := Folder(ctx, dir, Remote())
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(plan.Changes).To(HaveLen(1))
		g.Expect(plan.Changes[0].Digest).To(Equal(digest))
	})
}
