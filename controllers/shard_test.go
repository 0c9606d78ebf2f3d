package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/receiver"
	"github.com/immutable-release/operator/internal/shard"
)

// TestPushHandedOver: a push that reaches a replica which does not reconcile the release (a
// standby, or a manager of another shard) is handed over in the release's pushed-at
// annotation, and the replica that reconciles it applies the pushed revision at once, long
// before its interval.
func TestPushHandedOver(t *testing.T) {
	otherShard, err := shard.Parse("sharding.fluxcd.io/key=elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	standby := make(chan struct{}) // never elected
	elected := make(chan struct{})
	close(elected)
	for _, tc := range []struct {
		name    string
		replica *ImmutableReleaseReconciler
	}{
		{name: "standby replica", replica: &ImmutableReleaseReconciler{Client: k8s, APIReader: k8s, elected: standby}},
		{name: "another shard's leader", replica: &ImmutableReleaseReconciler{Client: k8s, APIReader: k8s, elected: elected, Options: Options{Shard: otherShard}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ns, repo, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1)

			pushed := commit(t, repo, "Release web 2.0", sampleFiles("app", "ghcr.io/acme/web@"+digestV2))
			n, err := tc.replica.Notify(ctx, receiver.Target{Namespace: ns}, receiver.Push{URLs: []string{repo.URL()}, Ref: "refs/heads/main"})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(n).To(Equal(1))
			g.Expect(get(g, obj).Annotations).To(HaveKey(v1alpha1.PushedAtAnnotation))
			// The interval is an hour: only the handed-over push brings the new head.
			g.Eventually(func() string { return get(g, obj).Status.LastAppliedRevision }, 30*time.Second, 100*time.Millisecond).
				Should(HaveSuffix(pushed))
			g.Expect(tc.replica.memories.len()).To(BeZero(), "the replica that handed over remembers nothing of the release")
		})
	}
}
