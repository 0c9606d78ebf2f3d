//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/immutable-release/operator/internal/attest"
)

// attestationKeySecret is the Secret the operators of the stories sign deployment records
// with (--attestation-key-secret); e2eClusterName their --cluster-name.
const (
	attestationKeySecret = "attestation-key"
	e2eClusterName       = "e2e"
)

// specDeploymentRecorded: a platform admin makes the operator's key as the guide says; a
// release with spec.attest becomes healthy, and its deployment record is a note on the
// applied commit that plain git shows and the public key verifies; the next revision is
// recorded too, the first record marked replaced, and kubectl release audit verifies both.
func specDeploymentRecorded(t *testing.T) {
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "attest.key"), filepath.Join(dir, "attest.pub")
	for _, args := range [][]string{
		{"genpkey", "-algorithm", "ed25519", "-out", key},
		{"pkey", "-in", key, "-pubout", "-out", pub},
	} {
		if out, err := runCmd("openssl", args...); err != nil {
			t.Fatal(out, err)
		}
	}
	if _, err := kubectl("-n", "immutable-release-system", "delete", "secret", attestationKeySecret, "--ignore-not-found"); err != nil {
		t.Fatal(err)
	}
	if _, err := kubectl("-n", "immutable-release-system", "create", "secret", "generic", attestationKeySecret,
		"--from-file=private.pem="+key, "--from-file=public.pem="+pub); err != nil {
		t.Fatal(err)
	}
	pemPub, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	publicKey, err := attest.ParsePublicKey(pemPub)
	if err != nil {
		t.Fatal(err)
	}

	s := newStory(t, "1m", "attest: {}")
	s.eventually(30*time.Second, func() string {
		if st := s.condition("Attested", "status"); st != "True" {
			return "Attested is " + st + ": " + s.condition("Attested", "message")
		}
		return ""
	})
	note := s.note(s.first)
	entries, err := attest.Verify([]byte(note), publicKey)
	if err != nil || len(entries) != 1 || entries[0].Err != nil {
		t.Fatalf("the note on %s does not verify: %v %+v\n%s", s.first, err, entries, note)
	}
	d := entries[0].Statement.Predicate
	if d.Cluster != e2eClusterName || d.Source.Commit != s.first || d.Release.Namespace != s.ns || d.Images[0].Image != "ghcr.io/acme/web@"+digestV1 {
		t.Fatalf("the record says %+v", d)
	}

	second := s.push("Release web 2.0", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + digestV2)})
	if out, err := kubectlRelease("-n", s.ns, "reconcile", "shop", "--timeout", "1m"); err != nil {
		t.Fatal(out, err)
	}
	s.eventually(30*time.Second, func() string {
		out, _ := kubectl("-n", s.ns, "get", "immutablerelease", "shop", "-o", `jsonpath={.status.history[*].attestation.state}`)
		if out != "Healthy Replaced" {
			return "the records stand at " + out
		}
		return ""
	})
	out, err := kubectlRelease("-n", s.ns, "audit", "shop", "--public-key", pub)
	if err != nil {
		t.Fatal(out, err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], second[:12]) || !strings.Contains(lines[1], "running") ||
		!strings.Contains(lines[2], s.first[:12]) || strings.Contains(lines[2], "running") || strings.Count(out, "verified SHA256:") != 2 {
		t.Fatalf("kubectl release audit printed:\n%s", out)
	}
	t.Logf("kubectl release audit:\n%s", out)
	if out, err := kubectlRelease("-n", s.ns, "audit", "shop", "--key-secret", "immutable-release-system/"+attestationKeySecret); err != nil {
		t.Fatal(out, err)
	}
}

// note is what plain git shows of the deployment notes on commit.
func (s *story) note(commit string) string {
	s.t.Helper()
	s.must(s.repo.Git("fetch", "-q", "origin", "+refs/notes/immutable-release:refs/notes/immutable-release"))
	out, err := s.repo.Output("notes", "--ref=immutable-release", "show", commit)
	s.must(err)
	return out
}

func TestDeploymentRecorded(t *testing.T) { specDeploymentRecorded(t) }
