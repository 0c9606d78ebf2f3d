package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
)

// TestBadInput is the table of bad input: each gets its documented reason and a message that
// says what is wrong, and nothing reaches the cluster.
func TestBadInput(t *testing.T) {
	image := func(ref string) map[string]string {
		return map[string]string{"deployment.yaml": deploymentYAML("web", ref)}
	}
	tests := []struct {
		name    string
		files   map[string]string
		path    string
		mutate  func(*v1alpha1.ImmutableRelease)
		reason  string
		stalled bool
		message []string
	}{
		{name: "tag only", files: image("ghcr.io/acme/web:1.4"), reason: v1alpha1.ImageNotPinnedReason, stalled: true,
			message: []string{"images must be pinned by sha256 digest", "deployment.yaml:1: Deployment/web container app:", `image "ghcr.io/acme/web:1.4" has a tag but no digest; name it as ghcr.io/acme/web:1.4@sha256:<digest>`}},
		{name: "latest", files: image("ghcr.io/acme/web:latest"), reason: v1alpha1.ImageNotPinnedReason, stalled: true,
			message: []string{"uses the tag latest"}},
		{name: "short digest", files: image("ghcr.io/acme/web@sha256:1234abcd"), reason: v1alpha1.ImageNotPinnedReason, stalled: true,
			message: []string{"malformed digest: sha256 needs 64 lowercase hex characters, got 8"}},
		{name: "sha512", files: image("ghcr.io/acme/web@sha512:" + strings.Repeat("ab", 64)), reason: v1alpha1.ImageNotPinnedReason, stalled: true,
			message: []string{"uses a sha512 digest; only sha256 digests are accepted"}},
		{name: "malformed YAML", files: map[string]string{"deployment.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web\n", "configmap.yaml": configMapYAML},
			reason: v1alpha1.InvalidManifestReason, stalled: true, message: []string{"invalid manifests: ", "deployment.yaml: YAML error"}},
		{name: "path escapes", files: image("ghcr.io/acme/web@" + digestV1), path: "../../etc",
			reason: v1alpha1.InvalidPathReason, stalled: true, message: []string{`path "../../etc" leads out of the repository`}},
		{name: "missing path", files: image("ghcr.io/acme/web@" + digestV1), path: "deploy/nowhere",
			reason: v1alpha1.PathNotFoundReason, stalled: true, message: []string{`path "deploy/nowhere" does not exist in the repository at this revision`}},
		{name: "missing secret", files: image("ghcr.io/acme/web@" + digestV1),
			mutate: func(o *v1alpha1.ImmutableRelease) { o.Spec.Git.SecretRef.Name = "nope" },
			reason: v1alpha1.AuthenticationFailedReason, message: []string{`secret "nope" not found in namespace`}},
		{name: "wrong credentials", files: image("ghcr.io/acme/web@" + digestV1),
			mutate: func(o *v1alpha1.ImmutableRelease) { o.Spec.Git.SecretRef.Name = "wrong-credentials" },
			reason: v1alpha1.GitOperationFailedReason, message: []string{"listing references of http://", "authentication required"}},
		{name: "unreachable URL", files: image("ghcr.io/acme/web@" + digestV1),
			mutate: func(o *v1alpha1.ImmutableRelease) { o.Spec.Git.URL = "http://127.0.0.1:1/acme/shop.git" },
			reason: v1alpha1.GitOperationFailedReason, message: []string{"listing references of http://127.0.0.1:1/acme/shop.git", "connection refused"}},
		{name: "unknown branch", files: image("ghcr.io/acme/web@" + digestV1),
			mutate: func(o *v1alpha1.ImmutableRelease) { o.Spec.Git.Ref.Branch = "release-9" },
			reason: v1alpha1.GitOperationFailedReason, message: []string{`branch "release-9" not found in http://`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := NewWithT(t)
			ns := newNamespace(t)
			repo := newRepo(t, ns, tt.files)
			g.Expect(k8s.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "wrong-credentials", Namespace: ns},
				StringData: map[string]string{"username": gitServer.Username, "password": "wrong"},
			})).To(Succeed())
			mutate := func(*v1alpha1.ImmutableRelease) {}
			if tt.mutate != nil {
				mutate = tt.mutate
			}
			obj := newRelease(t, ns, repo, tt.path, mutate)
			obj = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, tt.reason, 30*time.Second)
			ready := condition(obj, meta.ReadyCondition)
			for _, m := range tt.message {
				g.Expect(ready.Message).To(ContainSubstring(m))
			}
			g.Expect(ready.Message).NotTo(ContainSubstring(gitServer.Password))
			if tt.stalled {
				g.Expect(condition(obj, meta.StalledCondition).Status).To(Equal(metav1.ConditionTrue))
				g.Expect(condition(obj, meta.ReconcilingCondition).Status).To(BeEmpty())
				checkKstatus(t, obj, status.FailedStatus)
			} else {
				g.Expect(condition(obj, meta.ReconcilingCondition).Reason).To(Equal(v1alpha1.ProgressingWithRetryReason))
				checkKstatus(t, obj, status.InProgressStatus)
			}
			g.Expect(obj.Status.LastAppliedRevision).To(BeEmpty())
			assertNothingApplied(t, ns)
		})
	}
}

// TestBadCommitLeavesTheClusterAlone: a release runs; a commit with a tag-only image is
// refused and the running version stays; a fix in Git makes it Ready again.
func TestBadCommitLeavesTheClusterAlone(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	good := "ghcr.io/acme/web@" + digestV1
	repo := newRepo(t, ns, sampleFiles("app", good))
	obj := newRelease(t, ns, repo, "app")
	ready := waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)

	bad := commit(t, repo, "Use a tag", map[string]string{
		"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web:2.0"),
		"app/extra.yaml":      "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n",
	})
	reconcileNow(t, obj)
	cur := waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.ImageNotPinnedReason, 30*time.Second)
	g.Expect(cur.Status.LastAttemptedRevision).To(Equal("main@sha1:" + bad))
	g.Expect(cur.Status.LastAppliedRevision).To(Equal(ready.Status.LastAppliedRevision))
	g.Expect(condition(cur, meta.ReadyCondition).Message).To(ContainSubstring("revision main@sha1:" + bad))
	g.Consistently(func(g Gomega) {
		g.Expect(deploymentImage(g, ns, "web")).To(Equal(good))
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())
	var cms corev1.ConfigMapList
	g.Expect(k8s.List(ctx, &cms, client.InNamespace(ns))).To(Succeed())
	for _, cm := range cms.Items {
		g.Expect(cm.Name).NotTo(Equal("extra"), "the refused revision was partly applied")
	}

	fixed := commit(t, repo, "Pin the image", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web:2.0@"+digestV2)})
	reconcileNow(t, obj)
	cur = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(cur.Status.LastAppliedRevision).To(Equal("main@sha1:" + fixed))
	g.Expect(condition(cur, meta.StalledCondition).Status).To(BeEmpty())
	checkKstatus(t, cur, status.CurrentStatus)
}
