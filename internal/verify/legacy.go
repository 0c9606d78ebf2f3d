package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
)

// signedEntity is what sigstore-go verifies: a bundle, or a legacy signature made into one.
type signedEntity = sgverify.SignedEntity

// bundleEntity is a Sigstore bundle read from a referrer.
type bundleEntity struct{ *bundle.Bundle }

// rekorBundle is cosign's dev.sigstore.cosign/bundle annotation: Rekor's signed entry
// timestamp (the inclusion promise) and the entry it signs.
type rekorBundle struct {
	SignedEntryTimestamp []byte `json:"SignedEntryTimestamp"`
	Payload              struct {
		Body           string `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogIndex       int64  `json:"logIndex"`
		LogID          string `json:"logID"`
	} `json:"Payload"`
}

// legacyEntity makes a v0.1 Sigstore bundle of a layer of a cosign .sig tag: a message
// signature over the simple-signing payload, by the certificate of the annotations or
// else a key, with the Rekor entry and RFC 3161 timestamp the annotations carry.
func legacyEntity(annotations map[string]string, payload []byte) (signedEntity, error) {
	sig, err := base64.StdEncoding.DecodeString(annotations[annotationSignature])
	if err != nil || len(sig) == 0 {
		return nil, errors.New("no signature annotation")
	}
	sum := sha256.Sum256(payload)
	return legacyBundle(annotations, &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
		MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: sum[:]},
		Signature:     sig,
	}})
}

// dsseEnvelope is a DSSE envelope as cosign's .att layers hold it.
type dsseEnvelope struct {
	PayloadType string `json:"payloadType"`
	Payload     []byte `json:"payload"`
	Signatures  []struct {
		KeyID string `json:"keyid"`
		Sig   []byte `json:"sig"`
	} `json:"signatures"`
}

// legacyAttestation makes a v0.1 Sigstore bundle of a layer of a cosign .att tag: a DSSE
// envelope of an in-toto statement, with the verification material of its annotations.
func legacyAttestation(annotations map[string]string, envelope []byte) (signedEntity, error) {
	var env dsseEnvelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		return nil, fmt.Errorf("not a DSSE envelope: %v", err)
	}
	if len(env.Signatures) != 1 {
		return nil, fmt.Errorf("a DSSE envelope with %d signatures, not one", len(env.Signatures))
	}
	return legacyBundle(annotations, &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
		Payload: env.Payload, PayloadType: env.PayloadType,
		Signatures: []*protodsse.Signature{{Sig: env.Signatures[0].Sig, Keyid: env.Signatures[0].KeyID}},
	}})
}

// legacyBundle is a v0.1 bundle of content with the verification material of a cosign
// legacy layer's annotations: its certificate (else a key), Rekor entry and timestamp.
func legacyBundle(annotations map[string]string, content any) (signedEntity, error) {
	pb := &protobundle.Bundle{
		MediaType:            "application/vnd.dev.sigstore.bundle+json;version=0.1",
		VerificationMaterial: &protobundle.VerificationMaterial{},
	}
	switch c := content.(type) {
	case *protobundle.Bundle_MessageSignature:
		pb.Content = c
	case *protobundle.Bundle_DsseEnvelope:
		pb.Content = c
	}
	vm := pb.VerificationMaterial
	if certPEM := annotations[annotationCertificate]; certPEM != "" {
		block, _ := pem.Decode([]byte(certPEM))
		if block == nil {
			return nil, errors.New("certificate annotation holds no PEM certificate")
		}
		// Only the leaf: intermediates come from the trusted root, never from the registry.
		vm.Content = &protobundle.VerificationMaterial_X509CertificateChain{X509CertificateChain: &protocommon.X509CertificateChain{
			Certificates: []*protocommon.X509Certificate{{RawBytes: block.Bytes}},
		}}
	} else {
		vm.Content = &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{}}
	}
	if raw := annotations[annotationBundle]; raw != "" {
		var rb rekorBundle
		if err := json.Unmarshal([]byte(raw), &rb); err != nil {
			return nil, fmt.Errorf("rekor bundle annotation: %v", err)
		}
		body, err := base64.StdEncoding.DecodeString(rb.Payload.Body)
		if err != nil {
			return nil, errors.New("rekor bundle annotation: body is not base64")
		}
		logID, err := hex.DecodeString(rb.Payload.LogID)
		if err != nil {
			return nil, errors.New("rekor bundle annotation: logID is not hex")
		}
		var kind struct {
			Kind       string `json:"kind"`
			APIVersion string `json:"apiVersion"`
		}
		if err := json.Unmarshal(body, &kind); err != nil {
			return nil, errors.New("rekor bundle annotation: body is not a Rekor entry")
		}
		vm.TlogEntries = []*protorekor.TransparencyLogEntry{{
			LogIndex:          rb.Payload.LogIndex,
			LogId:             &protocommon.LogId{KeyId: logID},
			KindVersion:       &protorekor.KindVersion{Kind: kind.Kind, Version: kind.APIVersion},
			IntegratedTime:    rb.Payload.IntegratedTime,
			InclusionPromise:  &protorekor.InclusionPromise{SignedEntryTimestamp: rb.SignedEntryTimestamp},
			CanonicalizedBody: body,
		}}
	}
	if raw := annotations[annotationTimestamp]; raw != "" {
		var ts struct {
			SignedRFC3161Timestamp []byte `json:"SignedRFC3161Timestamp"`
		}
		if err := json.Unmarshal([]byte(raw), &ts); err != nil {
			return nil, fmt.Errorf("timestamp annotation: %v", err)
		}
		vm.TimestampVerificationData = &protobundle.TimestampVerificationData{
			Rfc3161Timestamps: []*protocommon.RFC3161SignedTimestamp{{SignedTimestamp: ts.SignedRFC3161Timestamp}},
		}
	}
	b, err := bundle.NewBundle(pb)
	if err != nil {
		return nil, err
	}
	return bundleEntity{b}, nil
}

// simpleSigning is cosign's signed payload: the digest it vouches for.
type simpleSigning struct {
	Critical struct {
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
}

// signedDigest is the image digest a legacy payload vouches for.
func signedDigest(payload []byte) (string, error) {
	var s simpleSigning
	if err := json.Unmarshal(payload, &s); err != nil {
		return "", fmt.Errorf("payload is not a simple-signing JSON: %v", err)
	}
	return s.Critical.Image.DockerManifestDigest, nil
}
