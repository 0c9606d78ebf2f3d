// Package v1alpha1 contains the API of the ImmutableRelease operator:
// the release.immutable.dev/v1alpha1 ImmutableRelease kind.
// +kubebuilder:object:generate=true
// +groupName=release.immutable.dev
package v1alpha1
