// Package attest makes and checks the signed record of a deployment (spec.attest): an
// in-toto v1 statement whose subjects are the image digests and the manifests' checksum of
// a revision that became healthy, and whose predicate says where, when and from what it ran.
// It is signed as a DSSE envelope, one envelope per line of a Git note on the applied commit
// (note.go), so that many releases, clusters and paths can record on one commit.
//
// Everything read back from Git is hostile until verified: notes are bounded in bytes and
// lines, each line is decoded on its own, and a statement is only believed, or re-signed,
// once its signature verifies with the expected public key.
package attest

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

const (
	// StatementType is the in-toto statement layer this package writes.
	StatementType = "https://in-toto.io/Statement/v1"
	// PredicateType names the predicate of a deployment record.
	PredicateType = "https://immutable.dev/deployment/v1"
	// PayloadType is the DSSE payload type of an in-toto statement.
	PayloadType = "application/vnd.in-toto+json"
	// ManifestsSubjectPrefix begins the name of the subject whose digest is the manifests'
	// checksum: manifests:<namespace>/<name>.
	ManifestsSubjectPrefix = "manifests:"
)

// Statement is an in-toto v1 statement about one deployment.
type Statement struct {
	Type          string     `json:"_type"`
	Subject       []Subject  `json:"subject"`
	PredicateType string     `json:"predicateType"`
	Predicate     Deployment `json:"predicate"`
}

// Subject is an artifact the statement is about, named and identified by digest.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// Deployment is the predicate: which release ran what, where, from which commit, when.
type Deployment struct {
	// Release is the ImmutableRelease that applied it.
	Release Release `json:"release"`
	// Cluster identifies the cluster (the manager's --cluster-name).
	Cluster string `json:"cluster"`
	// Source is the Git revision the manifests came from.
	Source Source `json:"source"`
	// Images are the containers of the revision, in the order of status.images.
	Images []Image `json:"images"`
	// ManifestsDigest is sha256:<hex> over the objects as they were applied.
	ManifestsDigest string `json:"manifestsDigest"`
	// AppliedAt is when the revision was first applied; HealthyAt when it became healthy.
	AppliedAt time.Time `json:"appliedAt"`
	HealthyAt time.Time `json:"healthyAt"`
	// ReplacedAt is when a later revision was applied in its place, ReplacedBy that
	// revision. Empty while the revision runs.
	ReplacedAt *time.Time `json:"replacedAt,omitempty"`
	ReplacedBy string     `json:"replacedBy,omitempty"`
	// RolledBackAt is when a revert of this revision was applied, RevertedBy the revert
	// commit: the revision was rolled back rather than replaced by a new one.
	RolledBackAt *time.Time `json:"rolledBackAt,omitempty"`
	RevertedBy   string     `json:"revertedBy,omitempty"`
}

// Release names an ImmutableRelease.
type Release struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// Source is where the manifests came from.
type Source struct {
	URL  string `json:"url"`
	Path string `json:"path,omitempty"`
	// Revision is <ref>@sha1:<commit>; Commit the commit alone.
	Revision string `json:"revision"`
	Commit   string `json:"commit"`
	// Author is the commit's author, "Name <email>"; CommitTime when it was made.
	Author     string     `json:"author,omitempty"`
	CommitTime *time.Time `json:"commitTime,omitempty"`
}

// Image is one container of the revision and the verified signer of its image.
type Image struct {
	Workload  string `json:"workload"`
	Container string `json:"container"`
	// Image is the pinned reference from Git: name[:tag]@sha256:<hex>.
	Image string `json:"image"`
	// Signer is who signed the image, as verification before apply found it; nil when the
	// image was not verified (no spec.verify).
	Signer *ImageSigner `json:"signer,omitempty"`
}

// ImageSigner is the identity whose signature of the image's digest was verified.
type ImageSigner struct {
	// Issuer and Subject are the identity of a keyless (Fulcio) certificate.
	Issuer  string `json:"issuer,omitempty"`
	Subject string `json:"subject,omitempty"`
	// KeyFingerprint is the fingerprint of the public key of a key-based signature.
	KeyFingerprint string `json:"keyFingerprint,omitempty"`
	// LogIndex is the signature's transparency-log (Rekor) index.
	LogIndex *int64 `json:"logIndex,omitempty"`
	// SourceCommit is the commit the image's provenance says it was built from.
	SourceCommit string `json:"sourceCommit,omitempty"`
}

// New makes the statement of d: one subject per distinct image digest, named by the
// image's repository, and one for the manifests. It refuses an image that is not pinned by
// a sha256 digest or a manifests digest that is not sha256:<64 hex>: a statement whose
// subjects cannot be checked is worth nothing.
func New(d Deployment) (*Statement, error) {
	st := &Statement{Type: StatementType, PredicateType: PredicateType, Predicate: d}
	seen := map[string]bool{}
	for _, im := range d.Images {
		name, hex, err := splitPinned(im.Image)
		if err != nil {
			return nil, fmt.Errorf("%s container %s: %w", im.Workload, im.Container, err)
		}
		if seen[name+"@"+hex] {
			continue
		}
		seen[name+"@"+hex] = true
		st.Subject = append(st.Subject, Subject{Name: name, Digest: map[string]string{"sha256": hex}})
	}
	hex, ok := strings.CutPrefix(d.ManifestsDigest, "sha256:")
	if !ok || !isHex(hex, 64) {
		return nil, fmt.Errorf("the manifests digest %q is not sha256:<64 hex>", d.ManifestsDigest)
	}
	sort.Slice(st.Subject, func(i, j int) bool {
		if st.Subject[i].Name != st.Subject[j].Name {
			return st.Subject[i].Name < st.Subject[j].Name
		}
		return st.Subject[i].Digest["sha256"] < st.Subject[j].Digest["sha256"]
	})
	st.Subject = append(st.Subject, Subject{Name: ManifestsSubjectPrefix + d.Release.Namespace + "/" + d.Release.Name, Digest: map[string]string{"sha256": hex}})
	if err := st.Check(); err != nil {
		return nil, err
	}
	return st, nil
}

// Check says whether the statement is one of ours in form: the statement and predicate
// types, a release, a cluster, a commit and at least one subject with a sha256 digest. It
// says nothing of who made it: that is the signature's job (PublicKey.Verify).
func (st *Statement) Check() error {
	switch {
	case st.Type != StatementType:
		return fmt.Errorf("statement type %q is not %s", st.Type, StatementType)
	case st.PredicateType != PredicateType:
		return fmt.Errorf("predicate type %q is not %s", st.PredicateType, PredicateType)
	case st.Predicate.Release.Namespace == "" || st.Predicate.Release.Name == "":
		return errors.New("the statement names no release")
	case st.Predicate.Cluster == "":
		return errors.New("the statement names no cluster")
	case !isHex(st.Predicate.Source.Commit, 40):
		return fmt.Errorf("the statement's commit %q is not 40 hex digits", st.Predicate.Source.Commit)
	case len(st.Subject) == 0:
		return errors.New("the statement has no subject")
	}
	for _, s := range st.Subject {
		if !isHex(s.Digest["sha256"], 64) {
			return fmt.Errorf("subject %q has no sha256 digest", s.Name)
		}
	}
	return nil
}

// Key identifies the deployment a statement records: the same release of the same cluster
// applying the same commit at the same time. A note keeps one line per key; a later
// statement with the same key (the record re-signed when the revision is replaced)
// supersedes the earlier one.
func (d Deployment) Key() string {
	return d.Cluster + "\x00" + d.Release.Namespace + "/" + d.Release.Name + "\x00" + d.AppliedAt.UTC().Format(time.RFC3339)
}

// splitPinned splits name[:tag]@sha256:<hex> into the repository name and the hex digest.
func splitPinned(ref string) (name, hex string, err error) {
	rest, digest, ok := strings.Cut(ref, "@")
	hex, isSHA := strings.CutPrefix(digest, "sha256:")
	if !ok || !isSHA || !isHex(hex, 64) {
		return "", "", fmt.Errorf("image %q is not pinned by a sha256 digest", ref)
	}
	// A colon after the last slash begins the tag; one before it is a registry's port.
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		rest = rest[:i]
	}
	if rest == "" {
		return "", "", fmt.Errorf("image %q has no name", ref)
	}
	return rest, hex, nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
