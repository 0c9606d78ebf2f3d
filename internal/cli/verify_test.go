package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
)

const digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

func deployment(image string) string {
	return "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers:\n      - {name: app, image: \"" + image + "\"}\n"
}

func folder(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func verify(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := Run(context.Background(), append([]string{"verify"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestVerify runs the operator's own validation offline: the verdicts of the bad-input
// table, printed as file:line: object container: message, and as JSON for CI.
func TestVerify(t *testing.T) {
	g := NewWithT(t)
	good := folder(t, map[string]string{"deploy/app.yaml": deployment("ghcr.io/acme/web@" + digest)})
	code, out, _ := verify(filepath.Join(good, "deploy"))
	g.Expect(code).To(Equal(ExitOK))
	g.Expect(out).To(ContainSubstring(": 1 objects, 1 images pinned by digest"))

	tests := []struct {
		name, file, reason, line string
	}{
		{name: "tag only", file: deployment("ghcr.io/acme/web:1.4"), reason: "ImageNotPinned",
			line: `app.yaml:1: Deployment/web container app: image "ghcr.io/acme/web:1.4" has a tag but no digest; name it as ghcr.io/acme/web:1.4@sha256:<digest>`},
		{name: "latest", file: deployment("web:latest"), reason: "ImageNotPinned", line: "uses the tag latest"},
		{name: "short digest", file: deployment("web@sha256:abc"), reason: "ImageNotPinned", line: "malformed digest"},
		{name: "sha512", file: deployment("web@sha512:abc"), reason: "ImageNotPinned", line: "uses a sha512 digest; only sha256 digests are accepted"},
		{name: "malformed YAML", file: "kind: [", reason: "InvalidManifest", line: "app.yaml: YAML error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			dir := folder(t, map[string]string{"app.yaml": tt.file})
			code, out, errOut := verify(dir)
			g.Expect(code).To(Equal(ExitFailed))
			g.Expect(out).To(ContainSubstring(tt.line))
			g.Expect(errOut).To(ContainSubstring("(" + tt.reason + ")"))

			code, out, _ = verify(dir, "-o", "json")
			g.Expect(code).To(Equal(ExitFailed))
			var res verifyResult
			g.Expect(json.Unmarshal([]byte(out), &res)).To(Succeed())
			g.Expect(res.Valid).To(BeFalse())
			g.Expect(res.Reason).To(Equal(tt.reason))
			g.Expect(res.Problems).NotTo(BeEmpty())
		})
	}
	code, _, _ = verify(good, "-o", "xml")
	g.Expect(code).To(Equal(ExitUsage))
}
