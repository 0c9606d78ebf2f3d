package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/admission"
	"github.com/immutable-release/operator/internal/shard"
)

// The attacks on drift mode Prevent, each made against the real API server.

// pinnedMessage is the start of the policy's refusal of an image change.
func pinnedMessage(ns, name, release string) string {
	return "the images of Deployment " + ns + "/" + name + " are pinned by ImmutableRelease " + release + " (drift mode Prevent)"
}

// restConfigAs is an administrator's config that impersonates user.
func restConfigAs(user string, groups ...string) *rest.Config {
	cfg := rest.CopyConfig(cfgForTests)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return cfg
}

// clientAs is a client that acts as user.
func clientAs(t *testing.T, user string, groups ...string) client.Client {
	t.Helper()
	c, err := client.New(restConfigAs(user, groups...), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serviceAccountWith creates a ServiceAccount in namespace bound to clusterRole in each of
// namespaces, and returns the user it authenticates as.
func serviceAccountWith(t *testing.T, namespace, name, clusterRole string, namespaces ...string) string {
	t.Helper()
	g := NewWithT(t)
	g.Expect(k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}})).To(Succeed())
	for _, ns := range append([]string{namespace}, namespaces...) {
		g.Expect(k8s.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: namespace + "-" + name, Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: clusterRole},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: namespace}},
		})).To(Succeed())
	}
	return "system:serviceaccount:" + namespace + ":" + name
}

// preventMode puts a release in drift mode Prevent.
func preventMode(o *v1alpha1.ImmutableRelease) {
	o.Spec.Drift = &v1alpha1.DriftSpec{Mode: v1alpha1.DriftPrevent}
}

// TestPreventRefusesOtherServiceAccounts: another account of the release's namespace, with
// every right to edit Deployments there, cannot change the pinned image, neither by using
// the operator's field manager nor by relabelling the object in the same request. The
// release's own account still rolls out what Git says.
func TestPreventRefusesOtherServiceAccounts(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	serviceAccountWith(t, ns, "deployer", "admin")
	intruderUser := serviceAccountWith(t, ns, "intruder", "edit")
	repo := newRepo(t, ns, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	obj := newRelease(t, ns, repo, "app", preventMode, func(o *v1alpha1.ImmutableRelease) { o.Spec.ServiceAccountName = "deployer" })
	waitFor(t, obj, "Ready", metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)

	intruder := clientAs(t, intruderUser)
	g.Eventually(func() error {
		return setImage(intruder, ns, "web", "app", evilImage, "immutable-release")
	}, 10*time.Second, 200*time.Millisecond).Should(MatchError(ContainSubstring(pinnedMessage(ns, "web", ns+"/shop"))))

	// The labels of the new object name another release: the owner is read from the old one.
	d := &appsv1.Deployment{}
	g.Expect(intruder.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, d)).To(Succeed())
	patch := client.MergeFrom(d.DeepCopy())
	d.Labels["release.immutable.dev/name"] = "elsewhere"
	d.Spec.Template.Spec.Containers[0].Image = evilImage
	err := intruder.Patch(ctx, d, patch, client.FieldOwner("immutable-release"))
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
	g.Expect(err).To(MatchError(ContainSubstring(pinnedMessage(ns, "web", ns+"/shop"))))
	g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV1))

	// The release's own account applies the next revision.
	commit(t, repo, "Release 2", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})
	reconcileNow(t, obj)
	g.Eventually(func(g Gomega) { g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV2)) }, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	waitFor(t, obj, "Ready", metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
}

// TestPreventKeepsItsLabels: removing the label that the binding selects, to change the
// image in a second request, is refused.
func TestPreventKeepsItsLabels(t *testing.T) {
	g := NewWithT(t)
	ns, _, _ := readyRelease(t, "ghcr.io/acme/web@"+digestV1, preventMode)
	jane := clientAs(t, "jane", "system:masters")
	g.Eventually(func() error {
		return jane.Patch(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}},
			client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"labels":{"`+admission.PreventLabel+`":null}}}`)))
	}, 10*time.Second, 200*time.Millisecond).Should(MatchError(ContainSubstring("are set by ImmutableRelease " + ns + "/shop")))
	d := &appsv1.Deployment{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, d)).To(Succeed())
	g.Expect(d.Labels).To(HaveKeyWithValue(admission.PreventLabel, "true"))
}

const podYAML = `apiVersion: v1
kind: Pod
metadata:
  name: tool
spec:
  containers:
  - name: app
    image: ghcr.io/acme/web@` + digestV1 + `
`

// TestPreventRefusesEphemeralContainers: `kubectl debug --image=...` adds a container with
// any image to a running Pod through the pods/ephemeralcontainers subresource; on a Pod a
// Prevent release applied, the API server refuses it.
func TestPreventRefusesEphemeralContainers(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	repo := newRepo(t, ns, map[string]string{"app/pod.yaml": podYAML})
	newRelease(t, ns, repo, "app", preventMode)
	pods, err := kubernetes.NewForConfig(restConfigAs("jane", "system:masters"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(func(g Gomega) {
		pod := &corev1.Pod{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "tool"}, pod)).To(Succeed())
		g.Expect(pod.Labels).To(HaveKeyWithValue(admission.PreventLabel, "true"))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())

	g.Eventually(func() error {
		pod, err := pods.CoreV1().Pods(ns).Get(ctx, "tool", metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: evilImage},
			TargetContainerName:      "app",
		})
		_, err = pods.CoreV1().Pods(ns).UpdateEphemeralContainers(ctx, "tool", pod, metav1.UpdateOptions{})
		return err
	}, 10*time.Second, 200*time.Millisecond).Should(MatchError(ContainSubstring("ephemeral containers of Pod " + ns + "/tool are pinned by ImmutableRelease " + ns + "/shop")))
	pod := &corev1.Pod{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "tool"}, pod)).To(Succeed())
	g.Expect(pod.Spec.EphemeralContainers).To(BeEmpty())
}

// TestPreventAcrossNamespaces: a release that acts as its account and applies into
// spec.targetNamespace keeps the objects there pinned against others, and its own account
// still rolls out.
func TestPreventAcrossNamespaces(t *testing.T) {
	g := NewWithT(t)
	ns, target := newNamespace(t), newNamespace(t)
	serviceAccountWith(t, ns, "deployer", "admin", target)
	repo := newRepo(t, ns, map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV1)})
	obj := newRelease(t, ns, repo, "app", preventMode, func(o *v1alpha1.ImmutableRelease) {
		o.Spec.ServiceAccountName = "deployer"
		o.Spec.TargetNamespace = target
	})
	waitFor(t, obj, "Ready", metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)

	// Another account of the target namespace, and an administrator.
	for _, c := range []client.Client{clientAs(t, serviceAccountWith(t, target, "intruder", "edit")), clientAs(t, "jane", "system:masters")} {
		g.Eventually(func() error {
			return setImage(c, target, "web", "app", evilImage, "immutable-release")
		}, 10*time.Second, 200*time.Millisecond).Should(MatchError(ContainSubstring(pinnedMessage(target, "web", ns+"/shop"))))
	}

	commit(t, repo, "Release 2", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})
	reconcileNow(t, obj)
	g.Eventually(func(g Gomega) { g.Expect(deploymentImage(g, target, "web")).To(Equal("ghcr.io/acme/web@" + digestV2)) }, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	waitFor(t, obj, "Ready", metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
}

// TestPreventPolicyRestored: deleting the binding, or editing the policy or the binding so
// that they let everything through, lasts only until the operator sees it; the image
// stays pinned.
func TestPreventPolicyRestored(t *testing.T) {
	g := NewWithT(t)
	ns, _, _ := readyRelease(t, "ghcr.io/acme/web@"+digestV1, preventMode)
	jane := clientAs(t, "jane", "system:masters")
	refused := func() {
		t.Helper()
		g.Eventually(func() error {
			return setImage(jane, ns, "web", "app", evilImage, "kubectl-set")
		}, 10*time.Second, 100*time.Millisecond).Should(MatchError(ContainSubstring(pinnedMessage(ns, "web", ns+"/shop"))))
	}
	refused()
	key := client.ObjectKey{Name: admission.PolicyName}
	want := &admissionv1.ValidatingAdmissionPolicy{}
	g.Expect(k8s.Get(ctx, key, want)).To(Succeed())

	// The binding deleted.
	g.Expect(jane.Delete(ctx, &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: admission.PolicyName}})).To(Succeed())
	g.Eventually(func() error {
		return k8s.Get(ctx, key, &admissionv1.ValidatingAdmissionPolicyBinding{})
	}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
	refused()

	// The binding made to select nothing.
	g.Eventually(func() error {
		b := &admissionv1.ValidatingAdmissionPolicyBinding{}
		if err := jane.Get(ctx, key, b); err != nil {
			return err
		}
		b.Spec.MatchResources.ObjectSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "nothing", Operator: metav1.LabelSelectorOpExists}}
		return jane.Update(ctx, b, client.FieldOwner("kubectl-edit"))
	}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		b := &admissionv1.ValidatingAdmissionPolicyBinding{}
		g.Expect(k8s.Get(ctx, key, b)).To(Succeed())
		g.Expect(b.Spec.MatchResources.ObjectSelector.MatchExpressions).To(BeEmpty())
	}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
	refused()

	// The policy's validation edited to let everything through, and a match condition added
	// that matches nothing.
	g.Eventually(func() error {
		p := &admissionv1.ValidatingAdmissionPolicy{}
		if err := jane.Get(ctx, key, p); err != nil {
			return err
		}
		for i := range p.Spec.Validations {
			p.Spec.Validations[i].Expression = "true"
		}
		p.Spec.MatchConditions = []admissionv1.MatchCondition{{Name: "never", Expression: "false"}}
		return jane.Update(ctx, p, client.FieldOwner("kubectl-edit"))
	}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		p := &admissionv1.ValidatingAdmissionPolicy{}
		g.Expect(k8s.Get(ctx, key, p)).To(Succeed())
		g.Expect(p.Spec.Validations).To(Equal(want.Spec.Validations))
		g.Expect(p.Spec.MatchConditions).To(BeEmpty())
	}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
	refused()

	// The policy deleted.
	g.Expect(jane.Delete(ctx, &admissionv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: admission.PolicyName}})).To(Succeed())
	g.Eventually(func(g Gomega) {
		p := &admissionv1.ValidatingAdmissionPolicy{}
		g.Expect(k8s.Get(ctx, key, p)).To(Succeed())
		g.Expect(p.DeletionTimestamp).To(BeNil())
	}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
	refused()
	g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV1))
}

// startShard starts a second manager that reconciles only the releases matching selector,
// as one started with --watch-label-selector does, with the Prevent policy controller as
// main.go sets it up, and returns that controller. The suite's manager still reconciles the
// releases themselves.
func startShard(t *testing.T, selector string) *PreventPolicyReconciler {
	t.Helper()
	g := NewWithT(t)
	sh, err := shard.Parse(selector)
	g.Expect(err).NotTo(HaveOccurred())
	cacheOpts, err := CacheOptions(sh)
	g.Expect(err).NotTo(HaveOccurred())
	mgr, err := ctrl.NewManager(cfgForTests, ctrl.Options{
		Scheme:  scheme,
		Cache:   cacheOpts,
		Metrics: metricsserver.Options{BindAddress: "0"},
		// The suite's manager runs a controller of the same name in this process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	g.Expect(err).NotTo(HaveOccurred())
	r := &PreventPolicyReconciler{Client: mgr.GetClient(), Config: cfgForTests, Tenancy: operator.Options.Tenancy}
	g.Expect(r.SetupWithManager(mgr)).To(Succeed())
	shardCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(shardCtx); err != nil {
			t.Errorf("the manager of shard %s stopped: %v", selector, err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return r
}

// reconcilePolicy runs one reconcile of r once its cache of releases has synced (before,
// it fails, having changed nothing).
func reconcilePolicy(t *testing.T, r *PreventPolicyReconciler) {
	t.Helper()
	NewWithT(t).Eventually(func() error {
		_, err := r.Reconcile(ctx, preventPolicyKey)
		return err
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
}

// policyObjects returns the live policy and its bindings.
func policyObjects(g Gomega) []client.Object {
	objects := []client.Object{
		&admissionv1.ValidatingAdmissionPolicy{},
		&admissionv1.ValidatingAdmissionPolicyBinding{},
		&admissionv1.ValidatingAdmissionPolicyBinding{},
	}
	for i, name := range []string{admission.PolicyName, admission.PolicyName, admission.CrossNamespaceBindingName} {
		g.Expect(k8s.Get(ctx, client.ObjectKey{Name: name}, objects[i])).To(Succeed())
	}
	return objects
}

// versions is the uid and resourceVersion of each object: they change when it is written
// or deleted and created again.
func versions(objects []client.Object) []string {
	var out []string
	for _, o := range objects {
		out = append(out, string(o.GetUID())+"/"+o.GetResourceVersion())
	}
	return out
}

// policyGone checks that the policy and both bindings are absent.
func policyGone(g Gomega) {
	for name, o := range map[string]client.Object{
		admission.PolicyName:                &admissionv1.ValidatingAdmissionPolicy{},
		"binding " + admission.PolicyName:   &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: admission.PolicyName}},
		admission.CrossNamespaceBindingName: &admissionv1.ValidatingAdmissionPolicyBinding{},
	} {
		if o.GetName() == "" {
			o.SetName(name)
		}
		err := k8s.Get(ctx, client.ObjectKeyFromObject(o), o)
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%s: %v", name, err)
	}
}

// TestPreventPolicyAcrossShards: the fleet split in two shards (shard=a, shard=b), each
// manager with its own Prevent policy controller. A Prevent release of shard a keeps the
// policy under shard b too: shard b neither deletes it nor writes anything else, since both
// compute the policy from every release of the cluster, the cross-namespace account of
// shard a's release included. The policy deleted comes back from shard b. The last Prevent
// release gone, the policy goes.
func TestPreventPolicyAcrossShards(t *testing.T) {
	g := NewWithT(t)
	// The last Prevent release of the cluster is this test's: the earlier tests' go first.
	var all v1alpha1.ImmutableReleaseList
	g.Expect(k8s.List(ctx, &all)).To(Succeed())
	for i := range all.Items {
		if all.Items[i].GetDriftMode() == v1alpha1.DriftPrevent {
			deleteRelease(t, &all.Items[i])
		}
	}
	g.Eventually(policyGone, 10*time.Second, 100*time.Millisecond).Should(Succeed())

	shardA, shardB := startShard(t, "shard=a"), startShard(t, "shard=b")
	ns, target := newNamespace(t), newNamespace(t)
	deployer := serviceAccountWith(t, ns, "deployer", "admin", target)
	repo := newRepo(t, ns, map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV1)})
	relA := newRelease(t, ns, repo, "app", preventMode, func(o *v1alpha1.ImmutableRelease) {
		o.Labels = map[string]string{"shard": "a"}
		o.Spec.ServiceAccountName = "deployer"
		o.Spec.TargetNamespace = target
	})
	crossEntry := `"` + ns + `/shop": "` + deployer + `"`
	accountOf := func(objects []client.Object) string {
		for _, v := range objects[0].(*admissionv1.ValidatingAdmissionPolicy).Spec.Variables {
			if v.Name == "account" {
				return v.Expression
			}
		}
		return ""
	}
	var settled []client.Object
	g.Eventually(func(g Gomega) {
		settled = policyObjects(g)
		g.Expect(accountOf(settled)).To(ContainSubstring(crossEntry))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())

	// Shard b has no release at all, shard a has the one: both find the policy as they
	// would write it.
	reconcilePolicy(t, shardB)
	reconcilePolicy(t, shardA)
	g.Expect(versions(policyObjects(g))).To(Equal(versions(settled)))
	// And the three controllers running (the suite's, a's and b's) do not take turns.
	g.Consistently(func(g Gomega) []string { return versions(policyObjects(g)) }, 2*time.Second, 200*time.Millisecond).Should(Equal(versions(settled)))

	// A Prevent release of shard b, acting as the operator in its own namespace: the
	// cross-namespace account of shard a's release stays, whichever shard writes.
	nsB := newNamespace(t)
	repoB := newRepo(t, nsB, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	relB := newRelease(t, nsB, repoB, "app", preventMode, func(o *v1alpha1.ImmutableRelease) { o.Labels = map[string]string{"shard": "b"} })
	g.Eventually(func() error {
		return shardB.releases.Get(ctx, client.ObjectKeyFromObject(relB), &v1alpha1.ImmutableRelease{})
	}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
	reconcilePolicy(t, shardB)
	settled = policyObjects(g)
	g.Expect(accountOf(settled)).To(ContainSubstring(crossEntry))
	reconcilePolicy(t, shardA)
	g.Expect(versions(policyObjects(g))).To(Equal(versions(settled)))

	// The policy deleted: shard b, which sees none of shard a's releases through its
	// manager, puts it back as it was.
	jane := clientAs(t, "jane", "system:masters")
	g.Expect(jane.Delete(ctx, &admissionv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: admission.PolicyName}})).To(Succeed())
	reconcilePolicy(t, shardB)
	g.Expect(accountOf(policyObjects(g))).To(ContainSubstring(crossEntry))
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: admission.PolicyName}, &admissionv1.ValidatingAdmissionPolicy{})).To(Succeed())

	// Shard a's release gone, its account leaves the policy; shard b's keeps the policy.
	deleteRelease(t, relA)
	g.Eventually(func(g Gomega) {
		g.Expect(accountOf(policyObjects(g))).NotTo(ContainSubstring(crossEntry))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	reconcilePolicy(t, shardA)
	policyObjects(g)

	// The last Prevent release gone, the policy and bindings go, and no shard brings them back.
	deleteRelease(t, relB)
	g.Eventually(policyGone, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	reconcilePolicy(t, shardA)
	reconcilePolicy(t, shardB)
	policyGone(g)
}

// TestPreventPolicyCreateRace: the leaders of two shards start together and both find the
// policy missing; the one whose create comes second takes the other's policy as found,
// without an error, and writes nothing since it is the same.
func TestPreventPolicyCreateRace(t *testing.T) {
	g := NewWithT(t)
	readyRelease(t, "ghcr.io/acme/web@"+digestV1, preventMode)
	live := &admissionv1.ValidatingAdmissionPolicy{}
	g.Eventually(func() error {
		return k8s.Get(ctx, client.ObjectKey{Name: admission.PolicyName}, live)
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	before := versions([]client.Object{live})

	r := &PreventPolicyReconciler{Client: k8s, APIReader: &lateReader{Reader: k8s}}
	desired := &admissionv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: live.Name, Labels: live.Labels}, Spec: live.Spec}
	g.Expect(r.replace(ctx, desired)).To(Succeed())
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: admission.PolicyName}, live)).To(Succeed())
	g.Expect(versions([]client.Object{live})).To(Equal(before))
}

// lateReader answers its first Get with NotFound: a read made just before another shard's
// leader created the object.
type lateReader struct {
	client.Reader
	answered bool
}

func (r *lateReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if !r.answered {
		r.answered = true
		return apierrors.NewNotFound(admissionv1.Resource("validatingadmissionpolicies"), key.Name)
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

// TestPreventFields: the cache of every release keeps of each only what the policy depends
// on, and trimming twice is trimming once.
func TestPreventFields(t *testing.T) {
	g := NewWithT(t)
	now := metav1.Now()
	full := &v1alpha1.ImmutableRelease{
		ObjectMeta: metav1.ObjectMeta{
			Name: "shop", Namespace: "team", UID: "u1", ResourceVersion: "7", DeletionTimestamp: &now,
			Labels: map[string]string{"shard": "a"}, Annotations: map[string]string{"a": "b"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		},
		Spec: v1alpha1.ImmutableReleaseSpec{
			Git:                v1alpha1.GitSource{URL: "https://example.com/repo.git"},
			Path:               "app",
			ServiceAccountName: "deployer",
			TargetNamespace:    "shop",
			Drift:              &v1alpha1.DriftSpec{Mode: v1alpha1.DriftPrevent},
		},
		Status: v1alpha1.ImmutableReleaseStatus{LastAppliedRevision: "main@sha1:abc"},
	}
	want := &v1alpha1.ImmutableRelease{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "team", UID: "u1", ResourceVersion: "7", DeletionTimestamp: &now},
		Spec: v1alpha1.ImmutableReleaseSpec{
			ServiceAccountName: "deployer",
			TargetNamespace:    "shop",
			Drift:              &v1alpha1.DriftSpec{Mode: v1alpha1.DriftPrevent},
		},
	}
	once, err := preventFields(full)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(once).To(Equal(want))
	twice, err := preventFields(once)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(twice).To(Equal(want))

	// A release in the default mode stays in the default mode.
	full.Spec.Drift = nil
	trimmed, err := preventFields(full)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(trimmed.(*v1alpha1.ImmutableRelease).GetDriftMode()).To(Equal(v1alpha1.DriftCorrect))
}
