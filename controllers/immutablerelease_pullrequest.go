package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/gitprovider"
	"github.com/immutable-release/operator/internal/rollback"
)

// pullRequestTokenKey is the key of the API token in spec.rollback.pullRequest.secretRef.
const pullRequestTokenKey = "token"

// proposeRevert is the PullRequest mode of revert: the same revert commit, signed the
// same way, pushed to a branch of its own, and a pull request that asks to merge it. The
// cluster stays on what the branch says until the branch changes. Every step finds what an
// earlier, interrupted run did (the branch, then the open pull request) instead of doing
// it twice.
func (r *ImmutableReleaseReconciler) proposeRevert(ctx context.Context, obj *v1alpha1.ImmutableRelease, req git.RevertRequest) rollback.Result {
	spec := obj.Spec.Rollback.PullRequest
	if spec == nil {
		return proposalFailed(errors.New("spec.rollback.pullRequest is required in PullRequest mode: set its provider and secretRef"))
	}
	// Everything that can be checked is checked before anything is pushed.
	provider, err := r.pullRequestClient(ctx, obj, spec)
	if err != nil {
		return proposalFailed(err)
	}
	if err := provider.CheckAccess(ctx); err != nil {
		return proposalFailed(fmt.Errorf("the %s API refused the token of secret %q: %w", spec.Provider, spec.SecretRef.Name, err))
	}

	gitCtx, cancel := r.gitContext(ctx, obj)
	defer cancel()
	res, err := r.Git.ProposeRevert(gitCtx, req)
	if err != nil {
		return rollback.Result{Err: err}
	}
	out := rollback.Result{Commit: res.Commit, Reverted: hashes(res.Reverted), Existing: res.Existing, ProposalBranch: res.Branch}
	if res.Branch == "" {
		// The revert is already on the base branch: a pull request was merged meanwhile.
		return out
	}
	title, body := pullRequestText(obj, res.Message, req.Reason, req.Branch)
	pr, existing, err := gitprovider.Open(ctx, provider, gitprovider.NewPullRequest{Head: res.Branch, Base: req.Branch, Title: title, Body: body})
	if err != nil {
		return proposalFailed(fmt.Errorf("opening a pull request from branch %s into %s: %w", res.Branch, req.Branch, err))
	}
	out.PullRequestURL, out.PullRequestFound = pr.URL, existing
	return out
}

// proposalFailed is a revert that could not be proposed; it is retried with backoff.
func proposalFailed(err error) rollback.Result {
	return rollback.Result{Err: &rollback.Failure{Reason: v1alpha1.PullRequestFailedReason, Err: err}}
}

// pullRequestClient reads the API token and builds the provider's client.
func (r *ImmutableReleaseReconciler) pullRequestClient(ctx context.Context, obj *v1alpha1.ImmutableRelease, spec *v1alpha1.PullRequestSpec) (gitprovider.Client, error) {
	return r.forgeClient(ctx, obj, "spec.rollback.pullRequest", spec.Provider, spec.SecretRef.Name, spec.APIURL)
}

// forgeClient reads the API token of Secret name, under pullRequestTokenKey, and builds the
// provider's client; field names the spec field that configures it.
func (r *ImmutableReleaseReconciler) forgeClient(ctx context.Context, obj *v1alpha1.ImmutableRelease, field string, provider v1alpha1.GitProvider, name, apiURL string) (gitprovider.Client, error) {
	secret := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: name}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("secret %q not found in namespace %q: create it with the %s API token under the key %q", name, obj.Namespace, provider, pullRequestTokenKey)
		}
		return nil, fmt.Errorf("reading secret %q: %w", name, err)
	}
	token := strings.TrimSpace(string(secret.Data[pullRequestTokenKey]))
	if token == "" {
		return nil, fmt.Errorf("secret %q has no key %q: put the %s API token there", name, pullRequestTokenKey, provider)
	}
	c, err := gitprovider.New(gitprovider.Options{Provider: string(provider), RepoURL: obj.Spec.Git.URL, APIURL: apiURL, Token: token})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
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
// revert: it reads from Git what became of the proposal, and rollback.Settle records it.
func (r *ImmutableReleaseReconciler) settleProposal(ctx context.Context, s *scope, images []v1alpha1.WorkloadImage) {
	obj := s.obj
	if !rollback.SettleNeeded(obj, s.revision) {
		return
	}
	lr := obj.Status.LastRollback
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
	r.emit(obj, rollback.Settle(obj, s.revision, out, images))
}
