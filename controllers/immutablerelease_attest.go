package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fluxcd/pkg/runtime/conditions"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/attest"
	"github.com/immutable-release/operator/internal/git"
)

// AttestationOptions say how deployment records (spec.attest) are signed.
type AttestationOptions struct {
	// KeySecret names the Secret in the operator's own namespace (Tenancy.Operator) that
	// holds the signing key under attest.PrivateKeyField (--attestation-key-secret). Never
	// a tenant's: a tenant could then sign records of its own. Empty: no release is
	// recorded, and those that ask are told so (AttestationKeyInvalid).
	KeySecret string
	// ClusterName identifies this cluster in every statement (--cluster-name).
	ClusterName string
}

// attestRetryAfter is how long after a failed record the Git server and the key Secret
// are left alone, unless a person asks (a reconcile request, a spec change).
const attestRetryAfter = time.Minute

// recordDeployments writes the deployment records of spec.attest: the statement of the
// applied revision once it is healthy, and the statements of earlier revisions re-signed
// with replacedAt, or rolledBackAt, once another revision took their place. What was
// written is recorded in each revision's history entry, so each record is written once,
// whatever this process remembers; a crash between push and status write pushes the same
// record again, which replaces itself in the note (attest.Merge). A failure is shown in
// the Attested condition and tried again later: it never fails the release. retry is
// when, zero when nothing is left to write.
func (r *ImmutableReleaseReconciler) recordDeployments(ctx context.Context, s *scope) (retry time.Duration) {
	obj := s.obj
	if obj.Spec.Attest == nil {
		conditions.Delete(obj, v1alpha1.AttestedCondition)
		return 0
	}
	due := recordsDue(obj, s.revision)
	if len(due) == 0 {
		return 0
	}
	if wait := s.mem.attestWait(time.Now()); wait > 0 && !s.asked {
		return wait
	}
	key, err := r.attestationKey(ctx)
	if err != nil {
		return r.attestFailed(s, v1alpha1.AttestationKeyInvalidReason, err)
	}
	auth, err := r.gitAuth(ctx, obj)
	if err != nil {
		return r.attestFailed(s, v1alpha1.AttestationFailedReason, err)
	}
	for _, d := range due {
		h := &obj.Status.History[d.index]
		notesCommit, missing, err := r.writeRecord(ctx, s, key, auth, d)
		if err != nil {
			rec := v1alpha1.AttestationRecord{Message: err.Error()}
			if h.Attestation != nil {
				rec.State, rec.NotesCommit = h.Attestation.State, h.Attestation.NotesCommit
			}
			h.Attestation = &rec
			return r.attestFailed(s, v1alpha1.AttestationFailedReason, fmt.Errorf("revision %s: %w", h.Revision, err))
		}
		h.Attestation = &v1alpha1.AttestationRecord{State: d.want, NotesCommit: notesCommit}
		if missing {
			// Nothing to re-sign: there is no statement of ours to update (written under
			// another --cluster-name, or by a key rotated out since).
			h.Attestation.Message = fmt.Sprintf("no statement of this deployment signed by key %s on commit %s under %s: nothing updated",
				key.Public().ID(), git.RevisionHash(h.Revision), obj.GetNotesRef())
			continue
		}
		msg := fmt.Sprintf("Recorded the deployment of %s (%s) as a note on commit %s under %s, notes commit %s",
			h.Revision, d.want, git.RevisionHash(h.Revision), obj.GetNotesRef(), notesCommit)
		attestations.WithLabelValues("recorded").Inc()
		conditions.MarkTrue(obj, v1alpha1.AttestedCondition, v1alpha1.AttestationRecordedReason, "%s", msg)
		r.event(obj, corev1.EventTypeNormal, v1alpha1.AttestationRecordedReason, "Attest", msg)
		log.FromContext(ctx).V(1).Info("Recorded a deployment", "revision", h.Revision, "state", d.want, "notesCommit", notesCommit)
	}
	s.mem.deferAttest(time.Time{})
	return 0
}

// recordDue is a history entry whose record in Git is not what it should be.
type recordDue struct {
	index int
	want  v1alpha1.AttestationState
}

// recordsDue lists, oldest first, the history entries whose record must be written: the
// applied revision once healthy (only while the scope holds its objects, revision, whose
// checksum the statement names), and each recorded revision that was replaced or rolled
// back since. A revision replaced before its record could ever be pushed is not recorded
// later: what it ran is no longer known for sure.
func recordsDue(obj *v1alpha1.ImmutableRelease, revision string) []recordDue {
	var due []recordDue
	for i := len(obj.Status.History) - 1; i >= 0; i-- {
		h := &obj.Status.History[i]
		recorded := h.Attestation != nil && h.Attestation.State != ""
		var want v1alpha1.AttestationState
		switch {
		case recorded && i > 0 && h.RevertedBy != "":
			want = v1alpha1.AttestationRolledBack
		case recorded && i > 0:
			want = v1alpha1.AttestationReplaced
		case recorded:
			want = h.Attestation.State
		case i == 0 && h.Result == v1alpha1.ReleaseHealthy && h.Revision == obj.Status.LastAppliedRevision && h.Revision == revision &&
			conditions.IsTrue(obj, v1alpha1.HealthyCondition):
			want = v1alpha1.AttestationHealthy
		}
		// Once rolled back, a later replacement changes nothing.
		if want != "" && (!recorded || (h.Attestation.State != want && h.Attestation.State != v1alpha1.AttestationRolledBack)) {
			due = append(due, recordDue{index: i, want: want})
		}
	}
	return due
}

// writeRecord pushes the record d asks for. missing is true when there was no statement of
// ours to re-sign.
func (r *ImmutableReleaseReconciler) writeRecord(ctx context.Context, s *scope, key *attest.Key, auth *git.Auth, d recordDue) (notesCommit string, missing bool, err error) {
	obj := s.obj
	h := obj.Status.History[d.index]
	var edit func([]byte) ([]byte, error)
	if d.want == v1alpha1.AttestationHealthy {
		st, err := attest.New(r.deployment(s, h))
		if err != nil {
			return "", false, err
		}
		line, err := key.Sign(st)
		if err != nil {
			return "", false, err
		}
		edit = func(note []byte) ([]byte, error) { return attest.Merge(note, line, key.Public()) }
	} else {
		newer := obj.Status.History[d.index-1]
		at := newer.AppliedAt.UTC()
		deployKey := attest.Deployment{Cluster: r.recordedCluster(obj), Release: attest.Release{Namespace: obj.Namespace, Name: obj.Name},
			AppliedAt: h.AppliedAt.UTC()}.Key()
		edit = func(note []byte) ([]byte, error) {
			// Only a statement that verifies with our key is re-signed: a line anyone can
			// push to the notes reference must not get our signature.
			st, err := attest.Find(note, deployKey, key.Public())
			if errors.Is(err, attest.ErrNotRecorded) {
				missing = true
				return note, nil
			}
			if err != nil {
				return nil, err
			}
			missing = false
			st.Predicate.ReplacedAt, st.Predicate.ReplacedBy = &at, newer.Revision
			if d.want == v1alpha1.AttestationRolledBack {
				st.Predicate.RolledBackAt, st.Predicate.RevertedBy = &at, h.RevertedBy
			}
			line, err := key.Sign(st)
			if err != nil {
				return nil, err
			}
			return attest.Merge(note, line, key.Public())
		}
	}
	author := revertAuthor(obj)
	gitCtx, cancel := r.gitContext(ctx, obj)
	defer cancel()
	notesCommit, err = r.Git.WriteNote(gitCtx, git.NoteRequest{
		URL: obj.Spec.Git.URL, Auth: auth, Ref: obj.GetNotesRef(), Commit: git.RevisionHash(h.Revision), Edit: edit,
		Message:    fmt.Sprintf("Deployment record of %s/%s on %s: %s\n\nCluster: %s\n", obj.Namespace, obj.Name, h.Revision, d.want, r.recordedCluster(obj)),
		AuthorName: author.Name, AuthorEmail: author.Email,
	})
	return notesCommit, missing, err
}

// deployment is the predicate of the applied revision h, healthy now.
func (r *ImmutableReleaseReconciler) deployment(s *scope, h v1alpha1.ReleaseRecord) attest.Deployment {
	obj := s.obj
	d := attest.Deployment{
		Release: attest.Release{Namespace: obj.Namespace, Name: obj.Name},
		Cluster: r.recordedCluster(obj),
		Source: attest.Source{URL: obj.Spec.Git.URL, Path: obj.Spec.Path, Revision: h.Revision, Commit: git.RevisionHash(h.Revision),
			Author: h.Author},
		ManifestsDigest: "sha256:" + s.desiredChecksum(),
		AppliedAt:       h.AppliedAt.UTC(),
		HealthyAt:       time.Now().UTC().Truncate(time.Second),
	}
	// The verdict's time, unless Healthy stayed True from an earlier revision (a revision
	// that changed no object): then this reconcile's, which made the verdict.
	if c := conditions.Get(obj, v1alpha1.HealthyCondition); c != nil && !c.LastTransitionTime.Before(&h.AppliedAt) {
		d.HealthyAt = c.LastTransitionTime.UTC()
	}
	if h.CommitTime != nil {
		t := h.CommitTime.UTC()
		d.Source.CommitTime = &t
	}
	for _, im := range obj.Status.Images {
		d.Images = append(d.Images, attest.Image{Workload: im.Workload, Container: im.Container, Image: im.Image, Signer: imageSigner(im)})
	}
	return d
}

// imageSigner is who signed the image, as its verification before apply found it
// (status.images[].verification, spec.verify or the platform's image policy); nil for an
// image that was not verified: the statement then names no signer, and none is made up.
func imageSigner(im v1alpha1.WorkloadImage) *attest.ImageSigner {
	v := im.Verification
	if v == nil {
		return nil
	}
	return &attest.ImageSigner{Issuer: v.Issuer, Subject: v.Subject, KeyFingerprint: v.KeyFingerprint, LogIndex: v.LogIndex, SourceCommit: v.SourceCommit}
}

// attestationKey reads the signing key from the operator's own Secret.
func (r *ImmutableReleaseReconciler) attestationKey(ctx context.Context) (*attest.Key, error) {
	ns, name := r.Options.Tenancy.Operator.Namespace, r.Options.Attestation.KeySecret
	if name == "" {
		return nil, fmt.Errorf("the manager has no attestation key: start it with --attestation-key-secret naming a Secret in namespace %q whose key %s holds the private key (PEM, ECDSA P-256 or Ed25519)", ns, attest.PrivateKeyField)
	}
	secret := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("attestation key secret %q not found in namespace %q: create it with the private key under %s (PEM, ECDSA P-256 or Ed25519) and, for auditors, its public key under %s", name, ns, attest.PrivateKeyField, attest.PublicKeyField)
		}
		return nil, fmt.Errorf("reading attestation key secret %q: %w", name, err)
	}
	key, err := attest.KeyFromSecret(secret.Data)
	if err != nil {
		return nil, fmt.Errorf("attestation key secret %s/%s: %w", ns, name, err)
	}
	return key, nil
}

// attestFailed shows a record that could not be written in the Attested condition, with
// one warning event per new failure, and leaves the next try for attestRetryAfter.
func (r *ImmutableReleaseReconciler) attestFailed(s *scope, reason string, err error) time.Duration {
	obj := s.obj
	msg := fmt.Sprintf("deployment record not written: %s; retried in %s, the release goes on", err.Error(), attestRetryAfter)
	if c := conditions.Get(obj, v1alpha1.AttestedCondition); c == nil || c.Reason != reason || c.Message != msg {
		r.event(obj, corev1.EventTypeWarning, reason, "Attest", msg)
	}
	conditions.MarkFalse(obj, v1alpha1.AttestedCondition, reason, "%s", msg)
	attestations.WithLabelValues("failed").Inc()
	s.mem.deferAttest(time.Now().Add(attestRetryAfter))
	return attestRetryAfter
}

// recordedCluster names the cluster a release's deployment records say it ran in: the
// manager's --cluster-name, or for a release of a remote cluster (spec.kubeConfig) that
// cluster's API server.
func (r *ImmutableReleaseReconciler) recordedCluster(obj *v1alpha1.ImmutableRelease) string {
	if obj.Spec.KubeConfig != nil && obj.Status.Cluster != "" {
		return obj.Status.Cluster
	}
	return r.Options.Attestation.ClusterName
}
