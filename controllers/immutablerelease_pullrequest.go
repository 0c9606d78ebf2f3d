package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/fluxcd/pkg/runtime/conditions"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/gitprovider"
)

// pullRequestTokenKey is the key of the API token in spec.rollback.pullRequest.secretRef.
const pullRequestTokenKey = "token"

// proposeRevert is the PullRequest mode of revert: the same revert commit, pushed to a
// branch of its own, and a pull request that asks to merge it. The cluster stays on what
// the branch says until the branch changes. Every step finds what an earlier, interrupted
// run did (the branch, then the open pull request) instead of doing it twice.
func (r *ImmutableReleaseReconciler) proposeRevert(ctx context.Context, obj *v1alpha1.ImmutableRelease, failedRev, target, reason string, manual bool) error {
	spec := obj.Spec.Rollback.PullRequest
	if spec == nil {
		return proposalFailed(obj, errors.New("spec.rollback.pullRequest is required in PullRequest mode: set its provider and secretRef"))
	}
	// Everything that can be checked is checked before anything is pushed.
	auth, err := r.gitAuth(ctx, obj)
	if err != nil {
		return err
	}
	provider, err := r.pullRequestClient(ctx, obj, spec)
	if err != nil {
		return proposalFailed(obj, err)
	}
	if err := provider.CheckAccess(ctx); err != nil {
		return proposalFailed(obj, fmt.Errorf("the %s API refused the token of secret %q: %w", spec.Provider, spec.SecretRef.Name, err))
	}

	author := revertAuthor(obj)
	base := obj.GetPullRequestBaseBranch()
	gitCtx, cancel := r.gitContext(ctx, obj)
	defer cancel()
	res, err := r.Git.ProposeRevert(gitCtx, git.RevertRequest{
		URL: obj.Spec.Git.URL, Branch: base, Auth: auth, Path: obj.Spec.Path,
		Healthy: target, Failed: git.RevisionHash(failedRev),
		Release: obj.Namespace + "/" + obj.Name, Reason: reason,
		AuthorName: author.Name, AuthorEmail: author.Email,
	})
	switch {
	case errors.Is(err, git.ErrFixedForward):
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.FixedForwardReason,
			"not reverting %s: newer commits changed the path; applying them instead", failedRev)
		r.requestFreshGitCheck(obj)
		return nil
	case err != nil:
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.RevertFailedReason, "reverting %s: %s", failedRev, err)
		return retry(v1alpha1.RevertFailedReason, fmt.Errorf("reverting revision %s in Git: %w", failedRev, err))
	case res.Branch == "":
		// The revert is already on the base branch: a pull request was merged meanwhile.
		recordRollback(obj, failedRev, res.Commit, nil, reason, !manual)
		r.requestFreshGitCheck(obj)
		return nil
	}

	title, body := pullRequestText(obj, res.Message, reason, base)
	pr, existing, err := gitprovider.Open(ctx, provider, gitprovider.NewPullRequest{Head: res.Branch, Base: base, Title: title, Body: body})
	if err != nil {
		return proposalFailed(obj, fmt.Errorf("opening a pull request from branch %s into %s: %w", res.Branch, base, err))
	}
	var reverted []string
	for _, c := range res.Reverted {
		reverted = append(reverted, c.Hash)
	}
	lr := newRollback(obj, failedRev, res.Commit, reverted, reason, !manual)
	lr.PullRequestURL = pr.URL
	obj.Status.LastRollback = lr
	conditions.MarkUnknown(obj, v1alpha1.RolledBackCondition, v1alpha1.PullRequestOpenedReason,
		"the revert of %s is proposed in pull request %s and not merged yet", failedRev, pr.URL)
	conditions.MarkTrue(obj, v1alpha1.RollbackPendingCondition, v1alpha1.PullRequestOpenedReason,
		"pull request %s proposes commit %s on branch %s, reverting %s; merge it to roll back. Until %s changes, the cluster stays on what it says",
		pr.URL, short(res.Commit), res.Branch, failedRev, obj.Spec.Git.Ref.Branch)
	if existing {
		r.event(obj, corev1.EventTypeNormal, "RollbackProposed", "Rollback",
			fmt.Sprintf("Found pull request %s proposing the revert of %s (commit %s on branch %s)", pr.URL, failedRev, res.Commit, res.Branch))
	} else {
		r.event(obj, corev1.EventTypeWarning, "RollbackProposed", "Rollback",
			fmt.Sprintf("Opened pull request %s to revert %s (commit %s on branch %s): %s", pr.URL, failedRev, res.Commit, res.Branch, reason))
	}
	return nil
}

// proposalFailed reports a revert that could not be proposed; it is retried with backoff.
func proposalFailed(obj *v1alpha1.ImmutableRelease, err error) error {
	conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.PullRequestFailedReason, "%s", err.Error())
	return retry(v1alpha1.PullRequestFailedReason, err)
}

// pullRequestClient reads the API token and builds the provider's client.
func (r *ImmutableReleaseReconciler) pullRequestClient(ctx context.Context, obj *v1alpha1.ImmutableRelease, spec *v1alpha1.PullRequestSpec) (gitprovider.Client, error) {
	name := spec.SecretRef.Name
	secret := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: name}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("secret %q not found in namespace %q: create it with the %s API token under the key %q", name, obj.Namespace, spec.Provider, pullRequestTokenKey)
		}
		return nil, fmt.Errorf("reading secret %q: %w", name, err)
	}
	token := strings.TrimSpace(string(secret.Data[pullRequestTokenKey]))
	if token == "" {
		return nil, fmt.Errorf("secret %q has no key %q: put the %s API token there", name, pullRequestTokenKey, spec.Provider)
	}
	c, err := gitprovider.New(gitprovider.Options{Provider: string(spec.Provider), RepoURL: obj.Spec.Git.URL, APIURL: spec.APIURL, Token: token})
	if err != nil {
		return nil, fmt.Errorf("spec.rollback.pullRequest: %w", err)
	}
	return c, nil
}

// pullRequestText is the title and body of the pull request: the revert commit's subject,
// then why, what merging does, and the commit's own body with its trailers.
func pullRequestText(obj *v1alpha1.ImmutableRelease, message, reason, base string) (title, body string) {
	title, rest, _ := strings.Cut(strings.TrimSpace(message), "\n")
	path := obj.Spec.Path
	if path == "" {
		path = "."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ImmutableRelease %s/%s: %s\n\n", obj.Namespace, obj.Name, reason)
	fmt.Fprintf(&b, "This reverts, under `%s` only, the commits since the last healthy revision. ", path)
	fmt.Fprintf(&b, "Merge it into `%s` to roll back: the operator then applies it. ", base)
	fmt.Fprintf(&b, "Until `%s` changes, the cluster stays on what it says.\n\n", obj.Spec.Git.Ref.Branch)
	b.WriteString(strings.TrimSpace(rest))
	b.WriteString("\n")
	return title, b.String()
}

// settleProposal runs when a new revision is applied while a pull request proposes a
// revert: the revert merged (in any form) ends RollbackPending and counts as the rollback;
// other commits that changed the path (a fix forward) end it too; commits elsewhere leave
// the pull request standing.
func (r *ImmutableReleaseReconciler) settleProposal(ctx context.Context, s *scope, images []v1alpha1.WorkloadImage) {
	obj := s.obj
	lr := obj.Status.LastRollback
	if !conditions.IsTrue(obj, v1alpha1.RollbackPendingCondition) || lr == nil || lr.FailedRevision == s.revision {
		return
	}
	auth := s.auth
	var err error
	if auth == nil {
		auth, err = r.gitAuth(ctx, obj)
	}
	var out git.ProposalOutcome
	if err == nil {
		out, err = r.Git.Outcome(obj.Spec.Git.URL, auth, s.commit.Hash, git.RevisionHash(lr.FailedRevision), lr.RevertCommit, obj.Namespace+"/"+obj.Name, obj.Spec.Path)
	}
	if err != nil {
		// The new head is applied whatever it holds; do not keep claiming a pending rollback.
		log.FromContext(ctx).Error(err, "Reading what became of the proposed revert")
		out.PathChanged = true
	}
	switch {
	case out.Merged != "":
		lr.RevertCommit = out.Merged
		for i := range obj.Status.History {
			if obj.Status.History[i].Revision == lr.FailedRevision {
				obj.Status.History[i].RevertedBy = out.Merged
			}
		}
		quarantineDigests(obj, images)
		conditions.MarkTrue(obj, v1alpha1.RolledBackCondition, v1alpha1.PullRequestMergedReason,
			"revision %s reverted by commit %s, merged through pull request %s", lr.FailedRevision, out.Merged, lr.PullRequestURL)
		conditions.MarkFalse(obj, v1alpha1.RollbackPendingCondition, v1alpha1.PullRequestMergedReason,
			"pull request %s is merged; applying %s", lr.PullRequestURL, s.revision)
		r.event(obj, corev1.EventTypeNormal, v1alpha1.PullRequestMergedReason, "Rollback",
			fmt.Sprintf("Pull request %s is merged: applying %s, which reverts %s", lr.PullRequestURL, s.revision, lr.FailedRevision))
	case out.PathChanged:
		conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.FixedForwardReason,
			"not reverting %s: newer commits changed the path; applying them instead", lr.FailedRevision)
		conditions.MarkFalse(obj, v1alpha1.RollbackPendingCondition, v1alpha1.FixedForwardReason,
			"%s changed the path without the revert; applying it. Close pull request %s if it is no longer wanted", s.revision, lr.PullRequestURL)
		r.event(obj, corev1.EventTypeNormal, v1alpha1.FixedForwardReason, "Rollback",
			fmt.Sprintf("Revision %s changed the path without merging pull request %s: applying it", s.revision, lr.PullRequestURL))
	}
}

// rollbackPending says whether a pull request still proposes the revert of what is
// applied: the branch has not changed the path since the revision that failed.
func rollbackPending(obj *v1alpha1.ImmutableRelease) bool {
	return conditions.IsTrue(obj, v1alpha1.RollbackPendingCondition) && obj.Status.LastRollback != nil && obj.Status.LastRollback.PullRequestURL != ""
}
