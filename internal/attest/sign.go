package attest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// Keys of the attestation key Secret (the manager's --attestation-key-secret).
const (
	// PrivateKeyField holds the signing key: a PEM "PRIVATE KEY" (PKCS #8) of an ECDSA P-256
	// or Ed25519 key, or a PEM "EC PRIVATE KEY" (SEC 1) of a P-256 key, unencrypted.
	PrivateKeyField = "private.pem"
	// PublicKeyField holds, optionally, its PEM "PUBLIC KEY" (PKIX): what auditors are
	// given. When present it must be the signing key's own.
	PublicKeyField = "public.pem"
)

// ErrInvalidKey marks key material that cannot be used: not PEM, another algorithm or
// curve, a public key that is not the private key's.
var ErrInvalidKey = errors.New("invalid attestation key")

// Key is a private key that signs statements.
type Key struct {
	signer crypto.Signer
	public *PublicKey
}

// PublicKey verifies statements.
type PublicKey struct {
	key crypto.PublicKey
	id  string
}

// ParsePrivateKey reads a signing key as PrivateKeyField holds it.
func ParsePrivateKey(data []byte) (*Key, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found; write the key as -----BEGIN PRIVATE KEY----- (openssl genpkey -algorithm ed25519, or -algorithm EC -pkeyopt ec_paramgen_curve:P-256)", ErrInvalidKey)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%w: more than one PEM block; keep only the private key", ErrInvalidKey)
	}
	var parsed any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		parsed, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%w: a PEM block of type %q; want PRIVATE KEY or EC PRIVATE KEY (unencrypted)", ErrInvalidKey, block.Type)
	}
	if err != nil {
		// The parser's error says nothing of the key's bytes.
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	signer, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: a %T cannot sign", ErrInvalidKey, parsed)
	}
	pub, err := newPublicKey(signer.Public())
	if err != nil {
		return nil, err
	}
	return &Key{signer: signer, public: pub}, nil
}

// ParsePublicKey reads a PEM "PUBLIC KEY" (PKIX) of an ECDSA P-256 or Ed25519 key.
func ParsePublicKey(data []byte) (*PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: no PEM block of type PUBLIC KEY found", ErrInvalidKey)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	return newPublicKey(k)
}

// KeyFromSecret reads the signing key from the data of the attestation key Secret, and
// checks that its public key, when the Secret holds one, is the private key's own.
func KeyFromSecret(data map[string][]byte) (*Key, error) {
	raw, ok := data[PrivateKeyField]
	if !ok || len(raw) == 0 {
		return nil, fmt.Errorf("%w: no key %s", ErrInvalidKey, PrivateKeyField)
	}
	k, err := ParsePrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", PrivateKeyField, err)
	}
	if pub, ok := data[PublicKeyField]; ok {
		p, err := ParsePublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", PublicKeyField, err)
		}
		if p.ID() != k.Public().ID() {
			return nil, fmt.Errorf("%w: %s (%s) is not the public key of %s (%s)", ErrInvalidKey, PublicKeyField, p.ID(), PrivateKeyField, k.Public().ID())
		}
	}
	return k, nil
}

// PublicKeyFromSecret reads the public key auditors verify with from the Secret's data:
// PublicKeyField, or the public half of PrivateKeyField.
func PublicKeyFromSecret(data map[string][]byte) (*PublicKey, error) {
	if pub, ok := data[PublicKeyField]; ok {
		p, err := ParsePublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", PublicKeyField, err)
		}
		return p, nil
	}
	k, err := KeyFromSecret(data)
	if err != nil {
		return nil, err
	}
	return k.Public(), nil
}

func newPublicKey(k crypto.PublicKey) (*PublicKey, error) {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: an ECDSA key on %s; use P-256", ErrInvalidKey, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("%w: a %T key; use ECDSA P-256 or Ed25519", ErrInvalidKey, k)
	}
	id, err := dsse.SHA256KeyID(k)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	return &PublicKey{key: k, id: id}, nil
}

// Public returns the key's public half.
func (k *Key) Public() *PublicKey { return k.public }

// ID is the key's fingerprint, SHA256:<base64> as ssh-keygen -l prints it; it is each
// signature's keyid.
func (p *PublicKey) ID() string { return p.id }

// PEM returns the key as a PEM "PUBLIC KEY".
func (p *PublicKey) PEM() []byte {
	der, _ := x509.MarshalPKIXPublicKey(p.key)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Sign signs the statement and returns its DSSE envelope as one line of JSON, without the
// newline.
func (k *Key) Sign(st *Statement) ([]byte, error) {
	if err := st.Check(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	es, err := dsse.NewEnvelopeSigner(dsseKey{k: k.signer, pub: k.public})
	if err != nil {
		return nil, err
	}
	env, err := es.SignPayload(context.Background(), PayloadType, body)
	if err != nil {
		return nil, fmt.Errorf("signing the statement: %w", err)
	}
	return json.Marshal(env)
}

// Verify checks the envelope in line with the key and returns the statement it signs. It
// fails on anything else: another payload type, a signature by another key, a payload
// changed after signing, a statement not of our form.
func (p *PublicKey) Verify(line []byte) (*Statement, error) {
	if len(line) > MaxLineBytes {
		return nil, fmt.Errorf("the envelope is over %d bytes", MaxLineBytes)
	}
	var env dsse.Envelope
	if err := json.Unmarshal(line, &env); err != nil {
		return nil, errors.New("not a DSSE envelope: the line is not JSON of one")
	}
	if env.PayloadType != PayloadType {
		return nil, fmt.Errorf("payload type %q is not %s", env.PayloadType, PayloadType)
	}
	ev, err := dsse.NewEnvelopeVerifier(dsseKey{pub: p})
	if err != nil {
		return nil, err
	}
	_, body, err := ev.VerifyAndDecode(context.Background(), &env)
	if err != nil {
		return nil, fmt.Errorf("the signature does not verify with key %s", p.ID())
	}
	st, err := decodeStatement(body)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// Peek decodes the statement of an envelope without verifying it: to find a line's key in
// a note, never to believe what it says.
func Peek(line []byte) (*Statement, error) {
	if len(line) > MaxLineBytes {
		return nil, fmt.Errorf("the envelope is over %d bytes", MaxLineBytes)
	}
	var env dsse.Envelope
	if err := json.Unmarshal(line, &env); err != nil {
		return nil, errors.New("not a DSSE envelope")
	}
	body, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil, errors.New("the payload is not base64")
	}
	return decodeStatement(body)
}

func decodeStatement(body []byte) (*Statement, error) {
	var st Statement
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, errors.New("the payload is not an in-toto statement")
	}
	if err := st.Check(); err != nil {
		return nil, err
	}
	return &st, nil
}

// dsseKey adapts a key to dsse's Signer and Verifier: ECDSA signs the SHA-256 of the
// pre-authentication encoding (ASN.1 signature), Ed25519 the encoding itself.
type dsseKey struct {
	k   crypto.Signer
	pub *PublicKey
}

func (d dsseKey) Sign(_ context.Context, data []byte) ([]byte, error) {
	switch d.pub.key.(type) {
	case ed25519.PublicKey:
		return d.k.Sign(rand.Reader, data, crypto.Hash(0))
	default:
		sum := sha256.Sum256(data)
		return d.k.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
}

func (d dsseKey) Verify(_ context.Context, data, sig []byte) error {
	switch k := d.pub.key.(type) {
	case ed25519.PublicKey:
		if !ed25519.Verify(k, data, sig) {
			return errors.New("bad signature")
		}
	case *ecdsa.PublicKey:
		sum := sha256.Sum256(data)
		if !ecdsa.VerifyASN1(k, sum[:], sig) {
			return errors.New("bad signature")
		}
	}
	return nil
}

func (d dsseKey) KeyID() (string, error) { return d.pub.id, nil }

func (d dsseKey) Public() crypto.PublicKey { return d.pub.key }
