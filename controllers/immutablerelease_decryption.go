package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/decrypt"
)

// decryptor reads the age keys of spec.decryption from the key Secret in the release's own
// namespace, for this build only: the keys and what they decrypt live in this reconcile's
// scope and in the release's own memory, never in a cache another release reads. Without
// spec.decryption it is nil, and an encrypted file refuses the revision. A missing Secret is
// retried, as the Git credentials Secret is; a Secret without a usable key waits for a fix.
func (r *ImmutableReleaseReconciler) decryptor(ctx context.Context, obj *v1alpha1.ImmutableRelease) (*decrypt.Decryptor, error) {
	spec := obj.Spec.Decryption
	if spec == nil {
		return nil, nil
	}
	if spec.Provider != decrypt.ProviderSOPS {
		return nil, stall(v1alpha1.DecryptionFailedReason, fmt.Errorf("spec.decryption.provider %q is not supported: use sops; nothing was applied", spec.Provider))
	}
	if spec.SecretRef == nil || spec.SecretRef.Name == "" {
		return nil, stall(v1alpha1.DecryptionFailedReason, fmt.Errorf("spec.decryption.secretRef names no Secret: name a Secret in namespace %q holding the age key under an entry ending in %s; nothing was applied", obj.Namespace, decrypt.AgeKeySuffix))
	}
	name := spec.SecretRef.Name
	secret := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: name}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, retry(v1alpha1.DecryptionFailedReason, fmt.Errorf("secret %q not found in namespace %q: create it with the age private key under an entry ending in %s (spec.decryption.secretRef); nothing was applied", name, obj.Namespace, decrypt.AgeKeySuffix))
		}
		return nil, retry(v1alpha1.DecryptionFailedReason, fmt.Errorf("reading secret %q: %w", name, err))
	}
	d, err := decrypt.FromSecret(name, secret.Data)
	if err != nil {
		return nil, stall(v1alpha1.DecryptionFailedReason, fmt.Errorf("%w; nothing was applied", err))
	}
	return d, nil
}
