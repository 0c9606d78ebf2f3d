package rollback

import (
	"testing"

	"github.com/fluxcd/pkg/runtime/conditions"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
)

const (
	web   = "Deployment/shop/web"
	dead  = "sha256:dead"
	good  = "sha256:600d"
	other = "sha256:0the"
)

func image(workload, container, digest string) v1alpha1.WorkloadImage {
	return v1alpha1.WorkloadImage{Workload: workload, Container: container, Image: "ghcr.io/acme/web@" + digest}
}

func reverted(o *v1alpha1.ImmutableRelease) {
	o.Status.LastRollback = &v1alpha1.Rollback{FailedRevision: failedRev, RevertCommit: revertHash,
		FailedImages: []v1alpha1.WorkloadImage{image(web, "app", dead), image(web, "sidecar", other), image(web, "init", "")}}
}

func digests(obj *v1alpha1.ImmutableRelease) []string {
	var out []string
	for _, q := range obj.Status.Quarantine {
		out = append(out, q.Workload+" "+q.Container+" "+q.Digest+" "+q.FailedRevision)
	}
	return out
}

func TestQuarantineFailed(t *testing.T) {
	tests := []struct {
		name   string
		obj    *v1alpha1.ImmutableRelease
		commit string
		images []v1alpha1.WorkloadImage
		want   []string
	}{
		{
			name:   "the revert applied: the digests it took away are quarantined, not those it kept",
			obj:    release(reverted),
			commit: revertHash,
			images: []v1alpha1.WorkloadImage{image(web, "app", good), image(web, "sidecar", other)},
			want:   []string{web + " app " + dead + " " + failedRev},
		},
		{
			name:   "another commit quarantines nothing",
			obj:    release(reverted),
			commit: headHash,
			images: []v1alpha1.WorkloadImage{image(web, "app", good)},
		},
		{
			name: "quarantine off",
			obj: release(reverted, func(o *v1alpha1.ImmutableRelease) {
				off := false
				o.Spec.Rollback = &v1alpha1.RollbackSpec{Quarantine: &off}
			}),
			commit: revertHash,
			images: []v1alpha1.WorkloadImage{image(web, "app", good)},
		},
		{
			name: "a digest quarantined already is not listed twice",
			obj: release(reverted, func(o *v1alpha1.ImmutableRelease) {
				o.Status.Quarantine = []v1alpha1.QuarantinedDigest{{Workload: web, Container: "app", Digest: dead, FailedRevision: olderRev}}
			}),
			commit: revertHash,
			images: []v1alpha1.WorkloadImage{image(web, "app", good), image(web, "sidecar", other)},
			want:   []string{web + " app " + dead + " " + olderRev},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			QuarantineFailed(tt.obj, tt.commit, tt.images)
			g.Expect(digests(tt.obj)).To(Equal(tt.want))
		})
	}
}

func TestCheckQuarantine(t *testing.T) {
	g := NewWithT(t)
	obj := release(func(o *v1alpha1.ImmutableRelease) {
		o.Status.Quarantine = []v1alpha1.QuarantinedDigest{{Workload: web, Container: "app", Digest: dead, FailedRevision: failedRev}}
	})
	g.Expect(CheckQuarantine(obj, "main@sha1:"+headHash, []v1alpha1.WorkloadImage{image(web, "app", good)})).To(Succeed())
	g.Expect(CheckQuarantine(obj, "main@sha1:"+headHash, []v1alpha1.WorkloadImage{image(web, "other", dead)})).To(Succeed(), "another container")
	g.Expect(CheckQuarantine(obj, "main@sha1:"+headHash, []v1alpha1.WorkloadImage{image(web, "app", dead)})).To(MatchError(
		"revision main@sha1:" + headHash + " brings back quarantined digests: " + web + " container app: " + dead + " failed in revision " + failedRev +
			"; if it is fixed, lift the quarantine with kubectl annotate immutablerelease web release.immutable.dev/unquarantine=<digest>"))
}

// TestUnquarantineOnce: the annotation lifts a digest once per value; the same digest
// quarantined again stays quarantined while the annotation keeps its value, and a new
// value (a token after @) lifts it again.
func TestUnquarantineOnce(t *testing.T) {
	g := NewWithT(t)
	obj := release(reverted)
	quarantine := func() {
		QuarantineFailed(obj, revertHash, []v1alpha1.WorkloadImage{image(web, "app", good), image(web, "sidecar", other)})
	}
	annotate := func(v string) { obj.SetAnnotations(map[string]string{v1alpha1.UnquarantineAnnotation: v}) }

	g.Expect(Unquarantine(obj)).To(BeEmpty(), "no annotation")
	quarantine()
	g.Expect(obj.Status.Quarantine).To(HaveLen(1))

	annotate(other)
	g.Expect(Unquarantine(obj)).To(BeEmpty(), "not quarantined")
	g.Expect(obj.Status.LastHandledUnquarantine).To(Equal(other))
	g.Expect(obj.Status.Quarantine).To(HaveLen(1))

	annotate(dead)
	g.Expect(Unquarantine(obj)).To(Equal(dead))
	g.Expect(obj.Status.Quarantine).To(BeEmpty())
	g.Expect(obj.Status.LastHandledUnquarantine).To(Equal(dead))

	// The same digest fails again and is quarantined again: the old annotation does not
	// lift it.
	quarantine()
	g.Expect(Unquarantine(obj)).To(BeEmpty())
	g.Expect(digests(obj)).To(Equal([]string{web + " app " + dead + " " + failedRev}))

	annotate(dead + "@2024-05-01T10:00:00Z")
	g.Expect(Unquarantine(obj)).To(Equal(dead))
	g.Expect(obj.Status.Quarantine).To(BeEmpty())
	g.Expect(obj.Status.LastHandledUnquarantine).To(Equal(dead + "@2024-05-01T10:00:00Z"))
}

func TestSettle(t *testing.T) {
	merge := headHash
	prURL := "https://git.example/shop/pulls/1"
	applied := "main@sha1:" + merge
	proposed := func(o *v1alpha1.ImmutableRelease) {
		o.Status.LastAppliedRevision = applied
		o.Status.LastRollback = &v1alpha1.Rollback{FailedRevision: failedRev, RevertCommit: revertHash, PullRequestURL: prURL,
			FailedImages: []v1alpha1.WorkloadImage{image(web, "app", dead)}}
		conditions.MarkUnknown(o, v1alpha1.RolledBackCondition, v1alpha1.PullRequestOpenedReason, "proposed")
		conditions.MarkTrue(o, v1alpha1.RollbackPendingCondition, v1alpha1.PullRequestOpenedReason, "proposed")
	}
	tests := []struct {
		name                string
		obj                 *v1alpha1.ImmutableRelease
		revision            string
		out                 git.ProposalOutcome
		want                Effect
		rolledBack, pending *cond
		revertCommit        string
		quarantine          []string
	}{
		{
			name:     "merged: the merged commit is the revert, and the digests are quarantined",
			obj:      release(proposed),
			revision: applied,
			out:      git.ProposalOutcome{Merged: merge},
			want: Effect{Event: &Event{Type: corev1.EventTypeNormal, Reason: v1alpha1.PullRequestMergedReason,
				Message: "Pull request " + prURL + " is merged: applying " + applied + ", which reverts " + failedRev}},
			rolledBack:   &cond{metav1.ConditionTrue, v1alpha1.PullRequestMergedReason, "revision " + failedRev + " reverted by commit " + merge + ", merged through pull request " + prURL},
			pending:      &cond{metav1.ConditionFalse, v1alpha1.PullRequestMergedReason, "pull request " + prURL + " is merged; applying " + applied},
			revertCommit: merge,
			quarantine:   []string{web + " app " + dead + " " + failedRev},
		},
		{
			name:     "fixed forward without the revert",
			obj:      release(proposed),
			revision: applied,
			out:      git.ProposalOutcome{PathChanged: true},
			want: Effect{Event: &Event{Type: corev1.EventTypeNormal, Reason: v1alpha1.FixedForwardReason,
				Message: "Revision " + applied + " changed the path without merging pull request " + prURL + ": applying it"}},
			rolledBack: &cond{metav1.ConditionFalse, v1alpha1.FixedForwardReason, "not reverting " + failedRev + ": newer commits changed the path; applying them instead"},
			pending: &cond{metav1.ConditionFalse, v1alpha1.FixedForwardReason,
				applied + " changed the path without the revert; applying it. Close pull request " + prURL + " if it is no longer wanted"},
			revertCommit: revertHash,
		},
		{
			name:         "commits elsewhere leave the pull request standing",
			obj:          release(proposed),
			revision:     applied,
			rolledBack:   &cond{metav1.ConditionUnknown, v1alpha1.PullRequestOpenedReason, "proposed"},
			pending:      &cond{metav1.ConditionTrue, v1alpha1.PullRequestOpenedReason, "proposed"},
			revertCommit: revertHash,
		},
		{
			name:         "the failed revision itself settles nothing",
			obj:          release(proposed),
			revision:     failedRev,
			out:          git.ProposalOutcome{Merged: merge},
			rolledBack:   &cond{metav1.ConditionUnknown, v1alpha1.PullRequestOpenedReason, "proposed"},
			pending:      &cond{metav1.ConditionTrue, v1alpha1.PullRequestOpenedReason, "proposed"},
			revertCommit: revertHash,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(SettleNeeded(tt.obj, tt.revision)).To(Equal(tt.revision != failedRev))
			g.Expect(Settle(tt.obj, tt.revision, tt.out, []v1alpha1.WorkloadImage{image(web, "app", good)})).To(Equal(tt.want))
			g.Expect(condOf(tt.obj, v1alpha1.RolledBackCondition)).To(Equal(tt.rolledBack))
			g.Expect(condOf(tt.obj, v1alpha1.RollbackPendingCondition)).To(Equal(tt.pending))
			g.Expect(tt.obj.Status.LastRollback.RevertCommit).To(Equal(tt.revertCommit))
			g.Expect(digests(tt.obj)).To(Equal(tt.quarantine))
		})
	}
	g := NewWithT(t)
	g.Expect(SettleNeeded(release(), applied)).To(BeFalse(), "no pull request pending")
}
