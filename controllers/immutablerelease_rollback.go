package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/fluxcd/pkg/runtime/conditions"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
)

// Default author of revert commits.
const (
	defaultAuthorName  = "ImmutableRelease"
	defaultAuthorEmail = "immutable-release@noreply.local"
)

// rollback reverts, in Git, the commits that brought the failed revision, and has the next
// reconcile apply what Git then says. The cluster is never rolled back behind Git's back.
// It is idempotent: a revert already on the branch for this revision is found, not redone.
func (r *ImmutableReleaseReconciler) rollback(ctx context.Context, s *scope, reason string) error {
	obj := s.obj
	failedRev := obj.Status.LastAppliedRevision
	if obj.GetRollbackMode() == v1alpha1.RollbackDisabled || obj.Spec.Git.Ref.Branch == "" {
		return nil
	}
	if lr := obj.Status.LastRollback; lr != nil && lr.FailedRevision == failedRev {
		return nil
	}
	if rollbackPending(obj) {
		// The branch did not change the path since the revision the pull request reverts:
		// the same pull request still rolls this one back.
		return nil
	}
	healthyRev := lastHealthy(obj, failedRev)
	if healthyRev == "" {
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.NoHealthyRevisionReason,
			"no earlier revision was healthy: fix %s in Git", failedRev)
		return nil
	}
	return r.revert(ctx, obj, failedRev, git.RevisionHash(healthyRev), reason, false)
}

// manualRollback acts on the rollback-to annotation, through the same revert as an
// automatic rollback: the commits after the named revision are reverted in Git.
func (r *ImmutableReleaseReconciler) manualRollback(ctx context.Context, obj *v1alpha1.ImmutableRelease) error {
	value := obj.GetAnnotations()[v1alpha1.RollbackToAnnotation]
	if value == "" || value == obj.Status.LastHandledRollbackTo {
		return nil
	}
	obj.Status.LastHandledRollbackTo = value
	target, _, _ := strings.Cut(value, "@")
	applied := obj.Status.LastAppliedRevision
	if obj.Spec.Git.Ref.Branch == "" || applied == "" {
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.RevertFailedReason,
			"rollback to %s: only a release that follows a branch and has applied a revision can be rolled back", target)
		return nil
	}
	switch {
	case target == "previous":
		target = git.RevisionHash(lastHealthy(obj, applied))
	default:
		for _, h := range obj.Status.History {
			if hash := git.RevisionHash(h.Revision); len(target) >= 7 && strings.HasPrefix(hash, target) {
				target = hash
				break
			}
		}
	}
	if len(target) != 40 {
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.RevertFailedReason,
			"rollback to %q: name a revision of the history (7 or more hex digits of its commit) or previous", value)
		return nil
	}
	return r.revert(ctx, obj, applied, target, "manual rollback to "+target+" requested", true)
}

// lastHealthy is the newest revision of the history that was healthy, other than rev.
func lastHealthy(obj *v1alpha1.ImmutableRelease, rev string) string {
	for _, h := range obj.Status.History {
		if h.Result == v1alpha1.ReleaseHealthy && h.Revision != rev {
			return h.Revision
		}
	}
	return ""
}

// revert pushes a revert of the commits after target, up to failedRev, under spec.path.
// manual is true for a rollback a person asked for: the reverted revision did not fail, so
// it is not marked Failed and its digests are not quarantined.
func (r *ImmutableReleaseReconciler) revert(ctx context.Context, obj *v1alpha1.ImmutableRelease, failedRev, target, reason string, manual bool) error {
	if obj.GetRollbackMode() == v1alpha1.RollbackPullRequest {
		return r.proposeRevert(ctx, obj, failedRev, target, reason, manual)
	}
	auth, err := r.gitAuth(ctx, obj)
	if err != nil {
		return err
	}
	author := revertAuthor(obj)
	if r.conflictUnchanged(ctx, obj, failedRev, auth) {
		return nil
	}
	key, err := r.signingKey(ctx, obj)
	if err != nil {
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.InvalidSigningKeyReason, "not reverting %s: %s", failedRev, err)
		return retry(v1alpha1.InvalidSigningKeyReason, fmt.Errorf("signing the revert of %s: %w", failedRev, err))
	}
	gitCtx, cancel := r.gitContext(ctx, obj)
	defer cancel()
	res, err := r.Git.Revert(gitCtx, git.RevertRequest{
		URL: obj.Spec.Git.URL, Branch: obj.Spec.Git.Ref.Branch, Auth: auth, Path: obj.Spec.Path,
		Healthy: target, Failed: git.RevisionHash(failedRev),
		Release: obj.Namespace + "/" + obj.Name, Reason: reason,
		AuthorName: author.Name, AuthorEmail: author.Email, SignKey: key,
	})
	var conflict *git.ConflictError
	switch {
	case errors.As(err, &conflict):
		r.revertConflict(obj, failedRev, conflict)
		r.requestFreshGitCheck(obj)
		return nil
	case errors.Is(err, git.ErrFixedForward):
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.FixedForwardReason,
			"not reverting %s: newer commits already undid its changes under the path; applying them instead", failedRev)
		r.requestFreshGitCheck(obj)
		return nil
	case err != nil:
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.RevertFailedReason, "reverting %s: %s", failedRev, err)
		return retry(v1alpha1.RevertFailedReason, fmt.Errorf("reverting revision %s in Git: %w", failedRev, err))
	}
	r.conflicts.Delete(client.ObjectKeyFromObject(obj))
	var reverted []string
	for _, c := range res.Reverted {
		reverted = append(reverted, c.Hash)
	}
	recordRollback(obj, failedRev, res.Commit, reverted, reason, !manual)
	r.event(obj, corev1.EventTypeWarning, "RolledBack", "Rollback",
		fmt.Sprintf("Pushed revert commit %s to %s, reverting %d commits after %s: %s", res.Commit, obj.Spec.Git.Ref.Branch, len(reverted), short(target), reason))
	r.requestFreshGitCheck(obj)
	return nil
}

// revertAuthor is spec.rollback.author or the default author.
func revertAuthor(obj *v1alpha1.ImmutableRelease) v1alpha1.CommitAuthor {
	if obj.Spec.Rollback != nil && obj.Spec.Rollback.Author != nil {
		return *obj.Spec.Rollback.Author
	}
	return v1alpha1.CommitAuthor{Name: defaultAuthorName, Email: defaultAuthorEmail}
}

func short(hash string) string {
	if len(hash) > 7 {
		return hash[:7]
	}
	return hash
}

// recordRollback notes the revert in the status and in the failed revision's history entry.
func recordRollback(obj *v1alpha1.ImmutableRelease, failedRev, commit string, reverted []string, reason string, failed bool) {
	obj.Status.LastRollback = newRollback(obj, failedRev, commit, reverted, reason, failed)
	for i := range obj.Status.History {
		if obj.Status.History[i].Revision == failedRev {
			if failed {
				obj.Status.History[i].Result = v1alpha1.ReleaseFailed
			}
			obj.Status.History[i].RevertedBy = commit
		}
	}
	conditions.MarkTrue(obj, v1alpha1.RolledBackCondition, v1alpha1.RevertPushedReason,
		"revision %s reverted by commit %s in Git", failedRev, commit)
}

// newRollback describes a revert of failedRev; the images of a failed revision (not of one
// a person asked to roll back) are kept for the quarantine.
func newRollback(obj *v1alpha1.ImmutableRelease, failedRev, commit string, reverted []string, reason string, failed bool) *v1alpha1.Rollback {
	var failedImages []v1alpha1.WorkloadImage
	for _, im := range obj.Status.Images {
		if failed {
			failedImages = append(failedImages, v1alpha1.WorkloadImage{Workload: im.Workload, Container: im.Container, Image: im.Image})
		}
	}
	return &v1alpha1.Rollback{FailedRevision: failedRev, RevertCommit: commit,
		RevertedCommits: reverted, Reason: reason, Time: metav1.Now(), FailedImages: failedImages}
}

// recordRevertFromGit derives the rollback from the revert commit's trailers when it is
// applied, so that the status is right also after a crash between push and status update.
func recordRevertFromGit(obj *v1alpha1.ImmutableRelease, commit git.Commit) {
	release, failed := git.RevertTrailers(commit.Message)
	if release != obj.Namespace+"/"+obj.Name {
		return
	}
	if lr := obj.Status.LastRollback; lr != nil && git.RevisionHash(lr.FailedRevision) == failed && lr.RevertCommit != "" {
		// Already recorded, when the revert was pushed or by settleProposal: a merge
		// commit that quotes the trailers must not overwrite it.
		return
	}
	for _, h := range obj.Status.History {
		if git.RevisionHash(h.Revision) == failed {
			recordRollback(obj, h.Revision, commit.Hash, nil, "", h.Result == v1alpha1.ReleaseFailed)
			return
		}
	}
}

// requestFreshGitCheck makes the next reconcile list the remote fresh, at once.
func (r *ImmutableReleaseReconciler) requestFreshGitCheck(obj *v1alpha1.ImmutableRelease) {
	r.memories.peek(client.ObjectKeyFromObject(obj)).updateSource((*git.Source).Refresh)
}

// quarantineFailedDigests, once the revert of a failed revision is applied, quarantines the
// digests that the failed revision brought and the revert took away.
func quarantineFailedDigests(obj *v1alpha1.ImmutableRelease, revisionHash string, images []v1alpha1.WorkloadImage) {
	if lr := obj.Status.LastRollback; lr != nil && lr.RevertCommit == revisionHash {
		quarantineDigests(obj, images)
	}
}

// quarantineDigests quarantines the failed images of the last rollback that images, the
// containers of the revision that brought the revert, no longer run.
func quarantineDigests(obj *v1alpha1.ImmutableRelease, images []v1alpha1.WorkloadImage) {
	lr := obj.Status.LastRollback
	if lr == nil || !obj.QuarantineEnabled() {
		return
	}
	kept := map[string]bool{}
	for _, im := range images {
		kept[im.Workload+"/"+im.Container+"@"+digestOf(im.Image)] = true
	}
	for _, im := range lr.FailedImages {
		d := digestOf(im.Image)
		if d == "" || kept[im.Workload+"/"+im.Container+"@"+d] || quarantined(obj, im.Workload, im.Container, d) {
			continue
		}
		obj.Status.Quarantine = append(obj.Status.Quarantine, v1alpha1.QuarantinedDigest{
			Workload: im.Workload, Container: im.Container, Digest: d, FailedRevision: lr.FailedRevision, Time: metav1.Now()})
	}
}

func quarantined(obj *v1alpha1.ImmutableRelease, workload, container, digest string) bool {
	for _, q := range obj.Status.Quarantine {
		if q.Workload == workload && q.Container == container && q.Digest == digest {
			return true
		}
	}
	return false
}

// checkQuarantine refuses objects that bring back a quarantined digest for the same container.
func checkQuarantine(obj *v1alpha1.ImmutableRelease, revision string, images []v1alpha1.WorkloadImage) error {
	var found []string
	for _, im := range images {
		for _, q := range obj.Status.Quarantine {
			if q.Workload == im.Workload && q.Container == im.Container && q.Digest == digestOf(im.Image) {
				found = append(found, fmt.Sprintf("%s container %s: %s failed in revision %s", im.Workload, im.Container, q.Digest, q.FailedRevision))
			}
		}
	}
	if len(found) == 0 {
		return nil
	}
	return stall(v1alpha1.QuarantinedDigestReason, fmt.Errorf("revision %s brings back quarantined digests: %s; if it is fixed, lift the quarantine with kubectl annotate immutablerelease %s %s=<digest>",
		revision, strings.Join(found, "; "), obj.Name, v1alpha1.UnquarantineAnnotation))
}

// liftQuarantine removes the digest named by the unquarantine annotation, and has Git
// checked again so that a refused revision is applied at once.
func (r *ImmutableReleaseReconciler) liftQuarantine(obj *v1alpha1.ImmutableRelease) {
	digest := obj.GetAnnotations()[v1alpha1.UnquarantineAnnotation]
	if digest == "" {
		return
	}
	kept := obj.Status.Quarantine[:0]
	lifted := false
	for _, q := range obj.Status.Quarantine {
		if q.Digest == digest {
			lifted = true
			continue
		}
		kept = append(kept, q)
	}
	if !lifted {
		return
	}
	obj.Status.Quarantine = kept
	r.event(obj, corev1.EventTypeNormal, "Unquarantined", "Unquarantine", "Lifted the quarantine of "+digest)
	r.requestFreshGitCheck(obj)
}

func digestOf(image string) string {
	_, d, _ := strings.Cut(image, "@")
	return d
}
