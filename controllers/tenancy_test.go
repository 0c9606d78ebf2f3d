package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/tenancy"
	"github.com/immutable-release/operator/internal/testgit"
)

// unconfinedNamespace is the one namespace the suite's manager runs unconfined
// (--unconfined-namespaces): the platform's own releases.
const unconfinedNamespace = "platform-unconfined"

func clusterRoleBindingYAML(name, namespace string) string {
	return `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: ` + name + `
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {kind: ServiceAccount, name: default, namespace: ` + namespace + `}
`
}

func clusterRoleYAML(name string) string {
	return `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: ` + name + `
rules:
- {apiGroups: ["*"], resources: ["*"], verbs: ["*"]}
`
}

// inNamespace adds metadata.namespace to a manifest of the helpers above.
func inNamespace(manifest, namespace string) string {
	return strings.Replace(manifest, "metadata:\n", "metadata:\n  namespace: "+namespace+"\n", 1)
}

// victimDeployment creates another team's namespace with a Deployment in it, as that team
// would, and returns the namespace.
func victimDeployment(t *testing.T) string {
	t.Helper()
	g := NewWithT(t)
	ns := newNamespace(t)
	replicas := int32(1)
	g.Expect(k8s.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "api"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "ghcr.io/payments/api@" + digestV1}}},
			},
		},
	})).To(Succeed())
	return ns
}

// assertVictimUntouched fails when the other team's Deployment changed hands or image.
func assertVictimUntouched(t *testing.T, ns string) {
	t.Helper()
	g := NewWithT(t)
	d := &appsv1.Deployment{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "api"}, d)).To(Succeed())
	g.Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal("ghcr.io/payments/api@" + digestV1))
	g.Expect(d.Labels).NotTo(HaveKey("release.immutable.dev/name"))
}

// TestTenantConfinement: a tenant whose release names no service account acts as the
// operator, whose rights reach everything. Every attempt to reach outside its namespace,
// or to grant itself rights, is refused with AccessDenied before anything is applied.
func TestTenantConfinement(t *testing.T) {
	tests := []struct {
		name    string
		files   func(ns, victim string) map[string]string
		mutate  func(victim string) func(*v1alpha1.ImmutableRelease)
		message []string
		check   func(t *testing.T, ns, victim string)
	}{
		{
			name: "a ClusterRoleBinding that makes the tenant cluster-admin",
			files: func(ns, _ string) map[string]string {
				return map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV1), "app/escalate.yaml": clusterRoleBindingYAML(ns+"-escalate", ns)}
			},
			message: []string{"ClusterRoleBinding/", "-escalate: a cluster-scoped object", "set spec.serviceAccountName", "nothing was applied"},
			check: func(t *testing.T, ns, _ string) {
				err := k8s.Get(ctx, client.ObjectKey{Name: ns + "-escalate"}, &rbacv1.ClusterRoleBinding{})
				NewWithT(t).Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the ClusterRoleBinding exists: %v", err)
			},
		},
		{
			name: "a Deployment in kube-system",
			files: func(string, string) map[string]string {
				return map[string]string{"app/deployment.yaml": inNamespace(deploymentYAML("miner", "ghcr.io/acme/miner@"+digestV1), "kube-system")}
			},
			message: []string{`Deployment/kube-system/miner: namespace "kube-system" is not the release's own namespace`},
			check: func(t *testing.T, _, _ string) {
				err := k8s.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "miner"}, &appsv1.Deployment{})
				NewWithT(t).Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Deployment exists: %v", err)
			},
		},
		{
			name: "another team's Deployment, by metadata.namespace",
			files: func(_, victim string) map[string]string {
				return map[string]string{"app/deployment.yaml": inNamespace(deploymentYAML("api", "ghcr.io/evil/api@"+digestV2), victim)}
			},
			message: []string{`namespace "`, `is not the release's own namespace`},
			check:   func(t *testing.T, _, victim string) { assertVictimUntouched(t, victim) },
		},
		{
			name: "another team's Deployment, by spec.targetNamespace",
			files: func(string, string) map[string]string {
				return map[string]string{"app/deployment.yaml": deploymentYAML("api", "ghcr.io/evil/api@"+digestV2)}
			},
			mutate: func(victim string) func(*v1alpha1.ImmutableRelease) {
				return func(o *v1alpha1.ImmutableRelease) { o.Spec.TargetNamespace = victim }
			},
			message: []string{"spec.targetNamespace", "is not the release's own namespace"},
			check:   func(t *testing.T, _, victim string) { assertVictimUntouched(t, victim) },
		},
		{
			name: "an admission policy with the name of the operator's",
			files: func(string, string) map[string]string {
				return map[string]string{"app/policy.yaml": `apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: immutable-release-prevent-image-changes}
spec:
  matchConstraints:
    resourceRules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}]
  validations: [{expression: "true"}]
`}
			},
			message: []string{"ValidatingAdmissionPolicy/immutable-release-prevent-image-changes", "no release may change the operator's own objects"},
		},
		{
			name: "a RoleBinding in its own namespace",
			files: func(ns, _ string) map[string]string {
				return map[string]string{"app/rb.yaml": `apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}
subjects: [{kind: ServiceAccount, name: default, namespace: ` + ns + `}]
`}
			},
			message: []string{"RoleBinding/", "RBAC objects are refused for a release that acts as the operator"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := NewWithT(t)
			victim := victimDeployment(t)
			ns := newNamespace(t)
			repo := newRepo(t, ns, tt.files(ns, victim))
			var mutate []func(*v1alpha1.ImmutableRelease)
			if tt.mutate != nil {
				mutate = append(mutate, tt.mutate(victim))
			}
			obj := newRelease(t, ns, repo, "app", mutate...)
			obj = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.AccessDeniedReason, 30*time.Second)
			ready := condition(obj, meta.ReadyCondition)
			for _, m := range tt.message {
				g.Expect(ready.Message).To(ContainSubstring(m))
			}
			g.Expect(condition(obj, meta.StalledCondition).Status).To(Equal(metav1.ConditionTrue))
			checkKstatus(t, obj, status.FailedStatus)
			assertNothingApplied(t, ns)
			if tt.check != nil {
				tt.check(t, ns, victim)
			}
		})
	}
}

// TestOperatorObjectsProtected: even a release whose service account is cluster-admin
// cannot change the operator's own ClusterRole or CRD.
func TestOperatorObjectsProtected(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	g.Expect(k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "root", Namespace: ns}})).To(Succeed())
	g.Expect(k8s.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-root"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "root", Namespace: ns}},
	})).To(Succeed())
	t.Cleanup(func() {
		_ = k8s.Delete(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns + "-root"}})
	})
	repo := newRepo(t, ns, map[string]string{
		"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV1),
		"app/role.yaml":       clusterRoleYAML("immutable-release-manager-role"),
	})
	obj := newRelease(t, ns, repo, "app", func(o *v1alpha1.ImmutableRelease) { o.Spec.ServiceAccountName = "root" })
	obj = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.AccessDeniedReason, 30*time.Second)
	g.Expect(condition(obj, meta.ReadyCondition).Message).To(ContainSubstring("ClusterRole/immutable-release-manager-role: ClusterRole names beginning \"immutable-release-\" are the operator's; no release may change the operator's own objects"))
	err := k8s.Get(ctx, client.ObjectKey{Name: "immutable-release-manager-role"}, &rbacv1.ClusterRole{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the ClusterRole was applied: %v", err)
	assertNothingApplied(t, ns)
}

// TestMissingServiceAccount: a release whose account does not exist stalls with
// ServiceAccountNotFound, nothing applied, and goes on once the account exists.
func TestMissingServiceAccount(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	repo := newRepo(t, ns, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	obj := newRelease(t, ns, repo, "app", func(o *v1alpha1.ImmutableRelease) { o.Spec.ServiceAccountName = "deployer" })
	obj = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.ServiceAccountNotFoundReason, 30*time.Second)
	g.Expect(condition(obj, meta.ReadyCondition).Message).To(ContainSubstring(`service account "deployer" not found in namespace "` + ns + `"`))
	g.Expect(condition(obj, meta.StalledCondition).Status).To(Equal(metav1.ConditionTrue))
	checkKstatus(t, obj, status.FailedStatus)
	assertNothingApplied(t, ns)

	g.Expect(k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns}})).To(Succeed())
	g.Expect(k8s.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "admin"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "deployer", Namespace: ns}},
	})).To(Succeed())
	reconcileNow(t, obj)
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
}

// platformNamespace creates the namespace the suite's manager runs unconfined, once.
func platformNamespace(t *testing.T) {
	t.Helper()
	err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: unconfinedNamespace}})
	NewWithT(t).Expect(client.IgnoreAlreadyExists(err)).To(Succeed())
}

// TestUnconfinedNamespace: the platform's own namespace, opted out by the manager's flag,
// may apply cluster-scoped objects as the operator, and prunes them on deletion.
func TestUnconfinedNamespace(t *testing.T) {
	g := NewWithT(t)
	platformNamespace(t)
	repo := newRepo(t, unconfinedNamespace, map[string]string{"platform/role.yaml": clusterRoleYAML("platform-tenancy-view")})
	obj := newRelease(t, unconfinedNamespace, repo, "platform")
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: "platform-tenancy-view"}, &rbacv1.ClusterRole{})).To(Succeed())
	g.Expect(k8s.Delete(ctx, obj)).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Name: "platform-tenancy-view"}, &rbacv1.ClusterRole{}))
	}, 30*time.Second, 100*time.Millisecond).Should(BeTrue())
}

// TestPruneStaysInNamespace: an inventory that names another team's object (a status
// written by someone else) never makes a confined release delete it.
func TestPruneStaysInNamespace(t *testing.T) {
	g := NewWithT(t)
	victim := victimDeployment(t)
	ns, repo, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1)
	g.Eventually(func() error {
		cur := get(g, obj)
		patch := client.MergeFromWithOptions(cur.DeepCopy(), client.MergeFromWithOptimisticLock{})
		cur.Status.Inventory.Entries = append(cur.Status.Inventory.Entries, v1alpha1.ResourceRef{ID: victim + "_api_apps_Deployment", Version: "v1"})
		return k8s.Status().Patch(ctx, cur, patch)
	}, 10*time.Second).Should(Succeed())
	// The victim's Deployment carries the release's labels, as if it had applied it.
	d := &appsv1.Deployment{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: victim, Name: "api"}, d)).To(Succeed())
	patch := client.MergeFrom(d.DeepCopy())
	d.Labels = map[string]string{"release.immutable.dev/name": "shop", "release.immutable.dev/namespace": ns}
	g.Expect(k8s.Patch(ctx, d, patch)).To(Succeed())

	hash := commit(t, repo, "Release web 2", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})
	reconcileNow(t, obj)
	g.Eventually(func() string { return get(g, obj).Status.LastAppliedRevision }, time.Minute, 100*time.Millisecond).Should(Equal("main@sha1:" + hash))
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: victim, Name: "api"}, &appsv1.Deployment{})).To(Succeed())

	deleteRelease(t, obj)
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: victim, Name: "api"}, &appsv1.Deployment{})).To(Succeed())
}

// TestTarpitsCostOnlyTheirOwnRelease: four releases of one tenant on Git servers that
// never answer hold no worker for long: another tenant's push is applied meanwhile, and
// each tarpit's release fails with the Git timeout, not before.
func TestTarpitsCostOnlyTheirOwnRelease(t *testing.T) {
	g := NewWithT(t)
	_, repo, victim := readyRelease(t, "ghcr.io/acme/web@"+digestV1)

	hostile := newNamespace(t)
	hostileRepo := newRepo(t, hostile, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	server := testgit.Tarpit(t)
	var tarpits []*v1alpha1.ImmutableRelease
	for i := range 4 {
		tarpits = append(tarpits, newRelease(t, hostile, hostileRepo, "app", func(o *v1alpha1.ImmutableRelease) {
			o.Name = fmt.Sprintf("tarpit-%d", i)
			o.Spec.Git.URL = fmt.Sprintf("%s/tarpit-%d.git", server, i)
			o.Spec.Git.SecretRef = nil
			o.Spec.Git.Timeout = &metav1.Duration{Duration: 20 * time.Second}
		}))
	}
	for _, o := range tarpits {
		cur := waitFor(t, o, meta.ReconcilingCondition, metav1.ConditionTrue, v1alpha1.ProgressingReason, 20*time.Second)
		g.Expect(condition(cur, meta.ReadyCondition).Message).To(ContainSubstring("the Git server has not answered yet"))
	}

	hash := commit(t, repo, "Release web 2", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})
	reconcileNow(t, victim)
	g.Eventually(func() string { return get(g, victim).Status.LastAppliedRevision }, 10*time.Second, 100*time.Millisecond).
		Should(Equal("main@sha1:"+hash), "the other tenant's push waited behind the tarpits")

	for _, o := range tarpits {
		cur := waitFor(t, o, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.GitOperationFailedReason, time.Minute)
		g.Expect(condition(cur, meta.ReadyCondition).Message).To(ContainSubstring("20s"))
	}
}

// TestDefaultServiceAccount: with --default-service-account, a release without
// serviceAccountName acts as that account of its own namespace, as the API server itself
// says (a SelfSubjectReview made with the release's client); a namespace without the
// account stalls the release, and the message names the flag.
func TestDefaultServiceAccount(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	r := &ImmutableReleaseReconciler{
		APIReader: k8s, Config: cfgForTests, Scheme: scheme, Client: operator.Client,
		Options: Options{Tenancy: tenancy.Policy{DefaultServiceAccount: "deployer"}},
	}
	obj := &v1alpha1.ImmutableRelease{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns}}
	g.Expect(r.confined(obj)).To(BeFalse())

	local := &cluster{config: cfgForTests, mapper: operator.clusters.local.mapper, watches: &watcher{}}
	s := &scope{obj: obj, cluster: local}
	err := r.checkServiceAccount(ctx, s)
	var f *failure
	g.Expect(errors.As(err, &f)).To(BeTrue())
	g.Expect(f.reason).To(Equal(v1alpha1.ServiceAccountNotFoundReason))
	g.Expect(f.stalled).To(BeTrue())
	g.Expect(err.Error()).To(ContainSubstring(`service account "deployer" not found in namespace "` + ns + `"`))
	g.Expect(err.Error()).To(ContainSubstring("--default-service-account"))

	g.Expect(k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns}})).To(Succeed())
	g.Expect(r.checkServiceAccount(ctx, s)).To(Succeed())
	c, err := r.clientFor(local, obj)
	g.Expect(err).NotTo(HaveOccurred())
	review := &authenticationv1.SelfSubjectReview{}
	g.Expect(c.Create(ctx, review)).To(Succeed())
	g.Expect(review.Status.UserInfo.Username).To(Equal("system:serviceaccount:" + ns + ":deployer"))

	// Its own serviceAccountName wins over the default.
	obj.Spec.ServiceAccountName = "other"
	c, err = r.clientFor(local, obj)
	g.Expect(err).NotTo(HaveOccurred())
	review = &authenticationv1.SelfSubjectReview{}
	g.Expect(c.Create(ctx, review)).To(Succeed())
	g.Expect(review.Status.UserInfo.Username).To(Equal("system:serviceaccount:" + ns + ":other"))
}

// TestTenantBoundsStayBounded: what a tenant writes can shorten its own costs, never
// lengthen them past the platform admin's: a spec.git.timeout of 1000h is held to
// --git-timeout, an interval of 1ms looks at the release at most every second, and a
// Receiver interval of 1ms reads its Secret at most every 30s.
func TestTenantBoundsStayBounded(t *testing.T) {
	g := NewWithT(t)
	rel := &v1alpha1.ImmutableRelease{}
	g.Expect(rel.GetGitTimeout(time.Minute)).To(Equal(time.Minute))
	rel.Spec.Git.Timeout = &metav1.Duration{Duration: 1000 * time.Hour}
	g.Expect(rel.GetGitTimeout(time.Minute)).To(Equal(time.Minute))
	rel.Spec.Git.Timeout = &metav1.Duration{Duration: 5 * time.Second}
	g.Expect(rel.GetGitTimeout(time.Minute)).To(Equal(5 * time.Second))

	rel.Spec.Interval = metav1.Duration{Duration: time.Millisecond}
	g.Expect(rel.GetRequeueAfter()).To(Equal(v1alpha1.MinInterval))
	rel.Spec.Interval = metav1.Duration{Duration: 3 * time.Second}
	g.Expect(rel.GetRequeueAfter()).To(Equal(3 * time.Second))

	rec := &v1alpha1.Receiver{}
	g.Expect(rec.GetInterval()).To(Equal(v1alpha1.DefaultReceiverInterval))
	rec.Spec.Interval = &metav1.Duration{Duration: time.Millisecond}
	g.Expect(rec.GetInterval()).To(Equal(v1alpha1.MinReceiverInterval))
	rec.Spec.Interval = &metav1.Duration{Duration: time.Hour}
	g.Expect(rec.GetInterval()).To(Equal(time.Hour))
}
