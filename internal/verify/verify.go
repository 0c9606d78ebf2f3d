package verify

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
)

// Reason says why an image was refused.
type Reason string

// Reasons of an *Error.
const (
	// NoSignature: no Sigstore bundle referrer and no cosign .sig tag signs the digest.
	NoSignature Reason = "NoSignature"
	// OtherDigest: the signatures found sign another digest (copied from another image).
	OtherDigest Reason = "OtherDigest"
	// WrongKey: signed with a key that none of the trusted public keys is, or with a key
	// where only keyless identities are trusted.
	WrongKey Reason = "WrongKey"
	// WrongIdentity: signed keyless by an identity no allowed issuer and subject match, or
	// keyless where only keys are trusted.
	WrongIdentity Reason = "WrongIdentity"
	// CertificateExpired: the signing certificate was not valid when the signature was
	// logged, and no timestamp shows it was made while it was.
	CertificateExpired Reason = "CertificateExpired"
	// InvalidSignature: a signature by an allowed signer that does not verify (a log entry
	// or timestamp that does not check out, a signature over other bytes).
	InvalidSignature Reason = "InvalidSignature"
	// MissingAttestation: no attestation of the required predicate type is signed by a
	// trusted signer.
	MissingAttestation Reason = "MissingAttestation"
	// ProvenanceMismatch: the provenance names another builder or source repository.
	ProvenanceMismatch Reason = "ProvenanceMismatch"
	// RegistryAnswerTooLarge: the registry answered more than the bounds allow.
	RegistryAnswerTooLarge Reason = "RegistryAnswerTooLarge"
	// NotPinned: the reference is not name@sha256:<digest>.
	NotPinned Reason = "NotPinned"
)

// CosignSignPredicateType is the predicate of the in-toto statement cosign v3 signs when it
// signs an image with the new bundle format.
const CosignSignPredicateType = "https://sigstore.dev/cosign/sign/v1"

// Error is an image refused: its reference, digest, and why.
type Error struct {
	Image  string
	Digest string
	Reason Reason
	Detail string
}

func (e *Error) Error() string {
	return fmt.Sprintf("image %s (digest %s): %s", e.Image, e.Digest, e.Detail)
}

// UnavailableError is a registry that could not be read: retried, never a pass.
type UnavailableError struct {
	Image  string
	Digest string
	Err    error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("image %s (digest %s): reading its signatures from the registry failed: %v", e.Image, e.Digest, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Verdict is what verification found out about an image.
type Verdict struct {
	// Issuer and Subject are the verified keyless identity (OIDC issuer, certificate SAN).
	Issuer  string
	Subject string
	// KeyFingerprint names the public key that verified a key-based signature.
	KeyFingerprint string
	// LogIndex is the signature's transparency-log index, when it has an entry.
	LogIndex *int64
	// SourceCommit is the commit the provenance says the image was built from.
	SourceCommit string
	// VerifiedAt is when the verification was made.
	VerifiedAt time.Time
}

// Verifier verifies images against policies.
type Verifier struct {
	// Trusted is the Sigstore trust material (Fulcio, Rekor, timestamp authorities). Nil:
	// only key-based signatures without a log entry can be verified.
	Trusted root.TrustedMaterial
	// RequireSCT asks for a certificate transparency SCT in Fulcio certificates, as the
	// public Sigstore instance issues them.
	RequireSCT bool
	// Registry reads the signatures.
	Registry Registry

	// late is trust material set after the verifier is in use (SetTrusted).
	mu   sync.RWMutex
	late root.TrustedMaterial
}

// SetTrusted sets the trust material once it is loaded (the public root is fetched in the
// background, so that a manager without network starts anyway).
func (v *Verifier) SetTrusted(tm root.TrustedMaterial) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.late = tm
}

// trusted is the trust material, or nil.
func (v *Verifier) trusted() root.TrustedMaterial {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.late != nil {
		return v.late
	}
	return v.Trusted
}

// Verify checks the pinned image against every requirement of the policy and returns its
// verdict, or an *Error, an *UnavailableError, or an ErrInvalidPolicy error.
func (v *Verifier) Verify(ctx context.Context, image string, p Policy, keychain authn.Keychain) (Verdict, error) {
	c, err := compile(p)
	if err != nil {
		return Verdict{}, err
	}
	ref, err := digestOf(image)
	if err != nil {
		return Verdict{}, err
	}
	return v.verify(ctx, image, ref, c, keychain)
}

// digestOf parses a pinned reference.
func digestOf(image string) (name.Digest, error) {
	ref, err := name.NewDigest(image)
	if err != nil || !strings.HasPrefix(ref.DigestStr(), "sha256:") {
		_, d, _ := strings.Cut(image, "@")
		return name.Digest{}, &Error{Image: image, Digest: d, Reason: NotPinned, Detail: "not a reference pinned by a sha256 digest"}
	}
	return ref, nil
}

// parsed is a candidate read for what it claims, before any of it is verified: the claims
// only choose which check to make and what to say when it fails.
type parsed struct {
	candidate
	// statement is the in-toto statement of a DSSE bundle.
	statement *statement
	// digests are the digests it claims to sign.
	digests []string
	cert    *x509.Certificate
	summary certificate.Summary
}

type statement struct {
	PredicateType string `json:"predicateType"`
	Subject       []struct {
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	Predicate json.RawMessage `json:"predicate"`
}

// signer is who a verified signature was made by.
type signer struct {
	issuer, subject, fingerprint string
	logIndex                     *int64
}

// failure is why a candidate did not satisfy a requirement; rank orders how far it got.
type failure struct {
	reason Reason
	detail string
}

var rank = map[Reason]int{OtherDigest: 1, WrongKey: 2, WrongIdentity: 2, InvalidSignature: 3, CertificateExpired: 4}

func (v *Verifier) verify(ctx context.Context, image string, ref name.Digest, c *compiled, keychain authn.Keychain) (Verdict, error) {
	ctx, cancel := context.WithTimeout(ctx, v.Registry.timeout())
	defer cancel()
	digest := ref.DigestStr()
	refuse := func(reason Reason, format string, args ...any) (Verdict, error) {
		return Verdict{}, &Error{Image: image, Digest: digest, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	cands, skipped, err := v.Registry.find(ctx, ref, keychain)
	if errors.Is(err, errTooLarge) {
		return refuse(RegistryAnswerTooLarge, "%v", err)
	}
	if err != nil {
		return Verdict{}, &UnavailableError{Image: image, Digest: digest, Err: err}
	}
	all := make([]*parsed, 0, len(cands))
	for _, cand := range cands {
		if p, err := parse(cand); err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %v", cand.where, err))
		} else {
			all = append(all, p)
		}
	}
	hexDigest, _ := hex.DecodeString(strings.TrimPrefix(digest, "sha256:"))
	var verdict Verdict
	for i, req := range c.requirements {
		s, f := v.signature(req, all, digest, hexDigest)
		if f != nil {
			return refuse(f.reason, "%s: %s%s", req.source, f.detail, skippedNote(skipped))
		}
		commit := ""
		for _, a := range req.attestations {
			got, f := v.attestation(req, a, all, digest, hexDigest)
			if f != nil {
				return refuse(f.reason, "%s: %s%s", req.source, f.detail, skippedNote(skipped))
			}
			if commit == "" {
				commit = got
			}
		}
		if i == 0 {
			// The first requirement's signer is reported: the release's own, else the admin's.
			verdict = Verdict{Issuer: s.issuer, Subject: s.subject, KeyFingerprint: s.fingerprint, LogIndex: s.logIndex}
		}
		if verdict.SourceCommit == "" {
			verdict.SourceCommit = commit
		}
	}
	verdict.VerifiedAt = time.Now()
	return verdict, nil
}

func skippedNote(skipped []string) string {
	if len(skipped) == 0 {
		return ""
	}
	if len(skipped) > 3 {
		skipped = append(skipped[:3:3], fmt.Sprintf("%d more", len(skipped)-3))
	}
	return " (not signatures: " + strings.Join(skipped, "; ") + ")"
}

// parse reads what a candidate claims.
func parse(c candidate) (*parsed, error) {
	p := &parsed{candidate: c}
	content, err := c.entity.VerificationContent()
	if err != nil {
		return nil, err
	}
	if cert := content.Certificate(); cert != nil {
		p.cert = cert
		if p.summary, err = certificate.SummarizeCertificate(cert); err != nil {
			return nil, fmt.Errorf("certificate: %v", err)
		}
	}
	if c.payload != nil {
		d, err := signedDigest(c.payload)
		if err != nil {
			return nil, err
		}
		p.digests = []string{d}
		return p, nil
	}
	sc, err := c.entity.SignatureContent()
	if err != nil {
		return nil, err
	}
	env := sc.EnvelopeContent()
	if env == nil {
		return nil, errors.New("a message signature of a blob, not of an image")
	}
	raw := env.RawEnvelope()
	if raw.PayloadType != "application/vnd.in-toto+json" {
		return nil, fmt.Errorf("DSSE payload type %q is not an in-toto statement", raw.PayloadType)
	}
	payload, err := base64.StdEncoding.DecodeString(raw.Payload)
	if err != nil {
		return nil, errors.New("DSSE payload is not base64")
	}
	p.statement = &statement{}
	if err := json.Unmarshal(payload, p.statement); err != nil {
		return nil, fmt.Errorf("in-toto statement: %v", err)
	}
	for _, s := range p.statement.Subject {
		if h := s.Digest["sha256"]; h != "" {
			p.digests = append(p.digests, "sha256:"+h)
		}
	}
	return p, nil
}

// isSignature says whether the candidate signs the image (rather than attesting to it).
func (p *parsed) isSignature() bool {
	return p.payload != nil || p.statement.PredicateType == CosignSignPredicateType
}

// signature finds a signature of the digest by one of the requirement's signers.
func (v *Verifier) signature(req requirement, all []*parsed, digest string, hexDigest []byte) (signer, *failure) {
	var best *failure
	n := 0
	for _, p := range all {
		if !p.isSignature() {
			continue
		}
		n++
		s, f := v.check(p, req, digest, hexDigest)
		if f == nil {
			return s, nil
		}
		if best == nil || rank[f.reason] > rank[best.reason] {
			best = f
		}
	}
	if best == nil {
		return signer{}, &failure{NoSignature, "no signature (looked for Sigstore bundles attached as OCI referrers and the cosign tag " + strings.Replace(digest, ":", "-", 1) + ".sig)"}
	}
	if n > 1 {
		best.detail = fmt.Sprintf("none of %d signatures is trusted; %s", n, best.detail)
	}
	return signer{}, best
}

// attestation finds an attestation of the required predicate type, signed by one of the
// requirement's signers, whose provenance matches; it returns the source commit.
func (v *Verifier) attestation(req requirement, a attestation, all []*parsed, digest string, hexDigest []byte) (string, *failure) {
	var best *failure
	for _, p := range all {
		if p.statement == nil || p.statement.PredicateType != a.PredicateType {
			continue
		}
		if _, f := v.check(p, req, digest, hexDigest); f != nil {
			if best == nil || rank[f.reason] > rank[best.reason] {
				best = &failure{f.reason, "attestation " + a.PredicateType + ": " + f.detail}
			}
			continue
		}
		prov := parseProvenance(p.statement.Predicate)
		switch {
		case !matches(a.builder, prov.builderID):
			best = &failure{ProvenanceMismatch, fmt.Sprintf("provenance from builder %q, not one matching %q", prov.builderID, a.BuilderID)}
		case !matches(a.repository, prov.repository):
			best = &failure{ProvenanceMismatch, fmt.Sprintf("provenance from source repository %q, not one matching %q", prov.repository, a.SourceRepository)}
		default:
			return prov.commit, nil
		}
	}
	if best == nil {
		return "", &failure{MissingAttestation, "no attestation of predicate type " + a.PredicateType}
	}
	return "", best
}

// check verifies one candidate against the requirement's signers.
func (v *Verifier) check(p *parsed, req requirement, digest string, hexDigest []byte) (signer, *failure) {
	if !containsString(p.digests, digest) {
		return signer{}, &failure{OtherDigest, fmt.Sprintf("%s signs %s, not this digest", p.where, strings.Join(p.digests, ", "))}
	}
	artifact := sgverify.WithArtifactDigest("sha256", hexDigest)
	if p.payload != nil {
		artifact = sgverify.WithArtifact(bytes.NewReader(p.payload))
	}
	if p.cert != nil {
		return v.checkKeyless(p, req, artifact)
	}
	if len(req.keys) == 0 {
		return signer{}, &failure{WrongKey, p.where + " is signed with a key, but only keyless identities are trusted"}
	}
	entries, _ := p.entity.TlogEntries()
	var lastErr error
	for _, k := range req.keys {
		material := root.TrustedMaterialCollection{root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) {
			return root.NewExpiringKey(k.verifier, time.Time{}, time.Time{}), nil
		})}
		opts := []sgverify.VerifierOption{sgverify.WithoutStatementPredicate(), sgverify.WithNoObserverTimestamps()}
		if len(entries) > 0 {
			// A log entry the bundle carries is checked: its index is reported.
			if tm := v.trusted(); tm != nil {
				material = append(material, tm)
			}
			opts = []sgverify.VerifierOption{sgverify.WithoutStatementPredicate(), sgverify.WithTransparencyLog(1), sgverify.WithIntegratedTimestamps(1)}
		}
		verifier, err := sgverify.NewVerifier(material, opts...)
		if err != nil {
			return signer{}, &failure{InvalidSignature, err.Error()}
		}
		if _, err := verifier.Verify(p.entity, sgverify.NewPolicy(artifact, sgverify.WithKey())); err != nil {
			lastErr = err
			continue
		}
		s := signer{fingerprint: k.fingerprint}
		if len(entries) > 0 {
			s.logIndex = new(entries[0].LogIndex())
		}
		return s, nil
	}
	return signer{}, &failure{WrongKey, fmt.Sprintf("%s is not signed by any of the %d trusted keys (%v)", p.where, len(req.keys), lastErr)}
}

func (v *Verifier) checkKeyless(p *parsed, req requirement, artifact sgverify.ArtifactPolicyOption) (signer, *failure) {
	issuer, subject := p.summary.Issuer, p.summary.SubjectAlternativeName
	if len(req.identities) == 0 {
		return signer{}, &failure{WrongIdentity, fmt.Sprintf("%s is signed keyless by issuer %q subject %q, but only public keys are trusted", p.where, issuer, subject)}
	}
	var opts []sgverify.PolicyOption
	for i, id := range req.identities {
		if !req.issuers[i].MatchString(issuer) || !req.subjects[i].MatchString(subject) {
			continue
		}
		ci, err := sgverify.NewShortCertificateIdentity("", req.issuers[i].String(), "", req.subjects[i].String())
		if err != nil {
			return signer{}, &failure{InvalidSignature, fmt.Sprintf("identity %v: %v", id, err)}
		}
		opts = append(opts, sgverify.WithCertificateIdentity(ci))
	}
	if len(opts) == 0 {
		return signer{}, &failure{WrongIdentity, fmt.Sprintf("%s is signed by issuer %q subject %q, which no allowed identity matches", p.where, issuer, subject)}
	}
	tm := v.trusted()
	if tm == nil {
		return signer{}, &failure{InvalidSignature, p.where + " is signed keyless, but the manager has no Sigstore trusted root (--sigstore-trusted-root, or the public root it could not fetch)"}
	}
	vopts := []sgverify.VerifierOption{sgverify.WithoutStatementPredicate(), sgverify.WithTransparencyLog(1), sgverify.WithObserverTimestamps(1)}
	if v.RequireSCT {
		vopts = append(vopts, sgverify.WithSignedCertificateTimestamps(1))
	}
	verifier, err := sgverify.NewVerifier(tm, vopts...)
	if err != nil {
		return signer{}, &failure{InvalidSignature, err.Error()}
	}
	if _, err := verifier.Verify(p.entity, sgverify.NewPolicy(artifact, opts...)); err != nil {
		if f := expired(p); f != nil {
			return signer{}, f
		}
		return signer{}, &failure{InvalidSignature, fmt.Sprintf("%s by issuer %q subject %q does not verify: %v", p.where, issuer, subject, err)}
	}
	s := signer{issuer: issuer, subject: subject}
	if entries, _ := p.entity.TlogEntries(); len(entries) > 0 {
		s.logIndex = new(entries[0].LogIndex())
	}
	return s, nil
}

// expired says, of a keyless signature that did not verify, whether it is because its
// certificate had expired (or was not yet valid) at every time the bundle claims the
// signature was made, with no timestamp authority's word on it.
func expired(p *parsed) *failure {
	if ts, _ := p.entity.Timestamps(); len(ts) > 0 {
		return nil
	}
	entries, _ := p.entity.TlogEntries()
	for _, e := range entries {
		if t := e.IntegratedTime(); !t.Before(p.cert.NotBefore) && !t.After(p.cert.NotAfter) {
			return nil
		}
	}
	when := "no transparency-log entry or timestamp says when it was made"
	if len(entries) > 0 {
		when = "it was logged at " + entries[0].IntegratedTime().UTC().Format(time.RFC3339) + " and no timestamp shows it was made while the certificate was valid"
	}
	return &failure{CertificateExpired, fmt.Sprintf("%s: the certificate was valid from %s to %s; %s",
		p.where, p.cert.NotBefore.UTC().Format(time.RFC3339), p.cert.NotAfter.UTC().Format(time.RFC3339), when)}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
