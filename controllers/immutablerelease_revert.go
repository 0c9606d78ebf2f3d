package controllers

import (
	"context"
	"fmt"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/fluxcd/pkg/runtime/conditions"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
)

// Keys of the signing key Secret.
const (
	signingKeyKey        = "git.asc"
	signingPassphraseKey = "passphrase"
)

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

// revertConflict is a revert that could not be made, and the branch head it was tried on.
type revertConflict struct {
	failedRevision, head string
}

// conflictUnchanged says whether the revert of failedRev already conflicted on the branch
// head as it still is: trying again would give the same conflict, so it waits for Git to
// change. A head that cannot be listed counts as changed.
func (r *ImmutableReleaseReconciler) conflictUnchanged(ctx context.Context, obj *v1alpha1.ImmutableRelease, failedRev string, auth *git.Auth) bool {
	v, ok := r.conflicts.Load(client.ObjectKeyFromObject(obj))
	if !ok || v.(revertConflict).failedRevision != failedRev {
		return false
	}
	ctx, cancel := r.gitContext(ctx, obj)
	defer cancel()
	head, err := r.Git.Resolve(ctx, obj.Spec.Git.URL, gitReference(obj), auth, false)
	return err == nil && head == v.(revertConflict).head
}

// revertConflict records a revert that later commits make impossible without guessing: the
// condition and a Warning event name the commits and files, and what a person can do.
func (r *ImmutableReleaseReconciler) revertConflict(obj *v1alpha1.ImmutableRelease, failedRev string, err *git.ConflictError) {
	r.conflicts.Store(client.ObjectKeyFromObject(obj), revertConflict{failedRevision: failedRev, head: err.Head})
	var commits []string
	for _, c := range err.Commits() {
		commits = append(commits, short(c))
	}
	msg := fmt.Sprintf("not reverting %s: %s; nothing was pushed. Push a fix, or revert by hand (git revert %s on %s, resolve the conflicts under %s, push); the operator tries again when the branch changes",
		failedRev, err, strings.Join(commits, " "), obj.Spec.Git.Ref.Branch, orRoot(obj.Spec.Path))
	conditions.MarkFalse(obj, v1alpha1.RolledBackCondition, v1alpha1.RevertConflictReason, "%s", msg)
	r.event(obj, corev1.EventTypeWarning, v1alpha1.RevertConflictReason, "Rollback", msg)
}

func orRoot(p string) string {
	if p == "" || p == "." || p == "./" {
		return "the repository root"
	}
	return p
}
