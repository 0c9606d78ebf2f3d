package notify

import (
	eventv1 "github.com/fluxcd/pkg/apis/event/v1"

	"github.com/immutable-release/operator/api/v1alpha1"
)

// Keys of the payload's metadata besides Flux's own (eventv1.MetaRevisionKey,
// eventv1.MetaCommitStatusKey). A notification-controller strips the API group prefix and
// passes them to its providers; the generic webhooks forward them as they are.
const (
	CommitSubjectKey = "commitSubject"
	CommitAuthorKey  = "commitAuthor"
	RevertCommitKey  = "revertCommit"
	PullRequestKey   = "pullRequest"
)

// Metadata is what the payload of an event about obj says about the revision it concerns,
// under keys prefixed with the release's API group, which is where a notification-controller
// reads them: the revision as <ref>@sha1:<commit> (its commit status providers take the
// commit from it), the commit's subject and author, and for a failed revision the revert
// commit or pull request. The event that a revision became healthy is marked a commit status
// update, as Flux's kustomize-controller marks its own: a notification-controller's commit
// status providers post success for it, and failure for every error event.
func Metadata(obj *v1alpha1.ImmutableRelease, action, reason string) map[string]string {
	revision := obj.Status.LastAttemptedRevision
	switch {
	case action == "Rollback" && obj.Status.LastRollback != nil:
		revision = obj.Status.LastRollback.FailedRevision
	case action != "Reconcile" || revision == "":
		revision = obj.Status.LastAppliedRevision
	}
	if revision == "" {
		return nil
	}
	group := v1alpha1.GroupVersion.Group + "/"
	m := map[string]string{group + eventv1.MetaRevisionKey: revision}
	for _, h := range obj.Status.History {
		if h.Revision != revision {
			continue
		}
		if h.Subject != "" {
			m[group+CommitSubjectKey] = h.Subject
		}
		if h.Author != "" {
			m[group+CommitAuthorKey] = h.Author
		}
		break
	}
	if lr := obj.Status.LastRollback; lr != nil && lr.FailedRevision == revision {
		if lr.RevertCommit != "" {
			m[group+RevertCommitKey] = lr.RevertCommit
		}
		if lr.PullRequestURL != "" {
			m[group+PullRequestKey] = lr.PullRequestURL
		}
	}
	if action == "HealthCheck" && reason == v1alpha1.HealthySucceededReason {
		m[group+eventv1.MetaCommitStatusKey] = eventv1.MetaCommitStatusUpdateValue
	}
	return m
}
