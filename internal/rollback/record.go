package rollback

import (
	"errors"
	"fmt"
	"strings"

	"github.com/fluxcd/pkg/runtime/conditions"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
)

// Result is what carrying out a Revert plan came to.
type Result struct {
	// Commit is the revert commit: pushed, found on the branch, or proposed.
	Commit string
	// Reverted are the commits it reverts, newest first.
	Reverted []string
	// Existing says the revert was found, not made: on the branch (pushed before a crash,
	// or a pull request merged meanwhile), or on the pull request's branch.
	Existing bool
	// ProposalBranch holds the proposed revert, in PullRequest mode; empty when the revert
	// is on the base branch already.
	ProposalBranch string
	// PullRequestURL is the pull request opened, or found open (PullRequestFound), for
	// ProposalBranch.
	PullRequestURL   string
	PullRequestFound bool
	// Err is why it failed: a *git.ConflictError, git.ErrFixedForward, a *Failure, or
	// what else Git answered.
	Err error
}

// Failure is a step of carrying out a plan, beside the revert itself, that failed: the
// signing key cannot sign (v1alpha1.InvalidSigningKeyReason), or the pull request cannot
// be proposed (v1alpha1.PullRequestFailedReason). Nothing was pushed to the branch.
type Failure struct {
	Reason string
	Err    error
}

func (f *Failure) Error() string { return f.Err.Error() }
func (f *Failure) Unwrap() error { return f.Err }

// Effect is what the controller does after Record: emit Event, list Git again at once
// when FreshGitCheck, and fail the reconcile with Err (retried with backoff, reason
// Reason).
type Effect struct {
	Event         *Event
	FreshGitCheck bool
	Reason        string
	Err           error
}

// Event is an event about the release, of the Rollback action.
type Event struct {
	Type, Reason, Message string
}

// Record writes into the status what plan came to, given what the controller's Git
// operation returned (res, for a Revert plan), and says what the controller must do.
func Record(obj *v1alpha1.ImmutableRelease, plan Plan, res Result) Effect {
	if plan.Manual {
		obj.Status.LastHandledRollbackTo = plan.RollbackTo
	}
	switch plan.Action {
	case NoHealthyRevision:
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.NoHealthyRevisionReason, "%s", plan.Message)
		return Effect{}
	case InvalidTarget:
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.RevertFailedReason, "%s", plan.Message)
		return Effect{}
	case Revert:
	default:
		return Effect{}
	}

	var conflict *git.ConflictError
	var failure *Failure
	switch {
	case errors.As(res.Err, &conflict):
		return recordConflict(obj, plan, conflict)
	case errors.Is(res.Err, git.ErrFixedForward):
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.FixedForwardReason,
			"not reverting %s: newer commits already undid its changes under the path; applying them instead", plan.Failed)
		return Effect{FreshGitCheck: true}
	case errors.As(res.Err, &failure) && failure.Reason == v1alpha1.InvalidSigningKeyReason:
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, failure.Reason, "not reverting %s: %s", plan.Failed, failure.Err)
		return Effect{Reason: failure.Reason, Err: fmt.Errorf("signing the revert of %s: %w", plan.Failed, failure.Err)}
	case errors.As(res.Err, &failure):
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, failure.Reason, "%s", failure.Err)
		return Effect{Reason: failure.Reason, Err: failure.Err}
	case res.Err != nil:
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.RevertFailedReason, "reverting %s: %s", plan.Failed, res.Err)
		return Effect{Reason: v1alpha1.RevertFailedReason, Err: fmt.Errorf("reverting revision %s in Git: %w", plan.Failed, res.Err)}
	}

	obj.Status.RevertConflict = nil
	if plan.PullRequest && res.ProposalBranch != "" {
		return recordProposal(obj, plan, res)
	}
	recordRollback(obj, plan.Failed, res.Commit, res.Reverted, plan.Reason, !plan.Manual)
	if res.Existing {
		conditions.MarkTrue(obj, v1alpha1.RolledBackCondition, v1alpha1.RevertPushedReason,
			"revision %s reverted by commit %s, found already on %s", plan.Failed, res.Commit, plan.Branch)
		return Effect{FreshGitCheck: true, Event: &Event{Type: corev1.EventTypeWarning, Reason: "RolledBack",
			Message: fmt.Sprintf("Found revert commit %s of %s already on %s; nothing pushed", res.Commit, plan.Failed, plan.Branch)}}
	}
	return Effect{FreshGitCheck: true, Event: &Event{Type: corev1.EventTypeWarning, Reason: "RolledBack",
		Message: fmt.Sprintf("Pushed revert commit %s to %s, reverting %d commits after %s: %s",
			res.Commit, plan.Branch, len(res.Reverted), short(plan.Target), plan.Reason)}}
}

// recordConflict records a revert that later commits make impossible without guessing, and
// the head it was tried on: it is not tried again until the head moves. The condition and
// a Warning event name the commits and files, and what a person can do.
func recordConflict(obj *v1alpha1.ImmutableRelease, plan Plan, err *git.ConflictError) Effect {
	obj.Status.RevertConflict = &v1alpha1.RevertConflict{FailedRevision: plan.Failed, Head: err.Head}
	var commits []string
	for _, c := range err.Commits() {
		commits = append(commits, short(c))
	}
	msg := fmt.Sprintf("not reverting %s: %s; nothing was pushed. Push a fix, or revert by hand (git revert %s on %s, resolve the conflicts under %s, push); the operator tries again when the branch changes",
		plan.Failed, err, strings.Join(commits, " "), plan.Branch, orRoot(obj.Spec.Path))
	conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.RevertConflictReason, "%s", msg)
	return Effect{FreshGitCheck: true, Event: &Event{Type: corev1.EventTypeWarning, Reason: v1alpha1.RevertConflictReason, Message: msg}}
}

// recordProposal records the pull request that proposes the revert: RolledBack is Unknown
// and RollbackPending True until the branch changes.
func recordProposal(obj *v1alpha1.ImmutableRelease, plan Plan, res Result) Effect {
	lr := newRollback(obj, plan.Failed, res.Commit, res.Reverted, plan.Reason, !plan.Manual)
	lr.PullRequestURL = res.PullRequestURL
	obj.Status.LastRollback = lr
	conditions.MarkUnknown(obj, v1alpha1.RolledBackCondition, v1alpha1.PullRequestOpenedReason,
		"the revert of %s is proposed in pull request %s and not merged yet", plan.Failed, res.PullRequestURL)
	conditions.MarkTrue(obj, v1alpha1.RollbackPendingCondition, v1alpha1.PullRequestOpenedReason,
		"pull request %s proposes commit %s on branch %s, reverting %s; merge it to roll back. Until %s changes, the cluster stays on what it says",
		res.PullRequestURL, short(res.Commit), res.ProposalBranch, plan.Failed, obj.Spec.Git.Ref.Branch)
	if res.PullRequestFound {
		return Effect{Event: &Event{Type: corev1.EventTypeNormal, Reason: "RollbackProposed",
			Message: fmt.Sprintf("Found pull request %s proposing the revert of %s (commit %s on branch %s)", res.PullRequestURL, plan.Failed, res.Commit, res.ProposalBranch)}}
	}
	return Effect{Event: &Event{Type: corev1.EventTypeWarning, Reason: "RollbackProposed",
		Message: fmt.Sprintf("Opened pull request %s to revert %s (commit %s on branch %s): %s", res.PullRequestURL, plan.Failed, res.Commit, res.ProposalBranch, plan.Reason)}}
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

// RecordFromGit runs when a new revision is applied. It derives the rollback from the
// revert commit's trailers, so that the status is right also after a crash between push
// and status update; and it forgets a revert conflict of another revision, which the
// branch has moved past.
func RecordFromGit(obj *v1alpha1.ImmutableRelease, commit git.Commit) {
	if rc := obj.Status.RevertConflict; rc != nil && rc.FailedRevision != obj.Status.LastAppliedRevision {
		obj.Status.RevertConflict = nil
	}
	release, failed := git.RevertTrailers(commit.Message)
	if release != obj.Namespace+"/"+obj.Name {
		return
	}
	if lr := obj.Status.LastRollback; lr != nil && git.RevisionHash(lr.FailedRevision) == failed && lr.RevertCommit != "" {
		// Already recorded, when the revert was pushed or by Settle: a merge commit that
		// quotes the trailers must not overwrite it.
		return
	}
	for _, h := range obj.Status.History {
		if git.RevisionHash(h.Revision) == failed {
			recordRollback(obj, h.Revision, commit.Hash, nil, "", h.Result == v1alpha1.ReleaseFailed)
			return
		}
	}
}

func short(hash string) string {
	if len(hash) > 7 {
		return hash[:7]
	}
	return hash
}

func orRoot(p string) string {
	if p == "" || p == "." || p == "./" {
		return "the repository root"
	}
	return p
}
