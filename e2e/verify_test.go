//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/immutable-release/operator/internal/verify/verifytest"
)

// specUnsignedDigestRefused: a release with spec.verify runs a signed image from a registry
// on loopback; a push of a new digest that nobody signed stays on the old revision, and
// kubectl release status shows why; once CI signs the digest, it goes through and status
// shows who signed it.
func specUnsignedDigestRefused(t *testing.T) {
	reg := verifytest.NewRegistry(t, nil)
	key := verifytest.NewKey(t)
	v1, v2 := reg.Push("acme/web"), reg.Push("acme/web")
	key.SignImage(reg, v1)
	s := createStory(t, "1m", "verify: {provider: cosign, secretRef: {name: cosign-keys}}")
	keyFile := filepath.Join(t.TempDir(), "cosign.pub")
	s.must(os.WriteFile(keyFile, key.PublicPEM, 0o600))
	s.kubectl("-n", s.ns, "create", "secret", "generic", "cosign-keys", "--from-file=cosign.pub="+keyFile)

	s.push("Release web from the registry", map[string]string{"deploy/prod/deployment.yaml": deployment(v1.String())})
	s.reconciled(v1.String())

	s.push("Release web, unsigned", map[string]string{"deploy/prod/deployment.yaml": deployment(v2.String())})
	_, _ = kubectlRelease("reconcile", "shop", "-n", s.ns, "--timeout=5s")
	msg := s.refused("ImageVerificationFailed")
	if !strings.Contains(msg, v2.DigestStr()) || !strings.Contains(msg, "no signature") {
		t.Errorf("the reason does not name the digest and why: %s", msg)
	}
	if img := s.image(); img != v1.String() {
		t.Errorf("the Deployment runs %s, not the last verified revision's %s", img, v1)
	}
	status, _ := kubectlRelease("status", "shop", "-n", s.ns)
	if !strings.Contains(status, "ImageVerificationFailed") || !strings.Contains(status, v2.DigestStr()) {
		t.Errorf("kubectl release status does not show the refusal:\n%s", status)
	}

	key.SignImage(reg, v2)
	s.reconciled(v2.String())
	status, _ = kubectlRelease("status", "shop", "-n", s.ns)
	if !strings.Contains(status, "✔ signed with key sha256:") {
		t.Errorf("kubectl release status does not show the signer:\n%s", status)
	}
}

// reconciled asks for a reconcile and waits until the Deployment runs image.
func (s *story) reconciled(image string) {
	s.t.Helper()
	s.eventually(2*time.Minute, func() string {
		if img := s.image(); img != image {
			_, _ = kubectlRelease("reconcile", "shop", "-n", s.ns, "--timeout=5s")
			return "the Deployment runs " + img + ", not " + image
		}
		return ""
	})
}

func TestUnsignedDigestRefused(t *testing.T) { specUnsignedDigestRefused(t) }
