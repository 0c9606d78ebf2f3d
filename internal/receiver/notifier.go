package receiver

import (
	"slices"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/immutable-release/operator/api/v1alpha1"
)

// Selects says whether target lets a push reconcile rel: the same namespace, one of the
// names if any are given, labels that match the selector if one is.
func (t Target) Selects(rel *v1alpha1.ImmutableRelease) bool {
	if rel.Namespace != t.Namespace || t.Namespace == "" {
		return false
	}
	if len(t.Names) > 0 && !slices.Contains(t.Names, rel.Name) {
		return false
	}
	return t.Selector == nil || t.Selector.Matches(labels.Set(rel.Labels))
}

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
