package verify

import (
	"encoding/json"
	"testing"

	"github.com/sigstore/sigstore-go/pkg/bundle"
)

// FuzzSignatureParsers feeds what a hostile registry serves (a legacy signature's or
// attestation's annotations and payload, a bundle, a provenance predicate) to the parsers that read it
// before anything is verified: none may panic.
//
//	go test ./internal/verify -run XXX -fuzz FuzzSignatureParsers -fuzztime 30s
func FuzzSignatureParsers(f *testing.F) {
	f.Add("MEUCIQ==", "", `{"SignedEntryTimestamp":"AA==","Payload":{"body":"e30=","integratedTime":1,"logIndex":2,"logID":"00"}}`,
		[]byte(`{"critical":{"image":{"docker-manifest-digest":"sha256:00"}}}`), []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`),
		[]byte(`{"buildDefinition":{"resolvedDependencies":[{"uri":"git+https://x/y@main","digest":{"gitCommit":"abc"}}]},"runDetails":{"builder":{"id":"b"}}}`))
	f.Add("", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "{", []byte("null"), []byte("[]"), []byte(`{"materials":[{"uri":"@@@","digest":{"sha1":"1"}}]}`))
	f.Fuzz(func(t *testing.T, sig, cert, rekor string, payload, bundleJSON, predicate []byte) {
		annotations := map[string]string{annotationSignature: sig, annotationCertificate: cert, annotationBundle: rekor}
		if e, err := legacyEntity(annotations, payload); err == nil {
			_, _ = parse(candidate{where: "fuzz", entity: e, payload: payload})
		}
		if e, err := legacyAttestation(annotations, payload); err == nil {
			_, _ = parse(candidate{where: "fuzz", entity: e})
		}
		b := &bundle.Bundle{}
		if err := b.UnmarshalJSON(bundleJSON); err == nil {
			_, _ = parse(candidate{where: "fuzz", entity: bundleEntity{b}})
		}
		_ = parseProvenance(json.RawMessage(predicate))
		_, _ = signedDigest(payload)
	})
}
