package cli

import (
	"context"
	"fmt"
	"net/url"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/kubeconfig"
)

// targetClient is a client of the cluster the release's objects live in: c for the local
// one; for a release with spec.kubeConfig, one built from its kubeconfig Secret (read with
// your kubeconfig, and checked as the operator checks it: no exec plugins, no insecure
// TLS, no files), acting as that kubeconfig's user.
func targetClient(ctx context.Context, c client.Client, rel *v1alpha1.ImmutableRelease) (client.Client, error) {
	if rel.Spec.KubeConfig == nil {
		return c, nil
	}
	ref := rel.Spec.KubeConfig.SecretRef
	secret := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: rel.Namespace, Name: ref.Name}, secret); err != nil {
		return nil, fmt.Errorf("reading the kubeconfig Secret %q of spec.kubeConfig: %w", ref.Name, err)
	}
	cfg, err := kubeconfig.FromSecret(secret.Data, ref.Key, kubeconfig.Options{UserAgent: "kubectl-release"})
	if err != nil {
		return nil, fmt.Errorf("the Secret %q of spec.kubeConfig: %w", ref.Name, err)
	}
	return client.New(cfg.REST, client.Options{Scheme: c.Scheme()})
}

// clusterCell names the cluster of a release for `get`: the host of its remote API server,
// or "local".
func clusterCell(rel *v1alpha1.ImmutableRelease) string {
	if rel.Status.Cluster == "" {
		if rel.Spec.KubeConfig != nil {
			return "remote (not reached yet)"
		}
		return "local"
	}
	if u, err := url.Parse(rel.Status.Cluster); err == nil && u.Host != "" {
		return u.Host
	}
	return rel.Status.Cluster
}

// anyRemote says whether a release of items targets a remote cluster.
func anyRemote(items []v1alpha1.ImmutableRelease) bool {
	for i := range items {
		if items[i].Spec.KubeConfig != nil || items[i].Status.Cluster != "" {
			return true
		}
	}
	return false
}
