package controllers

import (
	"fmt"
	"k8s.io/apimachinery/pkg/types"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/admission"
)

// setImage changes a container image the way `kubectl set image` does: a patch under its
// own field manager.
func setImage(c client.Client, ns, name, container, image, manager string) error {
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
		return err
	}
	patch := client.MergeFrom(d.DeepCopy())
	for i := range d.Spec.Template.Spec.Containers {
		if d.Spec.Template.Spec.Containers[i].Name == container {
			d.Spec.Template.Spec.Containers[i].Image = image
		}
	}
	return c.Patch(ctx, d, patch, client.FieldOwner(manager))
}

// releaseEvents returns the notes of the release's events with reason.
func releaseEvents(g Gomega, obj *v1alpha1.ImmutableRelease, reason string) []string {
	var list eventsv1.EventList
	g.Expect(k8s.List(ctx, &list, client.InNamespace(obj.Namespace))).To(Succeed())
	var notes []string
	for _, e := range list.Items {
		if e.Regarding.Name == obj.Name && e.Reason == reason {
			notes = append(notes, e.Note)
		}
	}
	return notes
}

const evilImage = "ghcr.io/acme/web@sha256:eeee000000000000000000000000000000000000000000000000000000000000"

// TestDriftCorrected: an image edit by another field manager is put back from the watch
// event, not at the interval (an hour here), with an event naming the manager; a deleted
// Deployment comes back.
func TestDriftCorrected(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	good := "ghcr.io/acme/web@" + digestV1
	repo := newRepo(t, ns, sampleFiles("app", good))
	obj := newRelease(t, ns, repo, "app")
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)

	g.Expect(setImage(k8s, ns, "web", "app", evilImage, "kubectl-set")).To(Succeed())
	g.Eventually(func(g Gomega) { g.Expect(deploymentImage(g, ns, "web")).To(Equal(good)) }, 10*time.Second, 20*time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		notes := releaseEvents(g, obj, v1alpha1.DriftCorrectedReason)
		g.Expect(notes).To(ContainElement(And(
			ContainSubstring("Deployment/"+ns+"/web: spec.template.spec.containers[app].image is "+evilImage+" (Git: "+good+")"),
			ContainSubstring("changed by kubectl-set"),
		)))
		g.Expect(get(g.(*WithT), obj).Status.DriftCorrections).To(BeNumerically(">=", 1))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)

	// A deleted workload is created again.
	g.Expect(k8s.Delete(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})).To(Succeed())
	g.Eventually(func(g Gomega) {
		d := &appsv1.Deployment{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, d)).To(Succeed())
		g.Expect(d.DeletionTimestamp).To(BeNil())
	}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(releaseEvents(g, obj, v1alpha1.DriftCorrectedReason)).To(ContainElement(ContainSubstring("Deployment/" + ns + "/web was deleted")))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
}

// TestDriftReported: in Report mode the edit stays, Drifted=True names it, and Drifted=False
// once Git says the same.
func TestDriftReported(t *testing.T) {
	g := NewWithT(t)
	ns, repo, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1, func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Drift = &v1alpha1.DriftSpec{Mode: v1alpha1.DriftReport}
	})

	g.Expect(setImage(k8s, ns, "web", "app", evilImage, "kubectl-set")).To(Succeed())
	cur := waitFor(t, obj, v1alpha1.DriftedCondition, metav1.ConditionTrue, v1alpha1.ImageDriftReason, 10*time.Second)
	g.Expect(condition(cur, v1alpha1.DriftedCondition).Message).To(ContainSubstring(
		"1 objects differ from revision " + cur.Status.LastAppliedRevision + ": Deployment/" + ns + "/web: spec.template.spec.containers[app].image is " + evilImage))
	g.Consistently(func(g Gomega) { g.Expect(deploymentImage(g, ns, "web")).To(Equal(evilImage)) }, 2*time.Second, 200*time.Millisecond).Should(Succeed())

	commit(t, repo, "Adopt the hotfix", map[string]string{"app/deployment.yaml": deploymentYAML("web", evilImage)})
	reconcileNow(t, obj)
	waitFor(t, obj, v1alpha1.DriftedCondition, metav1.ConditionFalse, v1alpha1.NoDriftReason, 30*time.Second)
}

// TestDriftPrevented: the API server refuses a person's image edit with the policy's
// message; the operator's own updates go through; the policy goes with the last release.
func TestDriftPrevented(t *testing.T) {
	g := NewWithT(t)
	ns, repo, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1, func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Drift = &v1alpha1.DriftSpec{Mode: v1alpha1.DriftPrevent}
	})
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: admission.PolicyName}, &admissionv1.ValidatingAdmissionPolicy{})).To(Succeed())

	// A cluster administrator who is not the operator.
	cfg := rest.CopyConfig(cfgForTests)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "jane", Groups: []string{"system:masters"}}
	jane, err := client.New(cfg, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(func() error {
		return setImage(jane, ns, "web", "app", evilImage, "kubectl-set")
	}, 10*time.Second, 200*time.Millisecond).Should(MatchError(And(
		ContainSubstring("the images of Deployment " + ns + "/web are pinned by ImmutableRelease " + ns + "/shop (drift mode Prevent): change them in Git"),
	)))
	g.Expect(apierrors.IsForbidden(setImage(jane, ns, "web", "app", evilImage, "kubectl-set"))).To(BeTrue())
	// Other fields are not refused (and are put back by correction).
	g.Expect(jane.Patch(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}},
		client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"annotations":{"note":"ok"}}}`)))).To(Succeed())

	// The operator's own change of image goes through.
	commit(t, repo, "Release 2", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})
	reconcileNow(t, obj)
	g.Eventually(func(g Gomega) { g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV2)) }, 30*time.Second, 100*time.Millisecond).Should(Succeed())

	// No release uses Prevent any more: the policy goes.
	g.Expect(k8s.Delete(ctx, obj)).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Name: admission.PolicyName}, &admissionv1.ValidatingAdmissionPolicy{})) &&
			apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Name: admission.PolicyName}, &admissionv1.ValidatingAdmissionPolicyBinding{}))
	}, 30*time.Second, 100*time.Millisecond).Should(BeTrue())
}

// TestInjectedSidecarReported: a container added by another manager is reported in the
// status and left in place.
func TestInjectedSidecarReported(t *testing.T) {
	g := NewWithT(t)
	ns, _, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1)

	sidecar := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "web", "namespace": ns},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"containers": []any{
			map[string]any{"name": "istio-proxy", "image": "istio/proxyv2@" + digestV2},
		}}}},
	}}
	g.Expect(k8s.Patch(ctx, sidecar, client.Apply, client.FieldOwner("sidecar-injector"))).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(get(g.(*WithT), obj).Status.InjectedContainers).To(Equal([]v1alpha1.WorkloadImage{
			{Workload: "Deployment/" + ns + "/web", Container: "istio-proxy", Image: "istio/proxyv2@" + digestV2},
		}))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Consistently(func(g Gomega) {
		d := &appsv1.Deployment{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, d)).To(Succeed())
		g.Expect(d.Spec.Template.Spec.Containers).To(HaveLen(2))
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())
}

// TestDigestMismatch: the rollout is complete but a pod reports another digest (as a node
// would after an in-place change): Healthy=False, DigestMismatch.
func TestDigestMismatch(t *testing.T) {
	g := NewWithT(t)
	ns, _, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1)

	var pods corev1.PodList
	g.Expect(k8s.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"app": "web"})).To(Succeed())
	g.Expect(pods.Items).NotTo(BeEmpty())
	pod := pods.Items[0]
	pod.Status.ContainerStatuses[0].ImageID = "docker-pullable://ghcr.io/acme/web@" + evilImage[len("ghcr.io/acme/web@"):]
	g.Expect(k8s.Status().Update(ctx, &pod)).To(Succeed())
	reconcileNow(t, obj)
	cur := waitFor(t, obj, v1alpha1.HealthyCondition, metav1.ConditionFalse, v1alpha1.DigestMismatchReason, 30*time.Second)
	g.Expect(condition(cur, v1alpha1.HealthyCondition).Message).To(ContainSubstring(
		"Deployment/" + ns + "/web container app runs " + evilImage[len("ghcr.io/acme/web@"):] + " (Git: " + digestV1 + ")"))
	g.Expect(cur.Status.Images[0].Running).To(ConsistOf(digestV1, evilImage[len("ghcr.io/acme/web@"):]))
	g.Expect(condition(cur, meta.ReadyCondition).Reason).To(Equal(v1alpha1.DigestMismatchReason))
}

// TestOneEditReconcilesOneRelease: with 200 releases live, an edit to one release's object
// reconciles that release and no other.
func TestOneEditReconcilesOneRelease(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	n := envInt("TEST_RELEASES", 200)
	files := map[string]string{}
	for i := 0; i < n; i++ {
		files[fmt.Sprintf("r%d/configmap.yaml", i)] = fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings-%d}\ndata: {count: \"%d\"}\n", i, i)
	}
	repo := newRepo(t, ns, files)
	var releases []*v1alpha1.ImmutableRelease
	for i := 0; i < n; i++ {
		i := i
		releases = append(releases, newRelease(t, ns, repo, fmt.Sprintf("r%d", i), func(o *v1alpha1.ImmutableRelease) { o.Name = fmt.Sprintf("r%d", i) }))
	}
	g.Eventually(func(g Gomega) {
		var list v1alpha1.ImmutableReleaseList
		g.Expect(k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		ready := 0
		for i := range list.Items {
			if condition(&list.Items[i], meta.ReadyCondition).Status == metav1.ConditionTrue {
				ready++
			}
		}
		g.Expect(ready).To(Equal(n))
	}, 3*time.Minute, time.Second).Should(Succeed())
	time.Sleep(2 * time.Second) // let the last status patches' own events settle

	before := reconcileCounts(g, ns)
	cm := &corev1.ConfigMap{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "settings-7"}, cm)).To(Succeed())
	cm.Data["count"] = "edited"
	g.Expect(k8s.Update(ctx, cm, client.FieldOwner("kubectl-edit"))).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "settings-7"}, cm)).To(Succeed())
		g.Expect(cm.Data["count"]).To(Equal("7"))
	}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
	time.Sleep(time.Second)

	after := reconcileCounts(g, ns)
	var changed []string
	for name, c := range after {
		if c != before[name] {
			changed = append(changed, name)
		}
	}
	g.Expect(changed).To(Equal([]string{"r7"}))
	_ = releases
}

// reconcileCounts reads immutable_release_reconcile_total for the releases of namespace.
func reconcileCounts(g Gomega, namespace string) map[string]float64 {
	out := map[string]float64{}
	ch := make(chan prometheus.Metric, 1000)
	go func() { reconciles.Collect(ch); close(ch) }()
	for m := range ch {
		var pb dto.Metric
		g.Expect(m.Write(&pb)).To(Succeed())
		labels := map[string]string{}
		for _, l := range pb.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["namespace"] == namespace {
			out[labels["name"]] = pb.GetCounter().GetValue()
		}
	}
	return out
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestCorrectionsWithoutCorrections: a status written when nothing was corrected (a fresh
// process, before any drift) must not break the bookkeeping.
func TestCorrectionsWithoutCorrections(t *testing.T) {
	g := NewWithT(t)
	var ms memories
	m := ms.of(types.NamespacedName{Namespace: "ns", Name: "web"})
	g.Expect(func() { m.correctionsWritten(m.pendingCorrections()) }).NotTo(Panic())
	m.addCorrections(2)
	m.correctionsWritten(1)
	g.Expect(m.pendingCorrections()).To(Equal(int64(1)))
	m.correctionsWritten(1)
	g.Expect(m.pendingCorrections()).To(BeZero())
}
