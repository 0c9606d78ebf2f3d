// Package verifytest signs images for tests: a real OCI registry on loopback
// (go-containerregistry's), images with random layers, and Sigstore signatures made with
// an ECDSA key, attached as cosign does (a bundle referrer, or a legacy .sig tag).
package verifytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// Media types and annotations, as cosign writes them.
const (
	BundleMediaType        = "application/vnd.dev.sigstore.bundle.v0.3+json"
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	DSSEMediaType          = "application/vnd.dsse.envelope.v1+json"
	SignatureAnnotation    = "dev.cosignproject.cosign/signature"
	// CosignSignPredicateType is the predicate of the statement cosign v3 signs.
	CosignSignPredicateType = "https://sigstore.dev/cosign/sign/v1"
	inTotoPayloadType       = "application/vnd.in-toto+json"
)

// Registry is an OCI registry on loopback.
type Registry struct {
	T      testing.TB
	Server *httptest.Server
	// Host is host:port, as image references name it.
	Host string
}

// NewRegistry serves a registry with the OCI referrers API; wrap, when given, wraps its
// handler (to take it down, hang up, or answer for it).
func NewRegistry(t testing.TB, wrap func(http.Handler) http.Handler) *Registry {
	var h http.Handler = registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &Registry{T: t, Server: srv, Host: strings.TrimPrefix(srv.URL, "http://")}
}

// Push pushes an image with a random layer and returns its pinned reference.
func (r *Registry) Push(repo string) name.Digest {
	r.T.Helper()
	img, err := random.Image(512, 1)
	must(r.T, err)
	tag, err := name.NewTag(r.Host + "/" + repo + ":v1")
	must(r.T, err)
	must(r.T, remote.Write(tag, img))
	d, err := img.Digest()
	must(r.T, err)
	return tag.Context().Digest(d.String())
}

// rawManifest is a manifest written as given.
type rawManifest struct {
	body      []byte
	mediaType types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.body, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mediaType, nil }

func (r *Registry) blob(repo name.Repository, data []byte, mt types.MediaType) v1.Descriptor {
	r.T.Helper()
	l := static.NewLayer(data, mt)
	must(r.T, remote.WriteLayer(repo, l))
	d, _ := l.Digest()
	return v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
}

func (r *Registry) putManifest(ref name.Reference, m any) v1.Descriptor {
	r.T.Helper()
	b, err := json.Marshal(m)
	must(r.T, err)
	must(r.T, remote.Put(ref, rawManifest{b, types.OCIManifestSchema1}))
	h, size, _ := v1.SHA256(strings.NewReader(string(b)))
	return v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: h, Size: size}
}

// Attach attaches a Sigstore bundle to img as a referrer, as cosign v3 does. With
// fallback, it also writes the referrers tag schema's index (sha256-<hex>), as cosign does
// for a registry without the referrers API.
func (r *Registry) Attach(img name.Digest, b *protobundle.Bundle, fallback bool) {
	r.T.Helper()
	data, err := (&bundle.Bundle{Bundle: b}).MarshalJSON()
	must(r.T, err)
	r.AttachBlob(img, data, BundleMediaType, fallback)
}

// AttachBlob attaches data as a referrer of img whose layer has the media type mt.
func (r *Registry) AttachBlob(img name.Digest, data []byte, mt string, fallback bool) {
	r.T.Helper()
	repo := img.Context()
	// The config's media type is the artifact type: go-containerregistry's registry lists
	// referrers by it (the OCI fallback when a manifest's artifactType is not read).
	cfg := r.blob(repo, []byte("{}"), BundleMediaType)
	layer := r.blob(repo, data, types.MediaType(mt))
	head, err := remote.Head(img)
	must(r.T, err)
	m := map[string]any{
		"schemaVersion": 2, "mediaType": types.OCIManifestSchema1, "artifactType": BundleMediaType,
		"config": cfg, "layers": []v1.Descriptor{layer},
		"subject": v1.Descriptor{MediaType: head.MediaType, Digest: head.Digest, Size: head.Size},
	}
	b, _ := json.Marshal(m)
	h, _, _ := v1.SHA256(strings.NewReader(string(b)))
	desc := r.putManifest(repo.Digest(h.String()), m)
	if fallback {
		desc.ArtifactType = BundleMediaType
		tag := repo.Tag(strings.Replace(img.DigestStr(), ":", "-", 1))
		idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
		if old, err := remote.Get(tag); err == nil {
			must(r.T, json.Unmarshal(old.Manifest, &idx))
		}
		idx.Manifests = append(idx.Manifests, desc)
		ib, _ := json.Marshal(idx)
		must(r.T, remote.Put(tag, rawManifest{ib, types.OCIImageIndex}))
	}
}

// LegacySignature is one layer of a cosign .sig tag.
type LegacySignature struct {
	Payload     []byte
	Annotations map[string]string
}

// AttachLegacy writes the cosign sha256-<hex>.sig tag of img with the signatures.
func (r *Registry) AttachLegacy(img name.Digest, sigs ...LegacySignature) {
	r.T.Helper()
	r.attachLegacy(img, ".sig", SimpleSigningMediaType, sigs)
}

// AttachLegacyAttestations writes the cosign sha256-<hex>.att tag of img with the
// attestations (DSSE envelopes), as cosign attest did before bundles.
func (r *Registry) AttachLegacyAttestations(img name.Digest, atts ...LegacySignature) {
	r.T.Helper()
	r.attachLegacy(img, ".att", DSSEMediaType, atts)
}

func (r *Registry) attachLegacy(img name.Digest, suffix string, mt types.MediaType, sigs []LegacySignature) {
	repo := img.Context()
	cfg := r.blob(repo, []byte("{}"), types.OCIConfigJSON)
	var layers []v1.Descriptor
	for _, s := range sigs {
		d := r.blob(repo, s.Payload, mt)
		d.Annotations = s.Annotations
		layers = append(layers, d)
	}
	tag := repo.Tag(strings.Replace(img.DigestStr(), ":", "-", 1) + suffix)
	r.putManifest(tag, map[string]any{"schemaVersion": 2, "mediaType": types.OCIManifestSchema1, "config": cfg, "layers": layers})
}

// Envelope is a DSSE envelope as cosign's .att layers hold it.
func Envelope(stmt, sig []byte) []byte {
	b, _ := json.Marshal(map[string]any{
		"payloadType": inTotoPayloadType, "payload": stmt,
		"signatures": []map[string]any{{"keyid": "", "sig": sig}},
	})
	return b
}

// SimpleSigningPayload is what cosign signs for an image in its legacy format.
func SimpleSigningPayload(img name.Digest, digest string) []byte {
	return fmt.Appendf(nil, `{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, img.Context().Name(), digest)
}

// Statement is an in-toto statement about digest.
func Statement(digest, predicateType string, predicate any) []byte {
	b, _ := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []map[string]any{{"name": "image", "digest": map[string]string{"sha256": strings.TrimPrefix(digest, "sha256:")}}},
		"predicateType": predicateType,
		"predicate":     predicate,
	})
	return b
}

// SignStatement is the statement cosign v3 signs for an image.
func SignStatement(img name.Digest) []byte {
	return Statement(img.DigestStr(), CosignSignPredicateType, map[string]any{})
}

// SLSAv1 is SLSA provenance v1 as GitHub's generator writes it.
func SLSAv1(builder, repo, commit string) map[string]any {
	return map[string]any{
		"buildDefinition": map[string]any{
			"buildType":            "https://actions.github.io/buildtypes/workflow/v1",
			"externalParameters":   map[string]any{"workflow": map[string]any{"repository": repo, "ref": "refs/heads/main", "path": ".github/workflows/build.yml"}},
			"resolvedDependencies": []map[string]any{{"uri": "git+" + repo + "@refs/heads/main", "digest": map[string]string{"gitCommit": commit}}},
		},
		"runDetails": map[string]any{"builder": map[string]any{"id": builder}},
	}
}

// Key is an ECDSA P-256 signing key.
type Key struct {
	Private *ecdsa.PrivateKey
	// PublicPEM is the public key as cosign.pub holds it.
	PublicPEM []byte
}

// NewKey makes a key.
func NewKey(t testing.TB) Key {
	k, err := GenerateKey()
	must(t, err)
	return k
}

// GenerateKey makes a key, outside a test (a suite's setup).
func GenerateKey() (Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Key{}, err
	}
	pub, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	return Key{Private: priv, PublicPEM: pub}, err
}

// Sign signs the SHA-256 of data.
func (k Key) Sign(data []byte) []byte {
	sum := sha256.Sum256(data)
	sig, err := ecdsa.SignASN1(rand.Reader, k.Private, sum[:])
	if err != nil {
		panic(err)
	}
	return sig
}

// pae is DSSE's pre-authentication encoding.
func pae(payloadType string, payload []byte) []byte {
	return fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload)
}

// Bundle is a cosign v3 bundle: a DSSE envelope of the statement signed by the key,
// without a log entry (cosign sign --key --tlog-upload=false).
func (k Key) Bundle(stmt []byte) *protobundle.Bundle {
	return &protobundle.Bundle{
		MediaType: BundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{Hint: "test"}},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: stmt, PayloadType: inTotoPayloadType, Signatures: []*protodsse.Signature{{Sig: k.Sign(pae(inTotoPayloadType, stmt))}},
		}},
	}
}

// SignImage attaches the key's cosign v3 signature of img as a referrer.
func (k Key) SignImage(r *Registry, img name.Digest) {
	r.Attach(img, k.Bundle(SignStatement(img)), false)
}

// LegacyAttestation is a cosign v2 key-based .att layer: a DSSE envelope of the statement.
func (k Key) LegacyAttestation(stmt []byte) LegacySignature {
	return LegacySignature{Payload: Envelope(stmt, k.Sign(pae(inTotoPayloadType, stmt))), Annotations: map[string]string{SignatureAnnotation: ""}}
}

// Legacy is a cosign v2 key-based .sig layer.
func (k Key) Legacy(payload []byte) LegacySignature {
	return LegacySignature{Payload: payload, Annotations: map[string]string{SignatureAnnotation: base64.StdEncoding.EncodeToString(k.Sign(payload))}}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
