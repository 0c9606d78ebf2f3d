package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/verify/verifytest"
)

// TestVerifySignatures: verify --signatures checks every image's signature in its registry
// as spec.verify does, with nothing else than the registry contacted.
func TestVerifySignatures(t *testing.T) {
	g := NewWithT(t)
	reg := verifytest.NewRegistry(t, nil)
	key := verifytest.NewKey(t)
	signed, unsigned := reg.Push("acme/web"), reg.Push("acme/worker")
	key.SignImage(reg, signed)
	keyFile := filepath.Join(t.TempDir(), "cosign.pub")
	g.Expect(os.WriteFile(keyFile, key.PublicPEM, 0o600)).To(Succeed())
	noCredentials := filepath.Join(t.TempDir(), "config.json")
	g.Expect(os.WriteFile(noCredentials, []byte(`{"auths":{}}`), 0o600)).To(Succeed())

	good := folder(t, map[string]string{"deploy/app.yaml": deployment(signed.String())})
	code, out, _ := verify(filepath.Join(good, "deploy"), "--signatures", "--key", keyFile, "--registry-config", noCredentials)
	g.Expect(code).To(Equal(ExitOK), out)
	g.Expect(out).To(ContainSubstring("✔ " + signed.String() + ": signed with key sha256:"))

	bad := folder(t, map[string]string{"deploy/app.yaml": deployment(unsigned.String())})
	code, out, _ = verify(filepath.Join(bad, "deploy"), "--signatures", "--key", keyFile, "--registry-config", noCredentials)
	g.Expect(code).To(Equal(ExitFailed))
	g.Expect(out).To(ContainSubstring("✘ NoSignature: image " + unsigned.String()))

	code, out, _ = verify(filepath.Join(bad, "deploy"), "--signatures", "--key", keyFile, "--registry-config", noCredentials, "-o", "json")
	g.Expect(code).To(Equal(ExitFailed))
	var res verifyResult
	g.Expect(json.Unmarshal([]byte(out), &res)).To(Succeed())
	g.Expect(res.Valid).To(BeFalse())
	g.Expect(res.Reason).To(Equal("ImageVerificationFailed"))
	g.Expect(res.Signatures).To(HaveLen(1))
	g.Expect(res.Signatures[0].Reason).To(Equal("NoSignature"))

	code, _, errOut := verify(filepath.Join(good, "deploy"), "--signatures")
	g.Expect(code).To(Equal(ExitUsage), "nothing to verify with is a usage error")
	g.Expect(errOut).To(ContainSubstring("--key"))
}
