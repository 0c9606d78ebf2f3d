package verify

// Test fixtures: a real OCI registry on loopback, images with random layers, and
// signatures made here with sigstore-go: key-based with an ECDSA key, keyless through
// sigstore-go's virtual Sigstore (Fulcio certificate, Rekor entry, timestamps).

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// testRegistry is an OCI registry on loopback.
type testRegistry struct {
	t    testing.TB
	srv  *httptest.Server
	host string
}

func newTestRegistry(t testing.TB, referrers bool) *testRegistry {
	srv := httptest.NewServer(registry.New(registry.WithReferrersSupport(referrers), registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return &testRegistry{t: t, srv: srv, host: strings.TrimPrefix(srv.URL, "http://")}
}

// push pushes a random image and returns its pinned reference.
func (r *testRegistry) push(repo string) name.Digest {
	r.t.Helper()
	img, err := random.Image(512, 1)
	must(r.t, err)
	tag, err := name.NewTag(r.host + "/" + repo + ":v1")
	must(r.t, err)
	must(r.t, remote.Write(tag, img))
	d, err := img.Digest()
	must(r.t, err)
	return tag.Context().Digest(d.String())
}

// rawManifest is a manifest written as given.
type rawManifest struct {
	body      []byte
	mediaType types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.body, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mediaType, nil }

func (r *testRegistry) blob(repo name.Repository, data []byte, mt types.MediaType) v1.Descriptor {
	r.t.Helper()
	l := static.NewLayer(data, mt)
	must(r.t, remote.WriteLayer(repo, l))
	d, _ := l.Digest()
	return v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
}

func (r *testRegistry) putManifest(ref name.Reference, m any) v1.Descriptor {
	r.t.Helper()
	b, err := json.Marshal(m)
	must(r.t, err)
	must(r.t, remote.Put(ref, rawManifest{b, types.OCIManifestSchema1}))
	h, size, _ := v1.SHA256(strings.NewReader(string(b)))
	return v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: h, Size: size}
}

// subjectOf is the descriptor of the image the reference names.
func (r *testRegistry) subjectOf(img name.Digest) v1.Descriptor {
	desc, err := remote.Head(img)
	must(r.t, err)
	return v1.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}
}

// attach attaches a Sigstore bundle to img as a referrer, as cosign v3 does. Without the
// referrers API, it writes the fallback tag's index too.
func (r *testRegistry) attach(img name.Digest, b *protobundle.Bundle, fallback bool) {
	r.t.Helper()
	data, err := (&bundle.Bundle{Bundle: b}).MarshalJSON()
	must(r.t, err)
	r.attachBlob(img, data, BundleMediaType, fallback)
}

func (r *testRegistry) attachBlob(img name.Digest, data []byte, mt string, fallback bool) {
	repo := img.Context()
	// The config's media type is the artifact type: go-containerregistry's registry lists
	// referrers by it (the OCI fallback when a manifest's artifactType is not read).
	cfg := r.blob(repo, []byte("{}"), BundleMediaType)
	layer := r.blob(repo, data, types.MediaType(mt))
	subject := r.subjectOf(img)
	m := map[string]any{
		"schemaVersion": 2, "mediaType": types.OCIManifestSchema1, "artifactType": BundleMediaType,
		"config": cfg, "layers": []v1.Descriptor{layer}, "subject": subject,
	}
	b, _ := json.Marshal(m)
	h, _, _ := v1.SHA256(strings.NewReader(string(b)))
	desc := r.putManifest(repo.Digest(h.String()), m)
	if fallback {
		desc.ArtifactType = BundleMediaType
		tag := repo.Tag(strings.Replace(img.DigestStr(), ":", "-", 1))
		idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
		if old, err := remote.Get(tag); err == nil {
			must(r.t, json.Unmarshal(old.Manifest, &idx))
		}
		idx.Manifests = append(idx.Manifests, desc)
		ib, _ := json.Marshal(idx)
		must(r.t, remote.Put(tag, rawManifest{ib, types.OCIImageIndex}))
	}
}

// legacySignature is one layer of a cosign .sig tag.
type legacySignature struct {
	payload     []byte
	annotations map[string]string
}

// attachLegacy writes the cosign sha256-<hex>.sig tag of img with the signatures.
func (r *testRegistry) attachLegacy(img name.Digest, sigs ...legacySignature) {
	r.t.Helper()
	repo := img.Context()
	cfg := r.blob(repo, []byte("{}"), types.OCIConfigJSON)
	var layers []v1.Descriptor
	for _, s := range sigs {
		d := r.blob(repo, s.payload, SimpleSigningMediaType)
		d.Annotations = s.annotations
		layers = append(layers, d)
	}
	tag := repo.Tag(strings.Replace(img.DigestStr(), ":", "-", 1) + ".sig")
	r.putManifest(tag, map[string]any{"schemaVersion": 2, "mediaType": types.OCIManifestSchema1, "config": cfg, "layers": layers})
}

// simpleSigningPayload is what cosign signs for an image in its legacy format.
func simpleSigningPayload(img name.Digest, digest string) []byte {
	return fmt.Appendf(nil, `{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, img.Context().Name(), digest)
}

// statementJSON is an in-toto statement about digest.
func statementJSON(digest, predicateType string, predicate any) []byte {
	b, _ := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []map[string]any{{"name": "image", "digest": map[string]string{"sha256": strings.TrimPrefix(digest, "sha256:")}}},
		"predicateType": predicateType,
		"predicate":     predicate,
	})
	return b
}

// slsaV1 is SLSA provenance v1 as GitHub's generator writes it.
func slsaV1(builder, repo, commit string) map[string]any {
	return map[string]any{
		"buildDefinition": map[string]any{
			"buildType":            "https://actions.github.io/buildtypes/workflow/v1",
			"externalParameters":   map[string]any{"workflow": map[string]any{"repository": repo, "ref": "refs/heads/main", "path": ".github/workflows/build.yml"}},
			"resolvedDependencies": []map[string]any{{"uri": "git+" + repo + "@refs/heads/main", "digest": map[string]string{"gitCommit": commit}}},
		},
		"runDetails": map[string]any{"builder": map[string]any{"id": builder}},
	}
}

// testKey is an ECDSA signing key.
type testKey struct {
	priv   *ecdsa.PrivateKey
	pubPEM []byte
}

func newTestKey(t testing.TB) testKey {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	pub, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	must(t, err)
	return testKey{priv: priv, pubPEM: pub}
}

func (k testKey) sign(data []byte) []byte {
	sum := sha256.Sum256(data)
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, sum[:])
	if err != nil {
		panic(err)
	}
	return sig
}

// pae is DSSE's pre-authentication encoding.
func pae(payloadType string, payload []byte) []byte {
	return fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload)
}

// keyBundle is a cosign v3 bundle: a DSSE envelope of the statement signed by the key,
// without a log entry (cosign sign --key --tlog-upload=false).
func (k testKey) bundle(stmt []byte) *protobundle.Bundle {
	const pt = "application/vnd.in-toto+json"
	return &protobundle.Bundle{
		MediaType: BundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{Hint: "test"}},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: stmt, PayloadType: pt, Signatures: []*protodsse.Signature{{Sig: k.sign(pae(pt, stmt))}},
		}},
	}
}

// legacy is a cosign v2 key-based .sig layer.
func (k testKey) legacy(payload []byte) legacySignature {
	return legacySignature{payload: payload, annotations: map[string]string{annotationSignature: base64.StdEncoding.EncodeToString(k.sign(payload))}}
}

// sigstore is the virtual Sigstore whose trusted root the tests give as the admin's.
type sigstore struct {
	t  testing.TB
	vs *ca.VirtualSigstore
}

func newSigstore(t testing.TB) *sigstore {
	vs, err := ca.NewVirtualSigstore()
	must(t, err)
	return &sigstore{t: t, vs: vs}
}

// promise signs the Rekor entry's inclusion promise (its signed entry timestamp).
func (s *sigstore) promise(e *tlog.Entry) *protorekor.TransparencyLogEntry {
	tle := e.TransparencyLogEntry()
	set, err := s.vs.RekorSignPayload(tlog.RekorPayload{
		Body: base64.StdEncoding.EncodeToString(tle.CanonicalizedBody), IntegratedTime: tle.IntegratedTime,
		LogIndex: tle.LogIndex, LogID: hex.EncodeToString(tle.LogId.KeyId),
	})
	must(s.t, err)
	var kind struct{ Kind, APIVersion string }
	must(s.t, json.Unmarshal(tle.CanonicalizedBody, &kind))
	tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
	tle.KindVersion = &protorekor.KindVersion{Kind: kind.Kind, Version: kind.APIVersion}
	return tle
}

// keylessBundle signs the statement as identity of issuer, at the time of the log entry,
// as cosign v3 does: a DSSE envelope, a Fulcio certificate, a Rekor entry with its
// inclusion proof and promise, and, unless without, a timestamp authority's timestamp.
func (s *sigstore) keylessBundle(identity, issuer string, stmt []byte, logged time.Time, withTimestamp bool) *protobundle.Bundle {
	e, err := s.vs.AttestAtTime(identity, issuer, stmt, logged, true)
	must(s.t, err)
	content, _ := e.VerificationContent()
	sc, _ := e.SignatureContent()
	env := sc.EnvelopeContent().RawEnvelope()
	sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	entries, _ := e.TlogEntries()
	vm := &protobundle.VerificationMaterial{
		Content:     &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: content.Certificate().Raw}},
		TlogEntries: []*protorekor.TransparencyLogEntry{s.promise(entries[0])},
	}
	if withTimestamp {
		ts, _ := e.Timestamps()
		vm.TimestampVerificationData = &protobundle.TimestampVerificationData{Rfc3161Timestamps: []*protocommon.RFC3161SignedTimestamp{{SignedTimestamp: ts[0]}}}
	}
	return &protobundle.Bundle{
		MediaType:            BundleMediaType,
		VerificationMaterial: vm,
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: payload, PayloadType: env.PayloadType, Signatures: []*protodsse.Signature{{Sig: sig}},
		}},
	}
}

// legacy is a cosign v2 keyless .sig layer: certificate and Rekor bundle annotations.
func (s *sigstore) legacy(identity, issuer string, payload []byte) legacySignature {
	e, err := s.vs.Sign(identity, issuer, payload)
	must(s.t, err)
	content, _ := e.VerificationContent()
	sc, _ := e.SignatureContent()
	entries, _ := e.TlogEntries()
	tle := s.promise(entries[0])
	rb := map[string]any{
		"SignedEntryTimestamp": tle.InclusionPromise.SignedEntryTimestamp,
		"Payload": map[string]any{
			"body": base64.StdEncoding.EncodeToString(tle.CanonicalizedBody), "integratedTime": tle.IntegratedTime,
			"logIndex": tle.LogIndex, "logID": hex.EncodeToString(tle.LogId.KeyId),
		},
	}
	rbJSON, _ := json.Marshal(rb)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: content.Certificate().Raw})
	return legacySignature{payload: payload, annotations: map[string]string{
		annotationSignature:   base64.StdEncoding.EncodeToString(sc.Signature()),
		annotationCertificate: string(certPEM),
		annotationBundle:      string(rbJSON),
	}}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// flaky is a registry that can be taken down and brought back.
type flaky struct {
	h    http.Handler
	down bool
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	f.h.ServeHTTP(w, r)
}
