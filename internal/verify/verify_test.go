package verify

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/verify/verifytest"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
)

const (
	ciIssuer  = "https://token.actions.githubusercontent.com"
	ciSubject = "https://github.com/acme/shop/.github/workflows/build.yml@refs/heads/main"
	builder   = "https://github.com/acme/.github/.github/workflows/slsa.yml@refs/heads/main"
	shopRepo  = "https://github.com/acme/shop"
	commit    = "0123456789abcdef0123456789abcdef01234567"
)

// fixture is a registry, a virtual Sigstore whose trusted root is written to a file and
// read back as the admin's, an ECDSA key, and a Verifier with them.
type fixture struct {
	t   *testing.T
	reg *verifytest.Registry
	ss  *sigstore
	key verifytest.Key
	v   *Verifier
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, reg: verifytest.NewRegistry(t, nil), ss: newSigstore(t), key: verifytest.NewKey(t)}
	f.v = &Verifier{Trusted: writeTrustedRoot(t, f.ss), Registry: Registry{Timeout: 5 * time.Second}}
	return f
}

// writeTrustedRoot writes the virtual Sigstore's trusted_root.json and loads it back.
func writeTrustedRoot(t testing.TB, ss *sigstore) *root.TrustedRoot {
	// The virtual Sigstore names its logs by their hex IDs' characters; a trusted_root.json
	// holds the raw key IDs.
	logs := map[string]*root.TransparencyLog{}
	for id, l := range ss.vs.RekorLogs() {
		raw, err := hex.DecodeString(id)
		must(t, err)
		l.ID = raw
		logs[id] = l
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, ss.vs.FulcioCertificateAuthorities(), map[string]*root.TransparencyLog{}, ss.vs.TimestampingAuthorities(), logs)
	must(t, err)
	data, err := tr.MarshalJSON()
	must(t, err)
	path := filepath.Join(t.TempDir(), "trusted_root.json")
	must(t, os.WriteFile(path, data, 0o600))
	loaded, err := LoadTrustedRoot(path)
	must(t, err)
	return loaded
}

func keyPolicy(k verifytest.Key) Policy {
	return Policy{Requirements: []Requirement{{Source: "spec.verify", Keys: [][]byte{k.PublicPEM}}}}
}

func identityPolicy(issuer, subject string) Policy {
	return Policy{Requirements: []Requirement{{Source: "spec.verify", Identities: []Identity{{Issuer: issuer, Subject: subject}}}}}
}

func withProvenance(p Policy, builderID, repo string) Policy {
	p.Requirements[0].Attestations = []Attestation{{PredicateType: "https://slsa.dev/provenance/v1", BuilderID: builderID, SourceRepository: repo}}
	return p
}

func (f *fixture) signStatement(img name.Digest) []byte {
	return verifytest.Statement(img.DigestStr(), CosignSignPredicateType, map[string]any{})
}

// keyless signs img keyless as the CI's identity, logged now.
func (f *fixture) keyless(img name.Digest, subject string) *protobundle.Bundle {
	return f.ss.keylessBundle(subject, ciIssuer, f.signStatement(img), time.Now().Add(5*time.Minute), true)
}

func verdictOf(t *testing.T, f *fixture, img name.Digest, p Policy) (Verdict, error) {
	t.Helper()
	return f.v.Verify(context.Background(), img.String(), p, nil)
}

func reasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func TestVerify(t *testing.T) {
	f := newFixture(t)
	other := verifytest.NewKey(t)
	otherDigest := f.reg.Push("acme/other")

	cases := []struct {
		name string
		// sign signs img (pushed to acme/<name>) in the registry.
		sign   func(img name.Digest)
		policy Policy
		// reason is the refusal expected; "" is a pass.
		reason Reason
		// in is what the message must say.
		in  []string
		was func(g Gomega, v Verdict)
	}{{
		name:   "valid key signature",
		sign:   func(img name.Digest) { f.reg.Attach(img, f.key.Bundle(f.signStatement(img)), false) },
		policy: keyPolicy(f.key),
		was: func(g Gomega, v Verdict) {
			g.Expect(v.KeyFingerprint).To(HavePrefix("sha256:"))
			g.Expect(v.Issuer).To(BeEmpty())
		},
	}, {
		name:   "valid key signature through the referrers tag fallback",
		sign:   func(img name.Digest) { f.reg.Attach(img, f.key.Bundle(f.signStatement(img)), true) },
		policy: keyPolicy(f.key),
	}, {
		name: "valid legacy key signature",
		sign: func(img name.Digest) {
			f.reg.AttachLegacy(img, f.key.Legacy(verifytest.SimpleSigningPayload(img, img.DigestStr())))
		},
		policy: keyPolicy(f.key),
	}, {
		name:   "valid keyless signature with a matching identity",
		sign:   func(img name.Digest) { f.reg.Attach(img, f.keyless(img, ciSubject), false) },
		policy: identityPolicy("^"+ciIssuer+"$", "^https://github.com/acme/.*$"),
		was: func(g Gomega, v Verdict) {
			g.Expect(v.Issuer).To(Equal(ciIssuer))
			g.Expect(v.Subject).To(Equal(ciSubject))
			g.Expect(v.LogIndex).NotTo(BeNil())
		},
	}, {
		name: "valid legacy keyless signature",
		sign: func(img name.Digest) {
			f.reg.AttachLegacy(img, f.ss.legacy(ciSubject, ciIssuer, verifytest.SimpleSigningPayload(img, img.DigestStr())))
		},
		policy: identityPolicy(ciIssuer, "https://github.com/acme/.*"),
		was: func(g Gomega, v Verdict) {
			g.Expect(v.Subject).To(Equal(ciSubject))
			g.Expect(*v.LogIndex).To(Equal(int64(1000)))
		},
	}, {
		name: "wrong identity",
		sign: func(img name.Digest) {
			f.reg.Attach(img, f.keyless(img, "https://github.com/evil/shop/.github/workflows/x.yml@refs/heads/main"), false)
		},
		policy: identityPolicy(ciIssuer, "https://github.com/acme/.*"),
		reason: WrongIdentity,
		in:     []string{"github.com/evil/shop", "no allowed identity matches"},
	}, {
		name: "an unanchored pattern matches the whole subject only",
		sign: func(img name.Digest) {
			f.reg.Attach(img, f.keyless(img, "https://evil.example/https://github.com/acme/x"), false)
		},
		policy: identityPolicy(ciIssuer, "https://github.com/acme/.*"),
		reason: WrongIdentity,
	}, {
		name:   "wrong key",
		sign:   func(img name.Digest) { f.reg.Attach(img, other.Bundle(f.signStatement(img)), false) },
		policy: keyPolicy(f.key),
		reason: WrongKey,
		in:     []string{"not signed by any of the 1 trusted keys"},
	}, {
		name:   "keyless signature where only keys are trusted",
		sign:   func(img name.Digest) { f.reg.Attach(img, f.keyless(img, ciSubject), false) },
		policy: keyPolicy(f.key),
		reason: WrongIdentity,
		in:     []string{"only public keys are trusted"},
	}, {
		name:   "unsigned",
		sign:   func(name.Digest) {},
		policy: keyPolicy(f.key),
		reason: NoSignature,
		in:     []string{"no signature", ".sig"},
	}, {
		name:   "a signature of another digest",
		sign:   func(img name.Digest) { f.reg.Attach(img, f.key.Bundle(f.signStatement(otherDigest)), false) },
		policy: keyPolicy(f.key),
		reason: OtherDigest,
		in:     []string{"signs " + otherDigest.DigestStr()},
	}, {
		name: "a legacy signature of another digest",
		sign: func(img name.Digest) {
			f.reg.AttachLegacy(img, f.key.Legacy(verifytest.SimpleSigningPayload(img, otherDigest.DigestStr())))
		},
		policy: keyPolicy(f.key),
		reason: OtherDigest,
	}, {
		name: "a legacy signature whose signature is not over its payload",
		sign: func(img name.Digest) {
			s := f.key.Legacy(verifytest.SimpleSigningPayload(img, otherDigest.DigestStr()))
			s.Payload = verifytest.SimpleSigningPayload(img, img.DigestStr())
			f.reg.AttachLegacy(img, s)
		},
		policy: keyPolicy(f.key),
		reason: WrongKey,
	}, {
		name: "certificate expired at signing time without a timestamp",
		sign: func(img name.Digest) {
			// Logged 20 minutes after the ten-minute certificate expired; no timestamp.
			f.reg.Attach(img, f.ss.keylessBundle(ciSubject, ciIssuer, f.signStatement(img), time.Now().Add(30*time.Minute), false), false)
		},
		policy: identityPolicy(ciIssuer, ".*"),
		reason: CertificateExpired,
		in:     []string{"certificate was valid from"},
	}, {
		name: "valid provenance",
		sign: func(img name.Digest) {
			f.reg.Attach(img, f.keyless(img, ciSubject), false)
			f.reg.Attach(img, f.ss.keylessBundle(ciSubject, ciIssuer, verifytest.Statement(img.DigestStr(), "https://slsa.dev/provenance/v1", verifytest.SLSAv1(builder, shopRepo, commit)), time.Now().Add(5*time.Minute), true), false)
		},
		policy: withProvenance(identityPolicy(ciIssuer, ".*"), "^https://github.com/acme/.github/.*$", "^https://github.com/acme/shop$"),
		was:    func(g Gomega, v Verdict) { g.Expect(v.SourceCommit).To(Equal(commit)) },
	}, {
		name: "provenance from another builder",
		sign: func(img name.Digest) {
			f.reg.Attach(img, f.keyless(img, ciSubject), false)
			f.reg.Attach(img, f.ss.keylessBundle(ciSubject, ciIssuer, verifytest.Statement(img.DigestStr(), "https://slsa.dev/provenance/v1", verifytest.SLSAv1("https://laptop.example/builder", shopRepo, commit)), time.Now().Add(5*time.Minute), true), false)
		},
		policy: withProvenance(identityPolicy(ciIssuer, ".*"), "^https://github.com/acme/.github/.*$", "^https://github.com/acme/shop$"),
		reason: ProvenanceMismatch,
		in:     []string{"laptop.example"},
	}, {
		name: "provenance from another repository",
		sign: func(img name.Digest) {
			f.reg.Attach(img, f.key.Bundle(f.signStatement(img)), false)
			f.reg.Attach(img, f.key.Bundle(verifytest.Statement(img.DigestStr(), "https://slsa.dev/provenance/v1", verifytest.SLSAv1(builder, "https://github.com/evil/shop", commit))), false)
		},
		policy: withProvenance(keyPolicy(f.key), "", "^https://github.com/acme/shop$"),
		reason: ProvenanceMismatch,
		in:     []string{"github.com/evil/shop"},
	}, {
		name: "provenance signed by an untrusted key",
		sign: func(img name.Digest) {
			f.reg.Attach(img, f.key.Bundle(f.signStatement(img)), false)
			f.reg.Attach(img, other.Bundle(verifytest.Statement(img.DigestStr(), "https://slsa.dev/provenance/v1", verifytest.SLSAv1(builder, shopRepo, commit))), false)
		},
		policy: withProvenance(keyPolicy(f.key), "", ""),
		reason: WrongKey,
		in:     []string{"attestation https://slsa.dev/provenance/v1"},
	}, {
		name: "valid provenance in cosign's legacy .att tag, keyless",
		sign: func(img name.Digest) {
			f.reg.AttachLegacy(img, f.ss.legacy(ciSubject, ciIssuer, verifytest.SimpleSigningPayload(img, img.DigestStr())))
			f.reg.AttachLegacyAttestations(img, f.ss.legacyAttestation(ciSubject, ciIssuer, verifytest.Statement(img.DigestStr(), "https://slsa.dev/provenance/v1", verifytest.SLSAv1(builder, shopRepo, commit))))
		},
		policy: withProvenance(identityPolicy(ciIssuer, ".*"), "^https://github.com/acme/.github/.*$", "^https://github.com/acme/shop$"),
		was:    func(g Gomega, v Verdict) { g.Expect(v.SourceCommit).To(Equal(commit)) },
	}, {
		name: "provenance from another builder in cosign's legacy .att tag",
		sign: func(img name.Digest) {
			f.reg.AttachLegacy(img, f.key.Legacy(verifytest.SimpleSigningPayload(img, img.DigestStr())))
			f.reg.AttachLegacyAttestations(img, f.key.LegacyAttestation(verifytest.Statement(img.DigestStr(), "https://slsa.dev/provenance/v1", verifytest.SLSAv1("https://laptop.example/builder", shopRepo, commit))))
		},
		policy: withProvenance(keyPolicy(f.key), "^https://github.com/acme/.github/.*$", ""),
		reason: ProvenanceMismatch,
		in:     []string{"laptop.example"},
	}, {
		name:   "no provenance",
		sign:   func(img name.Digest) { f.reg.Attach(img, f.key.Bundle(f.signStatement(img)), false) },
		policy: withProvenance(keyPolicy(f.key), "", ""),
		reason: MissingAttestation,
	}, {
		name: "an attestation is not a signature",
		sign: func(img name.Digest) {
			f.reg.Attach(img, f.key.Bundle(verifytest.Statement(img.DigestStr(), "https://slsa.dev/provenance/v1", verifytest.SLSAv1(builder, shopRepo, commit))), false)
		},
		policy: keyPolicy(f.key),
		reason: NoSignature,
	}, {
		name: "the platform's requirement and the release's both hold",
		sign: func(img name.Digest) {
			f.reg.Attach(img, f.key.Bundle(f.signStatement(img)), false)
			f.reg.Attach(img, f.keyless(img, ciSubject), false)
		},
		policy: Policy{Requirements: []Requirement{
			{Source: "spec.verify", Keys: [][]byte{f.key.PublicPEM}},
			{Source: "platform policy ci", Identities: []Identity{{Issuer: ciIssuer, Subject: ".*"}}},
		}},
		was: func(g Gomega, v Verdict) { g.Expect(v.KeyFingerprint).NotTo(BeEmpty()) },
	}, {
		name: "the platform's requirement fails though the release's holds",
		sign: func(img name.Digest) { f.reg.Attach(img, f.key.Bundle(f.signStatement(img)), false) },
		policy: Policy{Requirements: []Requirement{
			{Source: "spec.verify", Keys: [][]byte{f.key.PublicPEM}},
			{Source: "platform policy ci", Identities: []Identity{{Issuer: ciIssuer, Subject: ".*"}}},
		}},
		reason: WrongKey,
		in:     []string{"platform policy ci", "only keyless identities are trusted"},
	}, {
		name: "a broken bundle beside a valid signature",
		sign: func(img name.Digest) {
			f.reg.AttachBlob(img, []byte(`{"mediaType": "nonsense"`), BundleMediaType, false)
			f.reg.Attach(img, f.key.Bundle(f.signStatement(img)), false)
		},
		policy: keyPolicy(f.key),
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			img := f.reg.Push("acme/" + strings.NewReplacer(" ", "-", "'", "", ",", "").Replace(tc.name))
			tc.sign(img)
			v, err := verdictOf(t, f, img, tc.policy)
			if tc.reason == "" {
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(v.VerifiedAt).NotTo(BeZero())
				if tc.was != nil {
					tc.was(g, v)
				}
				return
			}
			g.Expect(err).To(HaveOccurred())
			g.Expect(reasonOf(err)).To(Equal(tc.reason), err.Error())
			g.Expect(err.Error()).To(ContainSubstring(img.String()), "the message names the image")
			g.Expect(err.Error()).To(ContainSubstring(img.DigestStr()), "the message names the digest")
			for _, s := range tc.in {
				g.Expect(err.Error()).To(ContainSubstring(s))
			}
		})
	}
}
