package controllers

import (
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
)

func deploymentImage(g Gomega, namespace, name string) string {
	d := &appsv1.Deployment{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, d)).To(Succeed())
	return d.Spec.Template.Spec.Containers[0].Image
}

// TestReleaseLifecycle is the main story: a repository with a Deployment, a Service and a
// ConfigMap becomes Ready with its Deployment Available; a new digest is applied after a
// reconcile request; an object removed from Git is pruned; deleting the release prunes
// everything it applied.
func TestReleaseLifecycle(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	imageV1 := "ghcr.io/acme/web:1.0@" + digestV1
	repo := newRepo(t, ns, sampleFiles("deploy/prod", imageV1))
	first, err := repo.Head()
	g.Expect(err).NotTo(HaveOccurred())

	obj := newRelease(t, ns, repo, "./deploy/prod")
	obj = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	checkKstatus(t, obj, status.CurrentStatus)

	revision := "main@sha1:" + first
	g.Expect(obj.Status.LastAppliedRevision).To(Equal(revision))
	g.Expect(obj.Status.LastAttemptedRevision).To(Equal(revision))
	g.Expect(obj.Status.ObservedGeneration).To(Equal(obj.Generation))
	g.Expect(condition(obj, meta.ReadyCondition).Message).To(Equal("Applied revision " + revision))
	g.Expect(condition(obj, v1alpha1.HealthyCondition).Status).To(Equal(metav1.ConditionTrue))
	g.Expect(obj.Status.Images).To(Equal([]v1alpha1.WorkloadImage{{Workload: "Deployment/" + ns + "/web", Container: "app", Image: imageV1, Running: []string{digestV1}}}))
	g.Expect(obj.Status.Inventory.Entries).To(ConsistOf(
		v1alpha1.ResourceRef{ID: ns + "_web-settings__ConfigMap", Version: "v1"},
		v1alpha1.ResourceRef{ID: ns + "_web__Service", Version: "v1"},
		v1alpha1.ResourceRef{ID: ns + "_web_apps_Deployment", Version: "v1"},
	))
	g.Expect(obj.Status.History).To(HaveLen(1))
	h := obj.Status.History[0]
	g.Expect(h.Revision).To(Equal(revision))
	g.Expect(h.Subject).To(Equal("Initial release"))
	g.Expect(h.Author).To(Equal("Ada Developer <ada@example.com>"))
	g.Expect(h.Result).To(Equal(v1alpha1.ReleaseHealthy))
	g.Expect(h.ImagesChecksum).To(HavePrefix("sha256:"))
	g.Expect(testutil.ToFloat64(readyGauge.WithLabelValues(ns, "shop"))).To(Equal(1.0))

	// The workload runs exactly the pinned image and is Available.
	d := &appsv1.Deployment{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, d)).To(Succeed())
	g.Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(imageV1))
	g.Expect(d.Status.AvailableReplicas).To(Equal(int32(2)))
	g.Expect(d.Labels).To(HaveKeyWithValue("release.immutable.dev/name", "shop"))
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-settings"}, &corev1.ConfigMap{})).To(Succeed())

	// A new digest, applied at once after a reconcile request (the interval is an hour).
	imageV2 := "ghcr.io/acme/web:1.1@" + digestV2
	second := commit(t, repo, "Release web 1.1", map[string]string{"deploy/prod/deployment.yaml": deploymentYAML("web", imageV2)})
	reconcileNow(t, obj)
	g.Eventually(func(g Gomega) { g.Expect(deploymentImage(g, ns, "web")).To(Equal(imageV2)) }, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		cur := get(g.(*WithT), obj)
		g.Expect(cur.Status.LastAppliedRevision).To(Equal("main@sha1:" + second))
		g.Expect(condition(cur, meta.ReadyCondition).Status).To(Equal(metav1.ConditionTrue))
		g.Expect(cur.Status.History).To(HaveLen(2))
		g.Expect(cur.Status.History[0].Subject).To(Equal("Release web 1.1"))
		g.Expect(cur.Status.History[0].Result).To(Equal(v1alpha1.ReleaseHealthy))
		g.Expect(cur.Status.History[0].ImagesChecksum).NotTo(Equal(cur.Status.History[1].ImagesChecksum))
		g.Expect(cur.Status.LastHandledReconcileAt).NotTo(BeEmpty())
	}, time.Minute, 200*time.Millisecond).Should(Succeed())

	// An object removed from Git is pruned.
	commit(t, repo, "Drop the settings", nil, "deploy/prod/configmap.yaml")
	reconcileNow(t, obj)
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-settings"}, &corev1.ConfigMap{}))
	}, 30*time.Second, 100*time.Millisecond).Should(BeTrue())
	g.Eventually(func(g Gomega) {
		g.Expect(get(g.(*WithT), obj).Status.Inventory.Entries).To(HaveLen(2))
	}, 10*time.Second).Should(Succeed())

	// Deleting the release prunes what it applied, and lets the release go.
	g.Expect(k8s.Delete(ctx, obj)).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &appsv1.Deployment{})) &&
			apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(obj), &v1alpha1.ImmutableRelease{}))
	}, 30*time.Second, 100*time.Millisecond).Should(BeTrue())
	g.Eventually(func() bool {
		return !hasSeries(readyGauge, ns)
	}, 10*time.Second).Should(BeTrue(), "the Ready series of a deleted release is removed")
}

// hasSeries says whether the gauge has a series for namespace.
func hasSeries(v *prometheus.GaugeVec, namespace string) bool {
	ch := make(chan prometheus.Metric, 1000)
	go func() { v.Collect(ch); close(ch) }()
	found := false
	for m := range ch {
		var pb dto.Metric
		_ = m.Write(&pb)
		for _, l := range pb.GetLabel() {
			if l.GetName() == "namespace" && l.GetValue() == namespace {
				found = true
			}
		}
	}
	return found
}

// TestNewCommitAppliedAtInterval: without any request, a new commit is applied at the next
// check of the remote.
func TestNewCommitAppliedAtInterval(t *testing.T) {
	g := NewWithT(t)
	ns, repo, _ := readyRelease(t, "ghcr.io/acme/web@"+digestV1, func(o *v1alpha1.ImmutableRelease) { o.Spec.Interval = metav1.Duration{Duration: 3 * time.Second} })

	commit(t, repo, "Release 2", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})
	g.Eventually(func(g Gomega) {
		g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV2))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
}

// TestPruneDisabled keeps objects removed from Git, and keeps everything when the release
// is deleted.
func TestPruneDisabled(t *testing.T) {
	g := NewWithT(t)
	ns, repo, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1, func(o *v1alpha1.ImmutableRelease) { o.Spec.Prune = false })

	second := commit(t, repo, "Drop the settings", nil, "app/configmap.yaml")
	reconcileNow(t, obj)
	g.Eventually(func(g Gomega) {
		g.Expect(get(g.(*WithT), obj).Status.LastAppliedRevision).To(Equal("main@sha1:" + second))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-settings"}, &corev1.ConfigMap{})).To(Succeed())

	deleteRelease(t, obj)
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &appsv1.Deployment{})).To(Succeed())
}

// TestSuspendAndResume: a suspended release changes nothing; resuming catches up at once.
func TestSuspendAndResume(t *testing.T) {
	g := NewWithT(t)
	ns, repo, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1)

	setSuspend := func(v bool) {
		cur := get(g, obj)
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.Suspend = v
		g.Expect(k8s.Patch(ctx, cur, patch)).To(Succeed())
	}
	setSuspend(true)
	g.Eventually(func(g Gomega) {
		cur := get(g.(*WithT), obj)
		g.Expect(cur.Status.ObservedGeneration).To(Equal(cur.Generation))
	}, 10*time.Second).Should(Succeed())
	commit(t, repo, "Release 2", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})
	reconcileNow(t, obj)
	g.Consistently(func(g Gomega) {
		g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV1))
	}, 3*time.Second, 200*time.Millisecond).Should(Succeed())

	setSuspend(false)
	g.Eventually(func(g Gomega) {
		g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV2))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
}

// TestServiceAccountWithoutRights: applying as an account that may not create Deployments
// fails clearly and applies nothing.
func TestServiceAccountWithoutRights(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	repo := newRepo(t, ns, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	g.Expect(k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns}})).To(Succeed())
	// It may manage ConfigMaps and Services, not Deployments.
	g.Expect(k8s.Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps", "services"}, Verbs: []string{"*"}}},
	})).To(Succeed())
	g.Expect(k8s.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "deployer"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "deployer", Namespace: ns}},
	})).To(Succeed())

	obj := newRelease(t, ns, repo, "app", func(o *v1alpha1.ImmutableRelease) { o.Spec.ServiceAccountName = "deployer" })
	obj = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.ApplyFailedReason, 30*time.Second)
	msg := condition(obj, meta.ReadyCondition).Message
	g.Expect(msg).To(ContainSubstring(`deployments.apps "web" is forbidden: User "system:serviceaccount:` + ns + `:deployer" cannot`))
	g.Expect(msg).To(ContainSubstring("grant the release's service account the rights it needs"))
	g.Expect(condition(obj, meta.ReconcilingCondition).Status).To(Equal(metav1.ConditionTrue))
	checkKstatus(t, obj, status.InProgressStatus)
	assertNothingApplied(t, ns)
}

// assertNothingApplied fails when any object carries the release's labels in namespace.
func assertNothingApplied(t *testing.T, namespace string) {
	t.Helper()
	g := NewWithT(t)
	sel := client.MatchingLabels{"release.immutable.dev/name": "shop"}
	var cms corev1.ConfigMapList
	g.Expect(k8s.List(ctx, &cms, client.InNamespace(namespace), sel)).To(Succeed())
	g.Expect(cms.Items).To(BeEmpty())
	var svcs corev1.ServiceList
	g.Expect(k8s.List(ctx, &svcs, client.InNamespace(namespace), sel)).To(Succeed())
	g.Expect(svcs.Items).To(BeEmpty())
	var ds appsv1.DeploymentList
	g.Expect(k8s.List(ctx, &ds, client.InNamespace(namespace), sel)).To(Succeed())
	g.Expect(ds.Items).To(BeEmpty())
}

// TestFailedRollout: a digest that never becomes ready leads to Healthy=False with
// HealthCheckFailed after the timeout, and the history says the revision failed.
func TestFailedRollout(t *testing.T) {
	g := NewWithT(t)
	ns, repo, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1, func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Second}
		o.Spec.Rollback = &v1alpha1.RollbackSpec{Mode: v1alpha1.RollbackDisabled}
	})

	bad := commit(t, repo, "Release a broken build", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+deadDigest)})
	reconcileNow(t, obj)
	start := time.Now()
	cur := waitFor(t, obj, v1alpha1.HealthyCondition, metav1.ConditionFalse, v1alpha1.HealthCheckFailedReason, time.Minute)
	g.Expect(time.Since(start)).To(BeNumerically(">=", 4*time.Second), "judged before the timeout")
	msg := condition(cur, v1alpha1.HealthyCondition).Message
	g.Expect(msg).To(ContainSubstring("revision main@sha1:" + bad + " did not become healthy within 5s"))
	g.Expect(msg).To(ContainSubstring("Deployment/" + ns + "/web"))
	g.Expect(condition(cur, meta.ReadyCondition).Status).To(Equal(metav1.ConditionFalse))
	g.Expect(condition(cur, meta.StalledCondition).Status).To(Equal(metav1.ConditionTrue))
	g.Expect(cur.Status.History[0].Result).To(Equal(v1alpha1.ReleaseFailed))
	g.Expect(cur.Status.History[1].Result).To(Equal(v1alpha1.ReleaseHealthy))
	checkKstatus(t, cur, status.FailedStatus)
}

// TestIntervalJitter: intervals are spread within the fraction asked, and actually spread.
func TestIntervalJitter(t *testing.T) {
	g := NewWithT(t)
	g.Expect(jittered(time.Minute, 0)).To(Equal(time.Minute))
	seen := map[time.Duration]bool{}
	for range 100 {
		d := jittered(time.Minute, 0.05)
		g.Expect(d).To(BeNumerically(">=", 57*time.Second))
		g.Expect(d).To(BeNumerically("<=", 63*time.Second))
		seen[d] = true
	}
	g.Expect(len(seen)).To(BeNumerically(">", 50))

	// The next look is queued below changes, whatever brought the release last.
	g.Expect((&ImmutableReleaseReconciler{}).requeue(&v1alpha1.ImmutableRelease{}, 0).Priority).To(HaveValue(Equal(lookPriority)))
	g.Expect((&ImmutableReleaseReconciler{}).requeue(&v1alpha1.ImmutableRelease{}, time.Second).Priority).To(HaveValue(BeNumerically("<", changedPriority)))

	// A release brought back early by the jitter checks Git then, with a listing made since
	// the shortest interval, instead of waiting for the interval after.
	r := &ImmutableReleaseReconciler{Options: Options{IntervalJitter: 0.05}}
	obj := &v1alpha1.ImmutableRelease{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app", Generation: 1},
		Spec:   v1alpha1.ImmutableReleaseSpec{Interval: metav1.Duration{Duration: time.Minute}},
		Status: v1alpha1.ImmutableReleaseStatus{LastAttemptedRevision: "main@sha1:0123"}}
	mem := r.memories.of(client.ObjectKeyFromObject(obj))
	mem.source = git.Source{Checked: time.Now().Add(-55 * time.Second), Generation: 1}
	due, _ := r.gitCheckDue(obj, mem)
	g.Expect(due).To(BeFalse())
	mem.source = git.Source{Checked: time.Now().Add(-58 * time.Second), Generation: 1}
	due, notBefore := r.gitCheckDue(obj, mem)
	g.Expect(due).To(BeTrue())
	g.Expect(time.Since(notBefore)).To(BeNumerically("~", 57*time.Second, time.Second))
}

// TestCacheBehindOwnWrite: a cached copy older than this process's own last write waits a
// moment for the cache, then is read from the API server instead of waiting on.
func TestCacheBehindOwnWrite(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	obj := newRelease(t, ns, newRepo(t, ns, sampleFiles("app", "ghcr.io/acme/web@"+digestV1)), "app",
		func(o *v1alpha1.ImmutableRelease) { o.Spec.Suspend = true })
	stale := get(g, obj)
	cur := stale.DeepCopy()
	patch := client.MergeFrom(cur.DeepCopy())
	cur.Annotations = map[string]string{"example.com/note": "newer"}
	g.Expect(k8s.Patch(ctx, cur, patch)).To(Succeed())

	r := &ImmutableReleaseReconciler{APIReader: k8s}
	mem := r.memories.of(client.ObjectKeyFromObject(obj))
	copyOf := stale.DeepCopy()
	mem.wrote(overwritten{resourceVersion: stale.ResourceVersion, at: time.Now()})
	wait, err := r.fresh(ctx, copyOf, mem)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(wait).To(BeTrue(), "the cache gets a moment")
	g.Expect(copyOf.ResourceVersion).To(Equal(stale.ResourceVersion))

	mem.wrote(overwritten{resourceVersion: stale.ResourceVersion, at: time.Now().Add(-time.Second)})
	wait, err = r.fresh(ctx, copyOf, mem)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(wait).To(BeFalse())
	g.Expect(copyOf.ResourceVersion).NotTo(Equal(stale.ResourceVersion), "read from the API server")
	g.Expect(copyOf.Annotations).To(HaveKeyWithValue("example.com/note", "newer"))

	mem.wrote(overwritten{resourceVersion: "1", at: time.Now().Add(-time.Second)})
	again := stale.DeepCopy()
	wait, err = r.fresh(ctx, again, mem)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(wait).To(BeFalse())
	g.Expect(again.ResourceVersion).To(Equal(stale.ResourceVersion), "a copy newer than the write is used as it is")
}
