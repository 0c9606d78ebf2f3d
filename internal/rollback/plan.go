// Package rollback decides what to do about a failed revision, or a rollback a person asked
// for, and records what came of it. It is pure: the controller reads the Secrets and the
// branch head, makes the revert in Git, opens the pull request, and emits the events; every
// decision in between is here.
//
// The path of one health verdict: Decide says what to do (nothing, and why; nothing to go
// back to; revert what, to what, how). The controller carries out a Revert plan and hands
// back a Result; Record writes into the status what it came to and returns the Effect: the
// event, whether Git is looked at again at once, the error to retry with. When a revision
// is applied later, RecordFromGit, QuarantineFailed and Settle finish the story from what
// Git then says.
package rollback

import (
	"strings"

	"github.com/fluxcd/pkg/runtime/conditions"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
)

// Action is what a Plan does.
type Action int

const (
	// None: no manual rollback is asked for (no rollback-to annotation, or its value was
	// handled already).
	None Action = iota
	// Disabled: spec.rollback.mode is Disabled.
	Disabled
	// NoBranch: the release follows a tag or a commit, which are never rolled back.
	NoBranch
	// AlreadyRolledBack: the failed revision was reverted already (status.lastRollback).
	AlreadyRolledBack
	// PullRequestPending: a pull request still proposes the revert of what is applied.
	PullRequestPending
	// ConflictUnchanged: the same revert conflicted on the branch head as it still is;
	// trying again would give the same conflict.
	ConflictUnchanged
	// NoHealthyRevision: no earlier revision of the history was healthy.
	NoHealthyRevision
	// InvalidTarget: the rollback-to annotation names nothing that can be rolled back to.
	InvalidTarget
	// Revert: revert, in Git, the commits after Target up to Failed.
	Revert
)

var actionNames = [...]string{"None", "Disabled", "NoBranch", "AlreadyRolledBack", "PullRequestPending",
	"ConflictUnchanged", "NoHealthyRevision", "InvalidTarget", "Revert"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "Action(?)"
}

// Request is what a rollback is asked for with, beside the release itself.
type Request struct {
	// Verdict is the failed health check's message: the reason of an automatic rollback.
	Verdict string
	// RollbackTo, when not empty, asks for a manual rollback: the value of the rollback-to
	// annotation.
	RollbackTo string
	// Head is the branch head as Git lists it now. The controller reads it only when
	// HeadNeeded says so; empty when it is not known (it then counts as moved).
	Head string
}

// Plan is what to do.
type Plan struct {
	Action Action
	// Failed is the revision to revert (the applied one); Target the full hash of the
	// commit to go back to.
	Failed, Target string
	// Reason is why: it goes into the revert commit's Reason trailer.
	Reason string
	// Manual is true for a rollback a person asked for: the reverted revision did not
	// fail, so it is not marked Failed and its digests are not quarantined.
	Manual bool
	// RollbackTo is the annotation value a manual plan handles.
	RollbackTo string
	// PullRequest says the revert is proposed in a pull request instead of pushed.
	PullRequest bool
	// Branch is the branch the revert is made on: spec.git.ref.branch, or in PullRequest
	// mode the pull request's base.
	Branch string
	// Message says, for NoHealthyRevision and InvalidTarget, what is wrong and what to do.
	Message string
}

// Decide says what to do about the applied revision: after a failed health check
// (req.Verdict), or when a person asks for a rollback (req.RollbackTo).
func Decide(obj *v1alpha1.ImmutableRelease, req Request) Plan {
	if req.RollbackTo != "" {
		return decideManual(obj, req)
	}
	failed := obj.Status.LastAppliedRevision
	p := Plan{Failed: failed, Reason: req.Verdict}
	switch lr := obj.Status.LastRollback; {
	case obj.GetRollbackMode() == v1alpha1.RollbackDisabled:
		p.Action = Disabled
	case obj.Spec.Git.Ref.Branch == "":
		p.Action = NoBranch
	case lr != nil && lr.FailedRevision == failed:
		p.Action = AlreadyRolledBack
	case ProposedIn(obj) != "":
		// The branch did not change the path since the revision the pull request
		// reverts: the same pull request still rolls this one back.
		p.Action = PullRequestPending
	default:
		healthy := lastHealthy(obj, failed)
		if healthy == "" {
			p.Action = NoHealthyRevision
			p.Message = "no earlier revision was healthy: fix " + failed + " in Git"
			return p
		}
		p.Target = git.RevisionHash(healthy)
		return revert(obj, p, req.Head)
	}
	return p
}

// decideManual resolves the rollback-to annotation: "previous" is the last healthy revision
// before the applied one, anything else 7 or more hex digits of a revision of the history.
// Its value is handled once: a new token asks again.
func decideManual(obj *v1alpha1.ImmutableRelease, req Request) Plan {
	value := req.RollbackTo
	if value == obj.Status.LastHandledRollbackTo {
		return Plan{Action: None}
	}
	applied := obj.Status.LastAppliedRevision
	p := Plan{Failed: applied, Manual: true, RollbackTo: value}
	target, _, _ := strings.Cut(value, "@")
	if obj.Spec.Git.Ref.Branch == "" || applied == "" {
		p.Action = InvalidTarget
		p.Message = "rollback to " + target + ": only a release that follows a branch and has applied a revision can be rolled back"
		return p
	}
	if target == "previous" {
		target = git.RevisionHash(lastHealthy(obj, applied))
	} else {
		for _, h := range obj.Status.History {
			if hash := git.RevisionHash(h.Revision); len(target) >= 7 && strings.HasPrefix(hash, target) {
				target = hash
				break
			}
		}
	}
	if len(target) != 40 {
		p.Action = InvalidTarget
		p.Message = "rollback to \"" + value + "\": name a revision of the history (7 or more hex digits of its commit) or previous"
		return p
	}
	p.Target = target
	p.Reason = "manual rollback to " + target + " requested"
	return revert(obj, p, req.Head)
}

// revert completes a plan to revert p.Failed, unless its revert conflicted before on the
// head that the branch still has.
func revert(obj *v1alpha1.ImmutableRelease, p Plan, head string) Plan {
	p.Action = Revert
	p.PullRequest = obj.GetRollbackMode() == v1alpha1.RollbackPullRequest
	p.Branch = obj.Spec.Git.Ref.Branch
	if p.PullRequest {
		p.Branch = obj.GetPullRequestBaseBranch()
	}
	if rc := obj.Status.RevertConflict; rc != nil && rc.FailedRevision == p.Failed && head != "" && head == rc.Head {
		p.Action = ConflictUnchanged
	}
	return p
}

// HeadNeeded names the branch whose head Decide needs for req, or is "": it would revert
// a revision whose revert conflicted before (status.revertConflict). Only then does the
// controller ask Git for the head.
func HeadNeeded(obj *v1alpha1.ImmutableRelease, req Request) string {
	rc := obj.Status.RevertConflict
	if rc == nil {
		return ""
	}
	req.Head = ""
	if p := Decide(obj, req); p.Action == Revert && p.Failed == rc.FailedRevision {
		return p.Branch
	}
	return ""
}

// ProposedIn is the pull request that still proposes the revert of what is applied, or ""
// (RollbackPending: the branch has not changed the path since the revision that failed).
func ProposedIn(obj *v1alpha1.ImmutableRelease) string {
	lr := obj.Status.LastRollback
	if !conditions.IsTrue(obj, v1alpha1.RollbackPendingCondition) || lr == nil {
		return ""
	}
	return lr.PullRequestURL
}

// RevertedInGit says whether the revert of revision is on the branch (RolledBack=True for
// it): what to apply next.
func RevertedInGit(obj *v1alpha1.ImmutableRelease, revision string) bool {
	lr := obj.Status.LastRollback
	return conditions.IsTrue(obj, v1alpha1.RolledBackCondition) && lr != nil && lr.FailedRevision == revision
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
