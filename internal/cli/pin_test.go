package cli

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/gomega"
)

// TestPin runs `kubectl release pin` against a real registry in process on loopback.
func TestPin(t *testing.T) {
	g := NewWithT(t)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(512, 1)
	g.Expect(err).NotTo(HaveOccurred())
	ref, err := name.ParseReference(host + "/acme/web:1.0")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(remote.Write(ref, img)).To(Succeed())
	d, err := img.Digest()
	g.Expect(err).NotTo(HaveOccurred())

	original := deployment(host+"/acme/web:1.0") + "# a comment that stays\n"
	dir := folder(t, map[string]string{"app/deployment.yaml": original})
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := Run(context.Background(), append([]string{"pin"}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	read := func() string {
		b, err := os.ReadFile(filepath.Join(dir, "app/deployment.yaml"))
		g.Expect(err).NotTo(HaveOccurred())
		return string(b)
	}
	pinned := strings.Replace(original, "web:1.0", "web:1.0@"+d.String(), 1)

	code, out, _ := run(dir, "--dry-run")
	g.Expect(code).To(Equal(ExitOK))
	g.Expect(out).To(HavePrefix("app/deployment.yaml:8: Deployment/web container app: " + host + "/acme/web:1.0 -> " + host + "/acme/web:1.0@" + d.String() + "\n--- a/app/deployment.yaml\n+++ b/app/deployment.yaml\n"))
	g.Expect(out).To(HaveSuffix("dry run: 1 images would be pinned, no file was changed\n"))
	g.Expect(read()).To(Equal(original))

	code, out, _ = run(dir)
	g.Expect(code).To(Equal(ExitOK))
	g.Expect(out).To(HaveSuffix("✔ pinned 1 images\n"))
	g.Expect(read()).To(Equal(pinned))
	code, out, _ = verify(dir)
	g.Expect(code).To(Equal(ExitOK), out)

	code, out, _ = run(dir)
	g.Expect(code).To(Equal(ExitOK))
	g.Expect(out).To(Equal("✔ " + dir + ": every image is pinned by digest\n"))

	// An unknown tag: a message per image, exit code 1, nothing written.
	g.Expect(os.WriteFile(filepath.Join(dir, "app/other.yaml"), []byte(strings.Replace(deployment(host+"/acme/web:nope"), "web}", "other}", 1)), 0o644)).To(Succeed())
	code, out, errOut := run(dir)
	g.Expect(code).To(Equal(ExitFailed))
	g.Expect(out).To(Equal("app/other.yaml:8: Deployment/other container app: " + host + "/acme/web:nope: tag \"nope\" not found in " + host + "/acme/web\n"))
	g.Expect(errOut).To(Equal("error: 1 images cannot be pinned; no file was changed\n"))

	code, _, _ = run(filepath.Join(dir, "app/deployment.yaml"))
	g.Expect(code).To(Equal(ExitUsage))
}
