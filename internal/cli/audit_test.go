package cli

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/attest"
)

func TestParseSince(t *testing.T) {
	g := NewWithT(t)
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                     {},
		"24h":                  now.Add(-24 * time.Hour),
		"7d":                   now.Add(-7 * 24 * time.Hour),
		"90m":                  now.Add(-90 * time.Minute),
		"2026-01-31":           time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC),
		"2026-01-31T10:00:00Z": time.Date(2026, 1, 31, 10, 0, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		g.Expect(err).NotTo(HaveOccurred(), in)
		g.Expect(got).To(Equal(want), in)
	}
	for _, in := range []string{"yesterday", "-1h", "-3d", "d", "31/01/2026"} {
		_, err := parseSince(in, now)
		g.Expect(err).To(HaveOccurred(), in)
	}
}

func TestAuditCells(t *testing.T) {
	g := NewWithT(t)
	at := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	g.Expect(until(attest.Deployment{})).To(Equal("running"))
	g.Expect(until(attest.Deployment{ReplacedAt: &at})).To(Equal("2026-12-02T12:00:00Z"))
	g.Expect(until(attest.Deployment{ReplacedAt: &at, RolledBackAt: &at})).To(Equal("2026-12-02T12:00:00Z (rolled back)"))
	g.Expect(builtBy(attest.Deployment{Images: []attest.Image{{}, {}}})).To(Equal("-"))
	g.Expect(builtBy(attest.Deployment{Images: []attest.Image{
		{Signer: &attest.ImageSigner{Issuer: "https://token.actions.githubusercontent.com", Subject: "https://github.com/acme/shop/.github/workflows/build.yaml@refs/heads/main"}},
		{Signer: &attest.ImageSigner{KeyFingerprint: "SHA256:abc"}},
		{Signer: &attest.ImageSigner{KeyFingerprint: "SHA256:abc"}},
	}})).To(Equal("https://github.com/acme/shop/.github/workflows/build.yaml@refs/heads/main, SHA256:abc"))
}
