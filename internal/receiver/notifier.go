package receiver

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
)

// Matches says whether a push moved what the release follows: the same repository, and the
// branch or tag of its ref. A release pinned to a commit never moves.
func Matches(rel *v1alpha1.ImmutableRelease, push Push) bool {
	ref := rel.Spec.Git.Ref
	switch {
	case ref.Branch != "" && push.Ref == "refs/heads/"+ref.Branch:
	case ref.Tag != "" && push.Ref == "refs/tags/"+ref.Tag:
	default:
		return false
	}
	for _, u := range push.URLs {
		if SameRepository(u, rel.Spec.Git.URL) {
			return true
		}
	}
	return false
}

// SecretToken reads the key token of a Secret at every call, so that a rotated secret
// applies at once.
func SecretToken(reader client.Reader, key client.ObjectKey) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		secret := &corev1.Secret{}
		if err := reader.Get(ctx, key, secret); err != nil {
			return nil, fmt.Errorf("reading the webhook secret %s: %w", key, err)
		}
		if len(secret.Data["token"]) == 0 {
			return nil, fmt.Errorf("the webhook secret %s has no key token", key)
		}
		return secret.Data["token"], nil
	}
}
