package verify

// Keyless signatures for the tests, made through sigstore-go's virtual Sigstore (Fulcio
// certificate, Rekor entry, timestamps); key-based ones and the registry are verifytest's.

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"testing"
	"time"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"

	"github.com/immutable-release/operator/internal/verify/verifytest"
)

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
func (s *sigstore) legacy(identity, issuer string, payload []byte) verifytest.LegacySignature {
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
	return verifytest.LegacySignature{Payload: payload, Annotations: map[string]string{
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

// legacyAttestation is a cosign v2 keyless .att layer: a DSSE envelope with the
// certificate and Rekor bundle annotations.
func (s *sigstore) legacyAttestation(identity, issuer string, stmt []byte) verifytest.LegacySignature {
	e, err := s.vs.AttestAtTime(identity, issuer, stmt, time.Now().Add(5*time.Minute), false)
	must(s.t, err)
	content, _ := e.VerificationContent()
	sc, _ := e.SignatureContent()
	env := sc.EnvelopeContent().RawEnvelope()
	sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	entries, _ := e.TlogEntries()
	tle := s.promise(entries[0])
	rb, _ := json.Marshal(map[string]any{
		"SignedEntryTimestamp": tle.InclusionPromise.SignedEntryTimestamp,
		"Payload": map[string]any{
			"body": base64.StdEncoding.EncodeToString(tle.CanonicalizedBody), "integratedTime": tle.IntegratedTime,
			"logIndex": tle.LogIndex, "logID": hex.EncodeToString(tle.LogId.KeyId),
		},
	})
	return verifytest.LegacySignature{Payload: verifytest.Envelope(stmt, sig), Annotations: map[string]string{
		annotationSignature:   "",
		annotationCertificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: content.Certificate().Raw})),
		annotationBundle:      string(rb),
	}}
}
