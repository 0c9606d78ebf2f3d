// Package verify checks, before anything is applied, who built each pinned image: it finds
// the image's Sigstore signatures and attestations in its registry (bundles attached as OCI
// 1.1 referrers, cosign v3's default, and cosign's older sha256-<hex>.sig tags), verifies
// them with sigstore-go against the trusted keys, certificate identities and provenance a
// Policy asks for, and returns a Verdict or an *Error that names the image, its digest and
// why. A registry that cannot be reached is an *UnavailableError, never a pass.
//
// A digest never changes, so a Cache keeps each verdict per (digest, policy): a fleet of
// releases sharing an image verifies it once.
package verify

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Bounds on a policy, so that a tenant's spec cannot make one verification cost without end.
const (
	// MaxKeys is how many public keys one requirement may trust.
	MaxKeys = 16
	// MaxIdentities is how many certificate identities one requirement may allow.
	MaxIdentities = 16
	// MaxAttestations is how many attestations one requirement may ask for.
	MaxAttestations = 8
	// MaxPatternLength bounds each regular expression.
	MaxPatternLength = 1024
	// MaxKeyBytes bounds one PEM public key.
	MaxKeyBytes = 16 << 10
)

// Identity is a keyless signer allowed: regular expressions on the OIDC issuer and the
// subject (the certificate's subject alternative name) of its Fulcio certificate. Each
// expression must match the whole value: '^' and '$' are implied.
type Identity struct {
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
}

// Attestation is a signed in-toto attestation that must be attached to the image: its
// predicate type, and for SLSA provenance, regular expressions on the builder's ID and the
// source repository (each matching the whole value; empty matches anything).
type Attestation struct {
	PredicateType    string `json:"predicateType"`
	BuilderID        string `json:"builderID,omitempty"`
	SourceRepository string `json:"sourceRepository,omitempty"`
}

// Requirement is what one party asks of every image: a signature by one of Keys or one of
// Identities, and every one of Attestations, signed by one of them too.
type Requirement struct {
	// Source names who asks, for messages: "spec.verify", "platform policy shop".
	Source string `json:"source"`
	// Keys are PEM-encoded public keys (PKIX).
	Keys [][]byte `json:"keys,omitempty"`
	// Identities are the keyless signers allowed.
	Identities   []Identity    `json:"identities,omitempty"`
	Attestations []Attestation `json:"attestations,omitempty"`
}

// Policy is every requirement an image must meet: the platform admin's and the release's.
// A release can only add to what the admin asks, never replace it.
type Policy struct {
	Requirements []Requirement `json:"requirements"`
}

// Empty says whether the policy asks for nothing: images are not verified at all.
func (p Policy) Empty() bool { return len(p.Requirements) == 0 }

// Hash identifies the policy: two policies with the same hash ask for the same thing.
// It keys the verdict cache, so that a changed key, identity or attestation is verified
// anew.
func (p Policy) Hash() string {
	b, _ := json.Marshal(p)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// key is a trusted public key.
type key struct {
	fingerprint string
	verifier    signature.Verifier
}

// attestation is an Attestation with its expressions compiled.
type attestation struct {
	Attestation
	builder, repository *regexp.Regexp
}

// requirement is a Requirement checked and compiled.
type requirement struct {
	source       string
	keys         []key
	identities   []Identity
	attestations []attestation
	issuers      []*regexp.Regexp
	subjects     []*regexp.Regexp
}

// compiled is a Policy checked and compiled.
type compiled struct {
	hash         string
	requirements []requirement
}

// ErrInvalidPolicy is wrapped by the errors of a policy that cannot be used: a key that
// does not parse, an expression that does not compile, a list over its bound.
var ErrInvalidPolicy = errors.New("invalid verification policy")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidPolicy, fmt.Sprintf(format, args...))
}

// compile checks every key and expression of the policy.
func compile(p Policy) (*compiled, error) {
	c := &compiled{hash: p.Hash()}
	for _, r := range p.Requirements {
		cr, err := compileRequirement(r)
		if err != nil {
			return nil, err
		}
		c.requirements = append(c.requirements, cr)
	}
	return c, nil
}

func compileRequirement(r Requirement) (requirement, error) {
	cr := requirement{source: r.Source, identities: r.Identities}
	switch {
	case len(r.Keys) > MaxKeys:
		return cr, invalid("%s: %d public keys, at most %d", r.Source, len(r.Keys), MaxKeys)
	case len(r.Identities) > MaxIdentities:
		return cr, invalid("%s: %d identities, at most %d", r.Source, len(r.Identities), MaxIdentities)
	case len(r.Attestations) > MaxAttestations:
		return cr, invalid("%s: %d attestations, at most %d", r.Source, len(r.Attestations), MaxAttestations)
	case len(r.Keys) == 0 && len(r.Identities) == 0:
		return cr, invalid("%s: neither a public key nor a certificate identity to verify signatures with", r.Source)
	}
	for i, pemKey := range r.Keys {
		k, err := parseKey(pemKey)
		if err != nil {
			return cr, invalid("%s: public key %d: %v", r.Source, i+1, err)
		}
		cr.keys = append(cr.keys, k)
	}
	for i, id := range r.Identities {
		issuer, err := wholeMatch(id.Issuer)
		if err != nil {
			return cr, invalid("%s: identity %d: issuer: %v", r.Source, i+1, err)
		}
		subject, err := wholeMatch(id.Subject)
		if err != nil {
			return cr, invalid("%s: identity %d: subject: %v", r.Source, i+1, err)
		}
		if id.Issuer == "" || id.Subject == "" {
			return cr, invalid("%s: identity %d: issuer and subject are both required", r.Source, i+1)
		}
		cr.issuers, cr.subjects = append(cr.issuers, issuer), append(cr.subjects, subject)
	}
	for i, a := range r.Attestations {
		if a.PredicateType == "" || len(a.PredicateType) > MaxPatternLength {
			return cr, invalid("%s: attestation %d: predicateType is required, at most %d characters", r.Source, i+1, MaxPatternLength)
		}
		ca := attestation{Attestation: a}
		var err error
		if ca.builder, err = wholeMatch(a.BuilderID); err != nil {
			return cr, invalid("%s: attestation %d: builderID: %v", r.Source, i+1, err)
		}
		if ca.repository, err = wholeMatch(a.SourceRepository); err != nil {
			return cr, invalid("%s: attestation %d: sourceRepository: %v", r.Source, i+1, err)
		}
		cr.attestations = append(cr.attestations, ca)
	}
	return cr, nil
}

// wholeMatch compiles an expression that must match the whole value; "" matches anything.
func wholeMatch(expr string) (*regexp.Regexp, error) {
	if len(expr) > MaxPatternLength {
		return nil, fmt.Errorf("expression longer than %d characters", MaxPatternLength)
	}
	if expr == "" {
		return nil, nil
	}
	return regexp.Compile("^(?:" + expr + ")$")
}

// matches says whether re (nil: anything) matches s.
func matches(re *regexp.Regexp, s string) bool { return re == nil || re.MatchString(s) }

// parseKey reads a PEM public key and names it by its fingerprint.
func parseKey(pemKey []byte) (key, error) {
	if len(pemKey) > MaxKeyBytes {
		return key{}, fmt.Errorf("larger than %d bytes", MaxKeyBytes)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemKey)
	if err != nil {
		return key{}, fmt.Errorf("not a PEM public key: %w", err)
	}
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return key{}, err
	}
	return key{fingerprint: Fingerprint(pub), verifier: v}, nil
}

// Fingerprint names a public key: sha256: and the hex SHA-256 of its PKIX DER form.
func Fingerprint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// CheckPolicy says whether the policy can be used, without verifying anything.
func CheckPolicy(p Policy) error {
	_, err := compile(p)
	return err
}
