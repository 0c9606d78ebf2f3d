package controllers

import (
	"context"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/gitprovider"
)

// commitStatusTimeout bounds the commit status posts of one reconcile, the token's read
// included: a forge that does not answer costs its release this much, at most.
const commitStatusTimeout = 10 * time.Second

// commitStatusRetryAfter is how long after a failed post the forge is left alone, unless a
// person asks (a reconcile request, a spec change): a forge that is down does not cost
// every health poll of a rollout its timeout. The release is reconciled again by then.
const commitStatusRetryAfter = time.Minute

// postCommitStatuses posts on the Git host (spec.commitStatus) the state of the applied
// revision's rollout (pending, success, failure), and the verdict of an earlier revision
// whose pending status was posted but whose verdict was not (a post that failed before the
// revert of a failed revision was applied). What was posted is recorded in the revision's
// history entry, so each state is posted once, whatever this process remembers. A post
// that fails is logged and tried again later: it never fails the release. retry is when,
// zero when nothing is left to post.
func (r *ImmutableReleaseReconciler) postCommitStatuses(ctx context.Context, s *scope) (retry time.Duration) {
	obj := s.obj
	spec := obj.Spec.CommitStatus
	if spec == nil {
		return 0
	}
	var due []*v1alpha1.ReleaseRecord
	for i := range obj.Status.History {
		h := &obj.Status.History[i]
		state := commitState(h)
		latest := i == 0 && h.Revision == obj.Status.LastAppliedRevision
		if h.CommitStatus != state && (latest || (h.CommitStatus != "" && state != v1alpha1.CommitStatePending)) {
			due = append(due, h)
		}
	}
	if len(due) == 0 {
		return 0
	}
	if wait := s.mem.commitStatusWait(time.Now()); wait > 0 && !s.asked {
		return wait
	}
	ctx, cancel := context.WithTimeout(ctx, commitStatusTimeout)
	defer cancel()
	logger := log.FromContext(ctx)
	c, err := r.forgeClient(ctx, obj, "spec.commitStatus", spec.Provider, spec.SecretRef.Name, spec.APIURL)
	if err != nil {
		s.mem.commitStatusFailed(time.Now().Add(commitStatusRetryAfter))
		logger.Error(err, "Could not post commit statuses; trying again later", "in", commitStatusRetryAfter.String())
		return commitStatusRetryAfter
	}
	for _, h := range due {
		state := commitState(h)
		status := gitprovider.CommitStatus{State: string(state), Context: commitStatusContext(obj), Description: commitStatusDescription(h, state),
			TargetURL: r.commitStatusTarget(obj, h.Revision, state)}
		if err := c.SetCommitStatus(ctx, git.RevisionHash(h.Revision), status); err != nil {
			s.mem.commitStatusFailed(time.Now().Add(commitStatusRetryAfter))
			logger.Error(err, "Could not post a commit status; trying again later", "revision", h.Revision, "state", state, "in", commitStatusRetryAfter.String())
			return commitStatusRetryAfter
		}
		h.CommitStatus = state
		logger.V(1).Info("Posted a commit status", "revision", h.Revision, "state", state)
	}
	return 0
}

// commitState is the commit status of a revision as its history entry records its rollout.
func commitState(h *v1alpha1.ReleaseRecord) v1alpha1.CommitState {
	switch h.Result {
	case v1alpha1.ReleaseHealthy:
		return v1alpha1.CommitStateSuccess
	case v1alpha1.ReleaseFailed:
		return v1alpha1.CommitStateFailure
	}
	return v1alpha1.CommitStatePending
}

// commitStatusContext names the release's statuses: one per release, as a commit may be
// applied by many.
func commitStatusContext(obj *v1alpha1.ImmutableRelease) string {
	return "immutable-release/" + obj.Namespace + "/" + obj.Name
}

func commitStatusDescription(h *v1alpha1.ReleaseRecord, state v1alpha1.CommitState) string {
	switch state {
	case v1alpha1.CommitStateSuccess:
		return "Applied and healthy"
	case v1alpha1.CommitStateFailure:
		return h.Message
	}
	return "Rolling out"
}

// commitStatusTarget is where a failure links to: the pull request that proposes its revert,
// or the revert commit.
func (r *ImmutableReleaseReconciler) commitStatusTarget(obj *v1alpha1.ImmutableRelease, revision string, state v1alpha1.CommitState) string {
	lr := obj.Status.LastRollback
	if state != v1alpha1.CommitStateFailure || lr == nil || lr.FailedRevision != revision {
		return ""
	}
	if lr.PullRequestURL != "" {
		return lr.PullRequestURL
	}
	return gitprovider.CommitURL(string(obj.Spec.CommitStatus.Provider), obj.Spec.Git.URL, lr.RevertCommit)
}
