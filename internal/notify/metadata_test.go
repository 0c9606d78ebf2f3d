package notify

import (
	"testing"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/api/v1alpha1"
)

func TestMetadata(t *testing.T) {
	const (
		good   = "main@sha1:1111111111111111111111111111111111111111"
		bad    = "main@sha1:2222222222222222222222222222222222222222"
		newer  = "main@sha1:3333333333333333333333333333333333333333"
		revert = "4444444444444444444444444444444444444444"
	)
	release := func(mutate func(*v1alpha1.ImmutableReleaseStatus)) *v1alpha1.ImmutableRelease {
		obj := &v1alpha1.ImmutableRelease{Status: v1alpha1.ImmutableReleaseStatus{
			LastAttemptedRevision: bad, LastAppliedRevision: bad,
			History: []v1alpha1.ReleaseRecord{
				{Revision: bad, Subject: "Release a broken build", Author: "Dev <dev@example.com>"},
				{Revision: good, Subject: "Release a good build"},
			},
		}}
		if mutate != nil {
			mutate(&obj.Status)
		}
		return obj
	}
	cases := []struct {
		name           string
		obj            *v1alpha1.ImmutableRelease
		action, reason string
		want           map[string]string
	}{
		{name: "applied", obj: release(nil), action: "Apply", reason: "Applied", want: map[string]string{
			"release.immutable.dev/revision": bad, "release.immutable.dev/commitSubject": "Release a broken build",
			"release.immutable.dev/commitAuthor": "Dev <dev@example.com>"}},
		{name: "healthy is a commit status update", obj: release(nil), action: "HealthCheck", reason: v1alpha1.HealthySucceededReason, want: map[string]string{
			"release.immutable.dev/revision": bad, "release.immutable.dev/commitSubject": "Release a broken build",
			"release.immutable.dev/commitAuthor": "Dev <dev@example.com>", "release.immutable.dev/commit_status": "update"}},
		{name: "a failure before apply names the attempted revision", obj: release(func(s *v1alpha1.ImmutableReleaseStatus) { s.LastAttemptedRevision = newer }),
			action: "Reconcile", reason: v1alpha1.InvalidManifestReason, want: map[string]string{"release.immutable.dev/revision": newer}},
		{name: "drift names the applied revision", obj: release(func(s *v1alpha1.ImmutableReleaseStatus) { s.LastAttemptedRevision = newer }),
			action: "CorrectDrift", reason: v1alpha1.DriftCorrectedReason, want: map[string]string{
				"release.immutable.dev/revision": bad, "release.immutable.dev/commitSubject": "Release a broken build",
				"release.immutable.dev/commitAuthor": "Dev <dev@example.com>"}},
		{name: "a revert names the failed revision and its revert", obj: release(func(s *v1alpha1.ImmutableReleaseStatus) {
			s.LastRollback = &v1alpha1.Rollback{FailedRevision: good, RevertCommit: revert, PullRequestURL: "https://git.example.com/a/b/pulls/1"}
		}), action: "Rollback", reason: "RolledBack", want: map[string]string{
			"release.immutable.dev/revision": good, "release.immutable.dev/commitSubject": "Release a good build",
			"release.immutable.dev/revertCommit": revert, "release.immutable.dev/pullRequest": "https://git.example.com/a/b/pulls/1"}},
		{name: "nothing fetched yet", obj: &v1alpha1.ImmutableRelease{}, action: "Reconcile", reason: "GitOperationFailed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(Metadata(tc.obj, tc.action, tc.reason)).To(Equal(tc.want))
		})
	}
}
