package rollback

import (
	"fmt"

	"github.com/fluxcd/pkg/runtime/conditions"
	corev1 "k8s.io/api/core/v1"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
)

// SettleNeeded says whether revision, newly applied, may settle a pull request that
// proposes a revert: one is pending, for another revision than this one.
func SettleNeeded(obj *v1alpha1.ImmutableRelease, revision string) bool {
	lr := obj.Status.LastRollback
	return conditions.IsTrue(obj, v1alpha1.RollbackPendingCondition) && lr != nil && lr.FailedRevision != revision
}

// Settle records what became of the proposed revert once revision (whose workloads run
// images) is applied: the revert merged, in any form, ends RollbackPending and counts as
// the rollback; other commits that changed the path (a fix forward) end it too; commits
// elsewhere leave the pull request standing. The controller reads out from Git; when it
// cannot, it passes PathChanged: the new head is applied whatever it holds, so a pending
// rollback is no longer claimed.
func Settle(obj *v1alpha1.ImmutableRelease, revision string, out git.ProposalOutcome, images []v1alpha1.WorkloadImage) Effect {
	lr := obj.Status.LastRollback
	if !SettleNeeded(obj, revision) {
		return Effect{}
	}
	switch {
	case out.Merged != "":
		lr.RevertCommit = out.Merged
		for i := range obj.Status.History {
			if obj.Status.History[i].Revision == lr.FailedRevision {
				obj.Status.History[i].RevertedBy = out.Merged
			}
		}
		Quarantine(obj, images)
		conditions.MarkTrue(obj, v1alpha1.RolledBackCondition, v1alpha1.PullRequestMergedReason,
			"revision %s reverted by commit %s, merged through pull request %s", lr.FailedRevision, out.Merged, lr.PullRequestURL)
		conditions.MarkFalse(obj, v1alpha1.RollbackPendingCondition, v1alpha1.PullRequestMergedReason,
			"pull request %s is merged; applying %s", lr.PullRequestURL, revision)
		return Effect{Event: &Event{Type: corev1.EventTypeNormal, Reason: v1alpha1.PullRequestMergedReason,
			Message: fmt.Sprintf("Pull request %s is merged: applying %s, which reverts %s", lr.PullRequestURL, revision, lr.FailedRevision)}}
	case out.PathChanged:
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.FixedForwardReason,
			"not reverting %s: newer commits changed the path; applying them instead", lr.FailedRevision)
		conditions.MarkFalse(obj, v1alpha1.RollbackPendingCondition, v1alpha1.FixedForwardReason,
			"%s changed the path without the revert; applying it. Close pull request %s if it is no longer wanted", revision, lr.PullRequestURL)
		return Effect{Event: &Event{Type: corev1.EventTypeNormal, Reason: v1alpha1.FixedForwardReason,
			Message: fmt.Sprintf("Revision %s changed the path without merging pull request %s: applying it", revision, lr.PullRequestURL)}}
	}
	return Effect{}
}
