package controllers

import (
	"context"
	"fmt"

	"github.com/ProtonMail/go-crypto/openpgp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/rollback"
)

// Default author of revert commits.
const (
	defaultAuthorName  = "ImmutableRelease"
	defaultAuthorEmail = "immutable-release@noreply.local"
)

// Keys of the signing key Secret.
const (
	signingKeyKey        = "git.asc"
	signingPassphraseKey = "passphrase"
)

// carryOutRollback rolls back the applied revision in Git, as rollback.Decide says, and
// has the next reconcile apply what Git then says: the cluster is never rolled back
// behind Git's back. The decision and what is recorded of it are rollback's; this reads
// the branch head when the decision needs it, makes the revert, and emits the event.
func (r *ImmutableReleaseReconciler) carryOutRollback(ctx context.Context, obj *v1alpha1.ImmutableRelease, req rollback.Request) error {
	if branch := rollback.HeadNeeded(obj, req); branch != "" {
		head, err := r.branchHead(ctx, obj, branch)
		if err != nil {
			return err
		}
		req.Head = head
	}
	plan := rollback.Decide(obj, req)
	var res rollback.Result
	if plan.Action == rollback.Revert {
		var err error
		if res, err = r.revert(ctx, obj, plan); err != nil {
			return err
		}
	}
	return r.carryOut(obj, rollback.Record(obj, plan, res))
}

// manualRollback acts on the rollback-to annotation, through the same revert as an
// automatic rollback: the commits after the named revision are reverted in Git.
func (r *ImmutableReleaseReconciler) manualRollback(ctx context.Context, obj *v1alpha1.ImmutableRelease) error {
	value := obj.GetAnnotations()[v1alpha1.RollbackToAnnotation]
	if value == "" {
		return nil
	}
	return r.carryOutRollback(ctx, obj, rollback.Request{RollbackTo: value})
}

// carryOut does what rollback asks after it recorded an outcome, and returns the failure
// to retry with, if any.
func (r *ImmutableReleaseReconciler) carryOut(obj *v1alpha1.ImmutableRelease, eff rollback.Effect) error {
	r.emit(obj, eff)
	if eff.Err != nil {
		return retry(eff.Reason, eff.Err)
	}
	return nil
}

// emit emits the effect's event and has Git listed again when it asks.
func (r *ImmutableReleaseReconciler) emit(obj *v1alpha1.ImmutableRelease, eff rollback.Effect) {
	if e := eff.Event; e != nil {
		r.event(obj, e.Type, e.Reason, "Rollback", e.Message)
	}
	if eff.FreshGitCheck {
		r.requestFreshGitCheck(obj)
	}
}

// requestFreshGitCheck makes the next reconcile list the remote fresh, at once.
func (r *ImmutableReleaseReconciler) requestFreshGitCheck(obj *v1alpha1.ImmutableRelease) {
	r.memories.peek(client.ObjectKeyFromObject(obj)).updateSource((*git.Source).Refresh)
}

// branchHead is the head of branch, where the revert is made, as last listed: "" when it
// cannot be listed, which counts as moved.
func (r *ImmutableReleaseReconciler) branchHead(ctx context.Context, obj *v1alpha1.ImmutableRelease, branch string) (string, error) {
	auth, err := r.gitAuth(ctx, obj)
	if err != nil {
		return "", err
	}
	ctx, cancel := r.gitContext(ctx, obj)
	defer cancel()
	head, err := r.Git.Resolve(ctx, obj.Spec.Git.URL, git.Reference{Branch: branch}, auth, false)
	if err != nil {
		return "", nil
	}
	return head, nil
}

// revert makes the revert of plan: pushed to the branch, or in PullRequest mode pushed to
// a branch of its own and proposed (proposeRevert). It is idempotent: a revert already on
// the branch for this revision is found, not redone. The error is one that stops before
// anything is tried (the Git credentials); every other failure is in the Result.
func (r *ImmutableReleaseReconciler) revert(ctx context.Context, obj *v1alpha1.ImmutableRelease, plan rollback.Plan) (rollback.Result, error) {
	auth, err := r.gitAuth(ctx, obj)
	if err != nil {
		return rollback.Result{}, err
	}
	key, err := r.signingKey(ctx, obj)
	if err != nil {
		return rollback.Result{Err: &rollback.Failure{Reason: v1alpha1.InvalidSigningKeyReason, Err: err}}, nil
	}
	author := revertAuthor(obj)
	req := git.RevertRequest{
		URL: obj.Spec.Git.URL, Branch: plan.Branch, Auth: auth, Path: obj.Spec.Path,
		Healthy: plan.Target, Failed: git.RevisionHash(plan.Failed),
		Release: obj.Namespace + "/" + obj.Name, Reason: plan.Reason,
		AuthorName: author.Name, AuthorEmail: author.Email, SignKey: key,
	}
	if plan.PullRequest {
		return r.proposeRevert(ctx, obj, req), nil
	}
	gitCtx, cancel := r.gitContext(ctx, obj)
	defer cancel()
	res, err := r.Git.Revert(gitCtx, req)
	if err != nil {
		return rollback.Result{Err: err}, nil
	}
	return rollback.Result{Commit: res.Commit, Reverted: hashes(res.Reverted), Existing: res.Existing}, nil
}

func hashes(commits []git.Commit) []string {
	var out []string
	for _, c := range commits {
		out = append(out, c.Hash)
	}
	return out
}

// revertAuthor is spec.rollback.author or the default author.
func revertAuthor(obj *v1alpha1.ImmutableRelease) v1alpha1.CommitAuthor {
	if obj.Spec.Rollback != nil && obj.Spec.Rollback.Author != nil {
		return *obj.Spec.Rollback.Author
	}
	return v1alpha1.CommitAuthor{Name: defaultAuthorName, Email: defaultAuthorEmail}
}

// signingKey reads spec.rollback.signingKeySecretRef, or returns nil when it is not set.
func (r *ImmutableReleaseReconciler) signingKey(ctx context.Context, obj *v1alpha1.ImmutableRelease) (*openpgp.Entity, error) {
	if obj.Spec.Rollback == nil || obj.Spec.Rollback.SigningKeySecretRef == nil {
		return nil, nil
	}
	name := obj.Spec.Rollback.SigningKeySecretRef.Name
	secret := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: name}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("signing key secret %q not found in namespace %q: create it with the armored private key under %s (gpg --armor --export-secret-keys) and, if it has one, its passphrase under %s",
				name, obj.Namespace, signingKeyKey, signingPassphraseKey)
		}
		return nil, fmt.Errorf("reading signing key secret %q: %w", name, err)
	}
	armored, ok := secret.Data[signingKeyKey]
	if !ok {
		return nil, fmt.Errorf("signing key secret %q has no key %s: put the armored private key there", name, signingKeyKey)
	}
	key, err := git.SigningKey(armored, secret.Data[signingPassphraseKey])
	if err != nil {
		return nil, fmt.Errorf("signing key secret %q: %w", name, err)
	}
	return key, nil
}

// checkQuarantine refuses objects that bring back a quarantined digest for the same container.
func checkQuarantine(obj *v1alpha1.ImmutableRelease, revision string, images []v1alpha1.WorkloadImage) error {
	if err := rollback.CheckQuarantine(obj, revision, images); err != nil {
		return stall(v1alpha1.QuarantinedDigestReason, err)
	}
	return nil
}

// liftQuarantine acts on the unquarantine annotation, once per value, and has Git checked
// again so that a refused revision is applied at once.
func (r *ImmutableReleaseReconciler) liftQuarantine(obj *v1alpha1.ImmutableRelease) {
	if digest := rollback.Unquarantine(obj); digest != "" {
		r.event(obj, corev1.EventTypeNormal, "Unquarantined", "Unquarantine", "Lifted the quarantine of "+digest)
		r.requestFreshGitCheck(obj)
	}
}
