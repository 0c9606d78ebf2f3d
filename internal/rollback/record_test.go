package rollback

import (
	"errors"
	"fmt"
	"testing"

	"github.com/fluxcd/pkg/runtime/conditions"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
)

// cond is a condition's status, reason and message.
type cond struct {
	Status          metav1.ConditionStatus
	Reason, Message string
}

func condOf(obj *v1alpha1.ImmutableRelease, t string) *cond {
	c := conditions.Get(obj, t)
	if c == nil {
		return nil
	}
	return &cond{c.Status, c.Reason, c.Message}
}

func TestRecord(t *testing.T) {
	verdict := "revision " + failedRev + " failed its health check"
	pushPlan := Plan{Action: Revert, Failed: failedRev, Target: healthyHash, Reason: verdict, Branch: "main"}
	manualPlan := Plan{Action: Revert, Failed: failedRev, Target: healthyHash, Reason: "manual rollback to " + healthyHash + " requested",
		Manual: true, RollbackTo: "previous@1", Branch: "main"}
	prPlan := Plan{Action: Revert, Failed: failedRev, Target: healthyHash, Reason: verdict, PullRequest: true, Branch: "release"}
	failedImages := []v1alpha1.WorkloadImage{{Workload: "Deployment/shop/web", Container: "app", Image: "ghcr.io/acme/web@sha256:dead"}}
	conflict := &git.ConflictError{Head: headHash, Files: []git.FileConflict{{
		Path: "app/deployment.yaml", Reverted: git.Commit{Hash: failedHash, Subject: "Release a broken build"},
		ChangedBy: []git.Commit{{Hash: headHash, Subject: "Fix forward"}}, Detail: "line 16 of the branch's version",
	}}}
	conflictMsg := "not reverting " + failedRev + ": " + conflict.Error() + "; nothing was pushed. Push a fix, or revert by hand (git revert bbbbbbb on main, " +
		"resolve the conflicts under app, push); the operator tries again when the branch changes"
	prURL := "https://git.example/shop/pulls/1"

	tests := []struct {
		name string
		obj  *v1alpha1.ImmutableRelease
		plan Plan
		res  Result
		want Effect
		// What the status then says; nil for an unchanged field.
		rolledBack, pending *cond
		lastRollback        *v1alpha1.Rollback
		conflict            *v1alpha1.RevertConflict
		history             *v1alpha1.ReleaseRecord // the failed revision's entry
		handled             string
	}{
		{
			name: "nothing to do changes nothing",
			obj:  release(),
			plan: Plan{Action: AlreadyRolledBack, Failed: failedRev},
		},
		{
			name: "nothing asked changes nothing",
			obj:  release(),
			plan: Plan{Action: None},
		},
		{
			name:       "no healthy revision",
			obj:        release(),
			plan:       Plan{Action: NoHealthyRevision, Failed: failedRev, Message: "no earlier revision was healthy: fix " + failedRev + " in Git"},
			rolledBack: &cond{metav1.ConditionFalse, v1alpha1.NoHealthyRevisionReason, "no earlier revision was healthy: fix " + failedRev + " in Git"},
		},
		{
			name:       "an invalid target is handled once, and said",
			obj:        release(),
			plan:       Plan{Action: InvalidTarget, Failed: failedRev, Manual: true, RollbackTo: "nothing@1", Message: `rollback to "nothing@1": name a revision`},
			rolledBack: &cond{metav1.ConditionFalse, v1alpha1.RevertFailedReason, `rollback to "nothing@1": name a revision`},
			handled:    "nothing@1",
		},
		{
			name: "pushed: the failed revision is Failed and reverted, its images kept, the conflict forgotten",
			obj:  release(conflicted(failedRev, headHash)),
			plan: pushPlan,
			res:  Result{Commit: revertHash, Reverted: []string{failedHash}},
			want: Effect{FreshGitCheck: true, Event: &Event{Type: corev1.EventTypeWarning, Reason: "RolledBack",
				Message: "Pushed revert commit " + revertHash + " to main, reverting 1 commits after aaaaaaa: " + verdict}},
			rolledBack:   &cond{metav1.ConditionTrue, v1alpha1.RevertPushedReason, "revision " + failedRev + " reverted by commit " + revertHash + " in Git"},
			lastRollback: &v1alpha1.Rollback{FailedRevision: failedRev, RevertCommit: revertHash, RevertedCommits: []string{failedHash}, Reason: verdict, FailedImages: failedImages},
			history:      &v1alpha1.ReleaseRecord{Revision: failedRev, Result: v1alpha1.ReleaseFailed, RevertedBy: revertHash},
		},
		{
			name: "found already on the branch after a crash: said so, not 'reverting 0 commits'",
			obj:  release(),
			plan: pushPlan,
			res:  Result{Commit: revertHash, Existing: true},
			want: Effect{FreshGitCheck: true, Event: &Event{Type: corev1.EventTypeWarning, Reason: "RolledBack",
				Message: "Found revert commit " + revertHash + " of " + failedRev + " already on main; nothing pushed"}},
			rolledBack:   &cond{metav1.ConditionTrue, v1alpha1.RevertPushedReason, "revision " + failedRev + " reverted by commit " + revertHash + ", found already on main"},
			lastRollback: &v1alpha1.Rollback{FailedRevision: failedRev, RevertCommit: revertHash, Reason: verdict, FailedImages: failedImages},
			history:      &v1alpha1.ReleaseRecord{Revision: failedRev, Result: v1alpha1.ReleaseFailed, RevertedBy: revertHash},
		},
		{
			name: "a manual rollback keeps the revision's result and quarantines nothing",
			obj: release(func(o *v1alpha1.ImmutableRelease) {
				o.Status.History[0].Result = v1alpha1.ReleaseHealthy
			}),
			plan: manualPlan,
			res:  Result{Commit: revertHash, Reverted: []string{failedHash}},
			want: Effect{FreshGitCheck: true, Event: &Event{Type: corev1.EventTypeWarning, Reason: "RolledBack",
				Message: "Pushed revert commit " + revertHash + " to main, reverting 1 commits after aaaaaaa: " + manualPlan.Reason}},
			rolledBack:   &cond{metav1.ConditionTrue, v1alpha1.RevertPushedReason, "revision " + failedRev + " reverted by commit " + revertHash + " in Git"},
			lastRollback: &v1alpha1.Rollback{FailedRevision: failedRev, RevertCommit: revertHash, RevertedCommits: []string{failedHash}, Reason: manualPlan.Reason},
			history:      &v1alpha1.ReleaseRecord{Revision: failedRev, Result: v1alpha1.ReleaseHealthy, RevertedBy: revertHash},
			handled:      "previous@1",
		},
		{
			name:       "fixed forward",
			obj:        release(),
			plan:       pushPlan,
			res:        Result{Err: fmt.Errorf("reverting: %w", git.ErrFixedForward)},
			want:       Effect{FreshGitCheck: true},
			rolledBack: &cond{metav1.ConditionFalse, v1alpha1.FixedForwardReason, "not reverting " + failedRev + ": newer commits already undid its changes under the path; applying them instead"},
		},
		{
			name:       "a conflict is recorded with its head, said, and the new head looked at",
			obj:        release(),
			plan:       pushPlan,
			res:        Result{Err: conflict},
			want:       Effect{FreshGitCheck: true, Event: &Event{Type: corev1.EventTypeWarning, Reason: v1alpha1.RevertConflictReason, Message: conflictMsg}},
			rolledBack: &cond{metav1.ConditionFalse, v1alpha1.RevertConflictReason, conflictMsg},
			conflict:   &v1alpha1.RevertConflict{FailedRevision: failedRev, Head: headHash},
		},
		{
			name: "a signing key that cannot sign",
			obj:  release(),
			plan: pushPlan,
			res:  Result{Err: &Failure{Reason: v1alpha1.InvalidSigningKeyReason, Err: errors.New(`signing key secret "k" not found`)}},
			want: Effect{Reason: v1alpha1.InvalidSigningKeyReason,
				Err: fmt.Errorf("signing the revert of %s: %w", failedRev, errors.New(`signing key secret "k" not found`))},
			rolledBack: &cond{metav1.ConditionFalse, v1alpha1.InvalidSigningKeyReason, "not reverting " + failedRev + `: signing key secret "k" not found`},
		},
		{
			name:       "a pull request that cannot be proposed",
			obj:        release(mode(v1alpha1.RollbackPullRequest)),
			plan:       prPlan,
			res:        Result{Err: &Failure{Reason: v1alpha1.PullRequestFailedReason, Err: errors.New("the gitea API refused the token")}},
			want:       Effect{Reason: v1alpha1.PullRequestFailedReason, Err: errors.New("the gitea API refused the token")},
			rolledBack: &cond{metav1.ConditionFalse, v1alpha1.PullRequestFailedReason, "the gitea API refused the token"},
		},
		{
			name: "another Git failure is retried",
			obj:  release(),
			plan: pushPlan,
			res:  Result{Err: errors.New("connection refused")},
			want: Effect{Reason: v1alpha1.RevertFailedReason,
				Err: fmt.Errorf("reverting revision %s in Git: %w", failedRev, errors.New("connection refused"))},
			rolledBack: &cond{metav1.ConditionFalse, v1alpha1.RevertFailedReason, "reverting " + failedRev + ": connection refused"},
		},
		{
			name: "a pull request opened",
			obj:  release(mode(v1alpha1.RollbackPullRequest), conflicted(failedRev, headHash)),
			plan: prPlan,
			res:  Result{Commit: revertHash, Reverted: []string{failedHash}, ProposalBranch: "immutable-release/revert-bbbbbbb", PullRequestURL: prURL},
			want: Effect{Event: &Event{Type: corev1.EventTypeWarning, Reason: "RollbackProposed",
				Message: "Opened pull request " + prURL + " to revert " + failedRev + " (commit " + revertHash + " on branch immutable-release/revert-bbbbbbb): " + verdict}},
			rolledBack: &cond{metav1.ConditionUnknown, v1alpha1.PullRequestOpenedReason, "the revert of " + failedRev + " is proposed in pull request " + prURL + " and not merged yet"},
			pending: &cond{metav1.ConditionTrue, v1alpha1.PullRequestOpenedReason, "pull request " + prURL + " proposes commit eeeeeee on branch immutable-release/revert-bbbbbbb, reverting " +
				failedRev + "; merge it to roll back. Until main changes, the cluster stays on what it says"},
			lastRollback: &v1alpha1.Rollback{FailedRevision: failedRev, RevertCommit: revertHash, RevertedCommits: []string{failedHash}, Reason: verdict, FailedImages: failedImages, PullRequestURL: prURL},
			history:      &v1alpha1.ReleaseRecord{Revision: failedRev, Result: v1alpha1.ReleaseFailed},
		},
		{
			name: "a pull request found open after a crash",
			obj:  release(mode(v1alpha1.RollbackPullRequest)),
			plan: prPlan,
			res:  Result{Commit: revertHash, Existing: true, ProposalBranch: "immutable-release/revert-bbbbbbb", PullRequestURL: prURL, PullRequestFound: true},
			want: Effect{Event: &Event{Type: corev1.EventTypeNormal, Reason: "RollbackProposed",
				Message: "Found pull request " + prURL + " proposing the revert of " + failedRev + " (commit " + revertHash + " on branch immutable-release/revert-bbbbbbb)"}},
			rolledBack: &cond{metav1.ConditionUnknown, v1alpha1.PullRequestOpenedReason, "the revert of " + failedRev + " is proposed in pull request " + prURL + " and not merged yet"},
			pending: &cond{metav1.ConditionTrue, v1alpha1.PullRequestOpenedReason, "pull request " + prURL + " proposes commit eeeeeee on branch immutable-release/revert-bbbbbbb, reverting " +
				failedRev + "; merge it to roll back. Until main changes, the cluster stays on what it says"},
			lastRollback: &v1alpha1.Rollback{FailedRevision: failedRev, RevertCommit: revertHash, Reason: verdict, FailedImages: failedImages, PullRequestURL: prURL},
		},
		{
			name: "in PullRequest mode, the revert already on the base branch is the rollback",
			obj:  release(mode(v1alpha1.RollbackPullRequest)),
			plan: prPlan,
			res:  Result{Commit: revertHash, Existing: true},
			want: Effect{FreshGitCheck: true, Event: &Event{Type: corev1.EventTypeWarning, Reason: "RolledBack",
				Message: "Found revert commit " + revertHash + " of " + failedRev + " already on release; nothing pushed"}},
			rolledBack:   &cond{metav1.ConditionTrue, v1alpha1.RevertPushedReason, "revision " + failedRev + " reverted by commit " + revertHash + ", found already on release"},
			lastRollback: &v1alpha1.Rollback{FailedRevision: failedRev, RevertCommit: revertHash, Reason: verdict, FailedImages: failedImages},
			history:      &v1alpha1.ReleaseRecord{Revision: failedRev, Result: v1alpha1.ReleaseFailed, RevertedBy: revertHash},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			before := tt.obj.DeepCopy()
			eff := Record(tt.obj, tt.plan, tt.res)
			g.Expect(eff).To(Equal(tt.want))

			st := tt.obj.Status
			g.Expect(condOf(tt.obj, v1alpha1.RolledBackCondition)).To(Equal(tt.rolledBack))
			g.Expect(condOf(tt.obj, v1alpha1.RollbackPendingCondition)).To(Equal(tt.pending))
			if st.LastRollback != nil {
				st.LastRollback.Time = metav1.Time{}
			}
			want := tt.lastRollback
			if want == nil {
				want = before.Status.LastRollback
			}
			g.Expect(st.LastRollback).To(Equal(want))
			wantConflict := tt.conflict
			if wantConflict == nil && (tt.lastRollback == nil || tt.res.Err != nil) {
				wantConflict = before.Status.RevertConflict
			}
			g.Expect(st.RevertConflict).To(Equal(wantConflict), "status.revertConflict")
			wantHistory := before.Status.History[0]
			if tt.history != nil {
				wantHistory = *tt.history
			}
			g.Expect(st.History[0]).To(Equal(wantHistory))
			g.Expect(st.History[1:]).To(Equal(before.Status.History[1:]))
			g.Expect(st.LastHandledRollbackTo).To(Equal(tt.handled))
			g.Expect(st.Quarantine).To(BeEmpty(), "quarantined only once the revert is applied")
		})
	}
}

func TestRecordFromGit(t *testing.T) {
	trailers := "Revert \"Release a broken build\"\n\nThis reverts commit " + failedHash + ".\n\nRelease: shop/web\nFailed-Revision: " + failedHash + "\n"
	tests := []struct {
		name         string
		obj          *v1alpha1.ImmutableRelease
		commit       git.Commit
		lastRollback *v1alpha1.Rollback
		conflict     *v1alpha1.RevertConflict
	}{
		{
			name: "a revert pushed before a crash is recorded from its trailers",
			obj: release(func(o *v1alpha1.ImmutableRelease) {
				o.Status.LastAppliedRevision = "main@sha1:" + revertHash
			}),
			commit:       git.Commit{Hash: revertHash, Message: trailers},
			lastRollback: &v1alpha1.Rollback{FailedRevision: failedRev, RevertCommit: revertHash, FailedImages: release().Status.Images},
		},
		{
			name: "a revert recorded already is left as it is",
			obj: release(func(o *v1alpha1.ImmutableRelease) {
				o.Status.LastRollback = &v1alpha1.Rollback{FailedRevision: failedRev, RevertCommit: headHash, Reason: "merged"}
			}),
			commit:       git.Commit{Hash: revertHash, Message: trailers},
			lastRollback: &v1alpha1.Rollback{FailedRevision: failedRev, RevertCommit: headHash, Reason: "merged"},
		},
		{
			name:   "another release's revert is not ours",
			obj:    release(func(o *v1alpha1.ImmutableRelease) { o.Name = "api" }),
			commit: git.Commit{Hash: revertHash, Message: trailers},
		},
		{
			name: "a conflict of another revision is forgotten once the branch moved past it",
			obj: release(conflicted(olderRev, headHash), func(o *v1alpha1.ImmutableRelease) {
				o.Status.LastAppliedRevision = "main@sha1:" + headHash
			}),
			commit: git.Commit{Hash: headHash, Message: "Fix forward"},
		},
		{
			name:     "the conflict of the applied revision stays",
			obj:      release(conflicted(failedRev, headHash)),
			commit:   git.Commit{Hash: failedHash, Message: "Release a broken build"},
			conflict: &v1alpha1.RevertConflict{FailedRevision: failedRev, Head: headHash},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			RecordFromGit(tt.obj, tt.commit)
			if lr := tt.obj.Status.LastRollback; lr != nil {
				lr.Time = metav1.Time{}
			}
			g.Expect(tt.obj.Status.LastRollback).To(Equal(tt.lastRollback))
			g.Expect(tt.obj.Status.RevertConflict).To(Equal(tt.conflict))
			if tt.lastRollback != nil && tt.lastRollback.Reason == "" {
				g.Expect(tt.obj.Status.History[0].RevertedBy).To(Equal(revertHash))
				g.Expect(conditions.IsTrue(tt.obj, v1alpha1.RolledBackCondition)).To(BeTrue())
			}
		})
	}
}
