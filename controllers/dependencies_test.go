package controllers

import (
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/tenancy"
)

func dependsOn(names ...string) func(*v1alpha1.ImmutableRelease) {
	return func(o *v1alpha1.ImmutableRelease) {
		for _, n := range names {
			o.Spec.DependsOn = append(o.Spec.DependsOn, meta.NamespacedObjectReference{Name: n})
		}
	}
}

func named(name string) func(*v1alpha1.ImmutableRelease) {
	return func(o *v1alpha1.ImmutableRelease) { o.Name = name }
}

// TestDependsOn: an app release created together with the platform release it depends on
// waits, naming it, until the platform release is Ready at its revision, then applies.
func TestDependsOn(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	files := sampleFiles("app", "ghcr.io/acme/web@"+digestV1)
	for k, v := range sampleFiles("platform", "ghcr.io/acme/operator@"+digestV2) {
		files[k] = v
	}
	repo := newRepo(t, ns, files)
	// The platform release starts suspended: it stands for one still rolling out.
	platform := newRelease(t, ns, repo, "platform", named("platform"), func(o *v1alpha1.ImmutableRelease) { o.Spec.Suspend = true })
	app := newRelease(t, ns, repo, "app", named("app"), dependsOn("platform"))

	waiting := waitFor(t, app, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.DependencyNotReadyReason, time.Minute)
	g.Expect(condition(waiting, meta.ReadyCondition).Message).To(ContainSubstring(ns + "/platform not Ready"))
	g.Expect(waiting.Status.Inventory).To(BeNil(), "nothing applied while the dependency is not Ready")
	checkKstatus(t, waiting, status.InProgressStatus)

	live := get(g, platform)
	live.Spec.Suspend = false
	g.Expect(k8s.Update(ctx, live)).To(Succeed())
	waitFor(t, platform, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	// The platform's change reaches the app through the dependency index.
	g.Expect(operator.dependents(ctx, platform)).To(ConsistOf(HaveField("NamespacedName", client.ObjectKeyFromObject(app))))
	ready := waitFor(t, app, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, 20*time.Second)
	g.Expect(ready.Status.Inventory).NotTo(BeNil())
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &appsv1.Deployment{})).To(Succeed())
}

// widgetCRD is a CustomResourceDefinition of a namespaced kind Widget, and widget one of it.
const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.deps.example.com
spec:
  group: deps.example.com
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`

const widget = `apiVersion: deps.example.com/v1
kind: Widget
metadata:
  name: blue
spec:
  color: blue
`

// TestDependsOnCRD: the platform's release installs a CRD and the app's release a custom
// resource of it. The app, created first, waits for the platform (not failing on a kind the
// API server does not know yet), and applies once the CRD is in.
func TestDependsOnCRD(t *testing.T) {
	g := NewWithT(t)
	platformNamespace(t)
	ns := unconfinedNamespace
	repo := newRepo(t, ns, map[string]string{"crds/widget.yaml": widgetCRD, "widgets/blue.yaml": widget})
	app := newRelease(t, ns, repo, "widgets", named("widgets"), dependsOn("crds"))
	waiting := waitFor(t, app, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.DependencyNotReadyReason, time.Minute)
	g.Expect(condition(waiting, meta.ReadyCondition).Message).To(ContainSubstring(ns + "/crds not found"))

	crds := newRelease(t, ns, repo, "crds", named("crds"))
	waitFor(t, crds, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	waitFor(t, app, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	blue := &unstructured.Unstructured{}
	blue.SetAPIVersion("deps.example.com/v1")
	blue.SetKind("Widget")
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "blue"}, blue)).To(Succeed())

	// The app goes first: deleting the platform's release would prune the CRD under it.
	deleteRelease(t, app)
	deleteRelease(t, crds)
}

// TestDependencyCycle: releases that depend on each other are refused, the cycle named, and
// nothing of either is applied.
func TestDependencyCycle(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	repo := newRepo(t, ns, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	a := newRelease(t, ns, repo, "app", named("a"), dependsOn("b"))
	newRelease(t, ns, repo, "app", named("b"), dependsOn("a"))
	refused := waitFor(t, a, meta.StalledCondition, metav1.ConditionTrue, v1alpha1.DependencyCycleReason, time.Minute)
	g.Expect(condition(refused, meta.StalledCondition).Message).To(ContainSubstring(ns + "/a -> " + ns + "/b -> " + ns + "/a"))
	g.Expect(refused.Status.Inventory).To(BeNil())
	checkKstatus(t, refused, status.FailedStatus)
	err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &appsv1.Deployment{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "nothing applied")
}

// TestDependencyAcrossNamespaces: a tenant's release may not wait on, and so read the state
// of, another namespace's release; the platform's namespaces may.
func TestDependencyAcrossNamespaces(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	repo := newRepo(t, ns, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	other := func(o *v1alpha1.ImmutableRelease) {
		o.Spec.DependsOn = []meta.NamespacedObjectReference{{Name: "shop", Namespace: "kube-system"}}
	}
	obj := newRelease(t, ns, repo, "app", other)
	refused := waitFor(t, obj, meta.StalledCondition, metav1.ConditionTrue, tenancy.ReasonAccessDenied, time.Minute)
	g.Expect(condition(refused, meta.StalledCondition).Message).To(ContainSubstring("kube-system/shop, in another namespace"))

	g.Expect(operator.Options.Tenancy.MayDependAcross(unconfinedNamespace)).To(BeTrue())
	g.Expect(operator.Options.Tenancy.MayDependAcross(ns)).To(BeFalse())
}

// TestDependentsWaitForRevert: one commit upgrades the platform and the app that depends on
// it, and the platform's new build never becomes healthy. The app applies nothing of that
// commit while the platform rolls out, fails and is reverted in Git (its path only): it
// applies its half only once the platform is Ready again, at the revert.
func TestDependentsWaitForRevert(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	files := sampleFiles("app", "ghcr.io/acme/web@"+digestV1)
	files["platform/deployment.yaml"] = deploymentYAML("operator", "ghcr.io/acme/operator@"+digestV1)
	repo := newRepo(t, ns, files)
	timeout := func(o *v1alpha1.ImmutableRelease) { o.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Second} }
	platform := newRelease(t, ns, repo, "platform", named("platform"), timeout)
	app := newRelease(t, ns, repo, "app", named("app"), dependsOn("platform"))
	waitFor(t, platform, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	waitFor(t, app, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)

	bad := commit(t, repo, "Upgrade the platform and the app", map[string]string{
		"platform/deployment.yaml": deploymentYAML("operator", "ghcr.io/acme/operator@"+deadDigest),
		"app/deployment.yaml":      deploymentYAML("web", "ghcr.io/acme/web@"+digestV2),
	})
	// The app hears of the commit first: its dependency is still Ready, at the commit before.
	reconcileNow(t, app)
	reconcileNow(t, platform)

	var waited string
	g.Eventually(func(g Gomega) {
		cur := get(g.(*WithT), app)
		if c := condition(cur, meta.ReadyCondition); c.Reason == v1alpha1.DependencyNotReadyReason {
			waited = c.Message
		}
		image := deploymentImage(g, ns, "web")
		if image == "ghcr.io/acme/web@"+digestV1 {
			p := get(g.(*WithT), platform)
			g.Expect(false).To(BeTrue(), "the app still runs its old build: %s; the platform: %s at %s", condition(cur, meta.ReadyCondition).Message, condition(p, meta.ReadyCondition).Message, p.Status.LastAppliedRevision)
		}
		// The app's half of the commit is running: by now the platform's half was reverted
		// and the platform is Ready again.
		p := get(g.(*WithT), platform)
		g.Expect(image).To(Equal("ghcr.io/acme/web@"+digestV2), "the app applied what it waited for")
		g.Expect(readyAtRevision(p)).To(BeTrue(), "the app applied before its dependency was Ready again: %s", condition(p, meta.ReadyCondition).Message)
		g.Expect(p.Status.LastAppliedRevision).NotTo(Equal("main@sha1:"+bad), "the app applied before its dependency's revert")
		g.Expect(p.Status.History).To(ContainElement(And(HaveField("Revision", "main@sha1:"+bad), HaveField("RevertedBy", Not(BeEmpty())))))
	}, 2*time.Minute, 50*time.Millisecond).Should(Succeed())
	g.Expect(waited).To(ContainSubstring(ns+"/platform not"), "the app said what it waited for")
	t.Logf("the app waited: %s", waited)

	head := branchHead(g, repo)
	g.Expect(head).NotTo(Equal(bad), "the platform's half was reverted")
	g.Expect(deploymentImage(g, ns, "operator")).To(Equal("ghcr.io/acme/operator@" + digestV1))
	ready := waitFor(t, app, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(ready.Status.LastAppliedRevision).To(Equal("main@sha1:" + head))
}
