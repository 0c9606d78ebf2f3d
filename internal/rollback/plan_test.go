package rollback

import (
	"strings"
	"testing"

	"github.com/fluxcd/pkg/runtime/conditions"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/immutable-release/operator/api/v1alpha1"
)

var (
	healthyHash = strings.Repeat("a", 40)
	failedHash  = strings.Repeat("b", 40)
	olderHash   = strings.Repeat("c", 40)
	headHash    = strings.Repeat("d", 40)
	revertHash  = strings.Repeat("e", 40)
	healthyRev  = "main@sha1:" + healthyHash
	failedRev   = "main@sha1:" + failedHash
	olderRev    = "main@sha1:" + olderHash
)

// release is a release of branch main that applied failedRev after healthyRev and olderRev,
// changed by mutate.
func release(mutate ...func(*v1alpha1.ImmutableRelease)) *v1alpha1.ImmutableRelease {
	obj := &v1alpha1.ImmutableRelease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: v1alpha1.ImmutableReleaseSpec{
			Git:  v1alpha1.GitSource{URL: "https://git.example/shop.git", Ref: v1alpha1.GitReference{Branch: "main"}},
			Path: "app",
		},
		Status: v1alpha1.ImmutableReleaseStatus{
			LastAppliedRevision: failedRev,
			History: []v1alpha1.ReleaseRecord{
				{Revision: failedRev, Result: v1alpha1.ReleaseFailed},
				{Revision: healthyRev, Result: v1alpha1.ReleaseHealthy},
				{Revision: olderRev, Result: v1alpha1.ReleaseHealthy},
			},
			Images: []v1alpha1.WorkloadImage{{Workload: "Deployment/shop/web", Container: "app", Image: "ghcr.io/acme/web@sha256:dead"}},
		},
	}
	for _, m := range mutate {
		m(obj)
	}
	return obj
}

func mode(m v1alpha1.RollbackMode) func(*v1alpha1.ImmutableRelease) {
	return func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Rollback = &v1alpha1.RollbackSpec{Mode: m}
		if m == v1alpha1.RollbackPullRequest {
			o.Spec.Rollback.PullRequest = &v1alpha1.PullRequestSpec{Provider: v1alpha1.GitProviderGitea, BaseBranch: "release"}
		}
	}
}

func conflicted(failed, head string) func(*v1alpha1.ImmutableRelease) {
	return func(o *v1alpha1.ImmutableRelease) {
		o.Status.RevertConflict = &v1alpha1.RevertConflict{FailedRevision: failed, Head: head}
	}
}

func pending(o *v1alpha1.ImmutableRelease) {
	o.Status.LastRollback = &v1alpha1.Rollback{FailedRevision: olderRev, RevertCommit: revertHash, PullRequestURL: "https://git.example/shop/pulls/1"}
	conditions.MarkTrue(o, v1alpha1.RollbackPendingCondition, v1alpha1.PullRequestOpenedReason, "proposed")
}

func TestDecide(t *testing.T) {
	verdict := "revision " + failedRev + " failed its health check"
	manual := "manual rollback to " + healthyHash + " requested"
	tests := []struct {
		name   string
		obj    *v1alpha1.ImmutableRelease
		req    Request
		want   Plan
		branch string // HeadNeeded
	}{
		{
			name: "a failed revision is reverted to the last healthy one, pushed",
			obj:  release(),
			req:  Request{Verdict: verdict},
			want: Plan{Action: Revert, Failed: failedRev, Target: healthyHash, Reason: verdict, Branch: "main"},
		},
		{
			name: "in PullRequest mode it is proposed against the base branch",
			obj:  release(mode(v1alpha1.RollbackPullRequest)),
			req:  Request{Verdict: verdict},
			want: Plan{Action: Revert, Failed: failedRev, Target: healthyHash, Reason: verdict, PullRequest: true, Branch: "release"},
		},
		{
			name: "disabled",
			obj:  release(mode(v1alpha1.RollbackDisabled)),
			req:  Request{Verdict: verdict},
			want: Plan{Action: Disabled, Failed: failedRev, Reason: verdict},
		},
		{
			name: "a tag is never rolled back",
			obj:  release(func(o *v1alpha1.ImmutableRelease) { o.Spec.Git.Ref = v1alpha1.GitReference{Tag: "v1"} }),
			req:  Request{Verdict: verdict},
			want: Plan{Action: NoBranch, Failed: failedRev, Reason: verdict},
		},
		{
			name: "already rolled back",
			obj: release(func(o *v1alpha1.ImmutableRelease) {
				o.Status.LastRollback = &v1alpha1.Rollback{FailedRevision: failedRev, RevertCommit: revertHash}
			}),
			req:  Request{Verdict: verdict},
			want: Plan{Action: AlreadyRolledBack, Failed: failedRev, Reason: verdict},
		},
		{
			name: "a pull request still proposes the revert",
			obj:  release(mode(v1alpha1.RollbackPullRequest), pending),
			req:  Request{Verdict: verdict},
			want: Plan{Action: PullRequestPending, Failed: failedRev, Reason: verdict},
		},
		{
			name: "no earlier healthy revision",
			obj: release(func(o *v1alpha1.ImmutableRelease) {
				o.Status.History = o.Status.History[:1]
			}),
			req:  Request{Verdict: verdict},
			want: Plan{Action: NoHealthyRevision, Failed: failedRev, Reason: verdict, Message: "no earlier revision was healthy: fix " + failedRev + " in Git"},
		},
		{
			name:   "a conflict on the head the branch still has is not tried again",
			obj:    release(conflicted(failedRev, headHash)),
			req:    Request{Verdict: verdict, Head: headHash},
			want:   Plan{Action: ConflictUnchanged, Failed: failedRev, Target: healthyHash, Reason: verdict, Branch: "main"},
			branch: "main",
		},
		{
			name:   "a conflict on another head is tried again",
			obj:    release(conflicted(failedRev, headHash)),
			req:    Request{Verdict: verdict, Head: revertHash},
			want:   Plan{Action: Revert, Failed: failedRev, Target: healthyHash, Reason: verdict, Branch: "main"},
			branch: "main",
		},
		{
			name:   "a head that could not be listed counts as moved",
			obj:    release(conflicted(failedRev, headHash)),
			req:    Request{Verdict: verdict},
			want:   Plan{Action: Revert, Failed: failedRev, Target: healthyHash, Reason: verdict, Branch: "main"},
			branch: "main",
		},
		{
			name:   "in PullRequest mode the conflict's head is the base branch's",
			obj:    release(mode(v1alpha1.RollbackPullRequest), conflicted(failedRev, headHash)),
			req:    Request{Verdict: verdict, Head: headHash},
			want:   Plan{Action: ConflictUnchanged, Failed: failedRev, Target: healthyHash, Reason: verdict, PullRequest: true, Branch: "release"},
			branch: "release",
		},
		{
			name: "a conflict of another revision needs no head",
			obj:  release(conflicted(olderRev, headHash)),
			req:  Request{Verdict: verdict, Head: headHash},
			want: Plan{Action: Revert, Failed: failedRev, Target: healthyHash, Reason: verdict, Branch: "main"},
		},
		{
			name: "a disabled release needs no head whatever is recorded",
			obj:  release(mode(v1alpha1.RollbackDisabled), conflicted(failedRev, headHash)),
			req:  Request{Verdict: verdict},
			want: Plan{Action: Disabled, Failed: failedRev, Reason: verdict},
		},

		// Manual rollbacks.
		{
			name: "rollback to previous",
			obj:  release(),
			req:  Request{RollbackTo: "previous@1"},
			want: Plan{Action: Revert, Failed: failedRev, Target: healthyHash, Reason: manual, Manual: true, RollbackTo: "previous@1", Branch: "main"},
		},
		{
			name: "rollback to a hash prefix of the history",
			obj:  release(),
			req:  Request{RollbackTo: olderHash[:7] + "@1"},
			want: Plan{Action: Revert, Failed: failedRev, Target: olderHash, Reason: "manual rollback to " + olderHash + " requested",
				Manual: true, RollbackTo: olderHash[:7] + "@1", Branch: "main"},
		},
		{
			name: "a manual rollback ignores the mode's other checks: disabled, already rolled back",
			obj: release(mode(v1alpha1.RollbackDisabled), func(o *v1alpha1.ImmutableRelease) {
				o.Status.LastRollback = &v1alpha1.Rollback{FailedRevision: failedRev}
			}),
			req:  Request{RollbackTo: "previous@1"},
			want: Plan{Action: Revert, Failed: failedRev, Target: healthyHash, Reason: manual, Manual: true, RollbackTo: "previous@1", Branch: "main"},
		},
		{
			name: "a value handled already",
			obj:  release(func(o *v1alpha1.ImmutableRelease) { o.Status.LastHandledRollbackTo = "previous@1" }),
			req:  Request{RollbackTo: "previous@1"},
			want: Plan{Action: None},
		},
		{
			name: "a prefix shorter than 7 digits",
			obj:  release(),
			req:  Request{RollbackTo: olderHash[:6] + "@1"},
			want: Plan{Action: InvalidTarget, Failed: failedRev, Manual: true, RollbackTo: olderHash[:6] + "@1",
				Message: `rollback to "` + olderHash[:6] + `@1": name a revision of the history (7 or more hex digits of its commit) or previous`},
		},
		{
			name: "a hash outside the history",
			obj:  release(),
			req:  Request{RollbackTo: headHash + "@1"},
			want: Plan{Action: Revert, Failed: failedRev, Target: headHash, Reason: "manual rollback to " + headHash + " requested",
				Manual: true, RollbackTo: headHash + "@1", Branch: "main"},
		},
		{
			name: "previous without a healthy revision",
			obj:  release(func(o *v1alpha1.ImmutableRelease) { o.Status.History = o.Status.History[:1] }),
			req:  Request{RollbackTo: "previous@1"},
			want: Plan{Action: InvalidTarget, Failed: failedRev, Manual: true, RollbackTo: "previous@1",
				Message: `rollback to "previous@1": name a revision of the history (7 or more hex digits of its commit) or previous`},
		},
		{
			name: "a tag cannot be rolled back by hand",
			obj:  release(func(o *v1alpha1.ImmutableRelease) { o.Spec.Git.Ref = v1alpha1.GitReference{Tag: "v1"} }),
			req:  Request{RollbackTo: "previous@1"},
			want: Plan{Action: InvalidTarget, Failed: failedRev, Manual: true, RollbackTo: "previous@1",
				Message: "rollback to previous: only a release that follows a branch and has applied a revision can be rolled back"},
		},
		{
			name:   "a manual rollback that conflicted on the same head",
			obj:    release(conflicted(failedRev, headHash)),
			req:    Request{RollbackTo: "previous@1", Head: headHash},
			want:   Plan{Action: ConflictUnchanged, Failed: failedRev, Target: healthyHash, Reason: manual, Manual: true, RollbackTo: "previous@1", Branch: "main"},
			branch: "main",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(Decide(tt.obj, tt.req)).To(Equal(tt.want))
			g.Expect(HeadNeeded(tt.obj, tt.req)).To(Equal(tt.branch))
		})
	}
}

func TestProposedInAndRevertedInGit(t *testing.T) {
	g := NewWithT(t)
	obj := release(mode(v1alpha1.RollbackPullRequest))
	g.Expect(ProposedIn(obj)).To(BeEmpty())
	pending(obj)
	g.Expect(ProposedIn(obj)).To(Equal("https://git.example/shop/pulls/1"))
	conditions.MarkFalse(obj, v1alpha1.RollbackPendingCondition, v1alpha1.PullRequestMergedReason, "merged")
	g.Expect(ProposedIn(obj)).To(BeEmpty())

	g.Expect(RevertedInGit(obj, olderRev)).To(BeFalse())
	conditions.MarkTrue(obj, v1alpha1.RolledBackCondition, v1alpha1.RevertPushedReason, "pushed")
	g.Expect(RevertedInGit(obj, olderRev)).To(BeTrue())
	g.Expect(RevertedInGit(obj, failedRev)).To(BeFalse())
}
