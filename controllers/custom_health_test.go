package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/kustomize"
	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/manifest"
	"github.com/immutable-release/operator/internal/tenancy"
)

// databaseCRD is a namespaced kind Database with a status subresource: a claim that a
// controller, here the test, provisions and reports on in status.
const databaseCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: databases.health.example.com
spec:
  group: health.example.com
  names: {kind: Database, plural: databases, singular: database, listKind: DatabaseList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`

// databaseYAML is a Database of the given schema version.
func databaseYAML(name, schemaVersion string) string {
	return `apiVersion: health.example.com/v1
kind: Database
metadata:
  name: ` + name + `
spec:
  engine: postgres
  schemaVersion: "` + schemaVersion + `"
`
}

// databaseHealth judges Databases by their Ready condition, as a Flux user writes it.
var databaseHealth = kustomize.CustomHealthCheck{
	APIVersion: "health.example.com/v1",
	Kind:       "Database",
	HealthCheckExpressions: kustomize.HealthCheckExpressions{
		InProgress: "has(status.phase) && status.phase == 'Provisioning'",
		Failed:     "status.conditions.exists(c, c.type == 'Ready' && c.status == 'False' && c.reason == 'MigrationFailed')",
		Current:    "status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')",
	},
}

func withDatabaseHealth(o *v1alpha1.ImmutableRelease) {
	o.Spec.HealthCheckExprs = []kustomize.CustomHealthCheck{databaseHealth}
}

// installDatabaseCRD installs the Database CRD, once for the suite, and waits until it is
// served.
func installDatabaseCRD(t *testing.T) {
	t.Helper()
	g := NewWithT(t)
	crd := &unstructured.Unstructured{}
	g.Expect(yaml.Unmarshal([]byte(databaseCRD), &crd.Object)).To(Succeed())
	g.Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, crd))).To(Succeed())
	g.Eventually(func() error {
		l := &unstructured.UnstructuredList{}
		l.SetAPIVersion("health.example.com/v1")
		l.SetKind("DatabaseList")
		return k8s.List(ctx, l)
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
}

// database reads a Database.
func database(g Gomega, namespace, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("health.example.com/v1")
	u.SetKind("Database")
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, u)).To(Succeed())
	return u
}

// reportDatabase writes a Database's status as its controller would, once its spec is at
// schemaVersion: the Ready condition, observedGeneration the generation it looked at.
func reportDatabase(t *testing.T, namespace, name, schemaVersion, phase, ready, reason, message string) {
	t.Helper()
	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		u := database(g, namespace, name)
		v, _, _ := unstructured.NestedString(u.Object, "spec", "schemaVersion")
		g.Expect(v).To(Equal(schemaVersion), "the release has not applied schema version %s yet", schemaVersion)
		st := map[string]any{
			"observedGeneration": u.GetGeneration(),
			"conditions": []any{map[string]any{
				"type": "Ready", "status": ready, "reason": reason, "message": message,
				"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
			}},
		}
		if phase != "" {
			st["phase"] = phase
		}
		u.Object["status"] = st
		g.Expect(k8s.Status().Update(ctx, u)).To(Succeed())
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
}

// TestCustomResourceFailedIsReverted: a release applies a Database claim, judged by
// healthCheckExprs. Healthy once its controller says Ready; then a commit changes the claim
// and the controller reports the migration failed: the CEL failed expression is true, the
// rollout is Failed at once (the timeout is far off), and the commit is reverted in Git as
// for a failed Deployment. The revert is applied, the claim goes back, and once Ready again
// the release is healthy at the revert.
func TestCustomResourceFailedIsReverted(t *testing.T) {
	g := NewWithT(t)
	installDatabaseCRD(t)
	ns := newNamespace(t)
	repo := newRepo(t, ns, map[string]string{"app/database.yaml": databaseYAML("orders", "1")})
	obj := newRelease(t, ns, repo, "app", withDatabaseHealth, func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Timeout = &metav1.Duration{Duration: 10 * time.Minute}
	})

	// Applied, no status yet: in progress, saying what it waits for.
	pending := waitFor(t, obj, v1alpha1.HealthyCondition, metav1.ConditionUnknown, v1alpha1.HealthCheckPendingReason, time.Minute)
	g.Expect(condition(pending, v1alpha1.HealthyCondition).Message).To(ContainSubstring(
		"Database/" + ns + "/orders: no status yet (healthCheckExprs[0].inProgress reads it)"))
	reportDatabase(t, ns, "orders", "1", "", "True", "Provisioned", "")
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)

	bad := commit(t, repo, "Migrate orders to schema 2", map[string]string{"app/database.yaml": databaseYAML("orders", "2")})
	reconcileNow(t, obj)
	reportDatabase(t, ns, "orders", "2", "", "False", "MigrationFailed", "column total has nulls")
	start := time.Now()

	var revert string
	g.Eventually(func(g Gomega) {
		revert = branchHead(g, repo)
		g.Expect(revert).NotTo(Equal(bad))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	t.Logf("revert pushed %s after the failure was reported (timeout 10m)", time.Since(start).Round(time.Millisecond))
	g.Expect(repo.Git("pull", "-q", "--ff-only", "origin", "main")).To(Succeed())
	msg, err := repo.Output("log", "-1", "--format=%B")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(msg).To(HavePrefix("Revert \"Migrate orders to schema 2\"\n\nThis reverts commit " + bad + ".\n"))
	g.Expect(msg).To(ContainSubstring("Failed-Revision: " + bad + "\nReason: revision main@sha1:" + bad + " failed its health check: failed: Database/" + ns +
		"/orders: healthCheckExprs[0].failed is true (Ready: False, MigrationFailed, column total has nulls)"))

	// The revert is applied: the claim is back at schema 1, in progress until its controller
	// looks at it again (observedGeneration), then healthy.
	g.Eventually(func(g Gomega) {
		v, _, _ := unstructured.NestedString(database(g, ns, "orders").Object, "spec", "schemaVersion")
		g.Expect(v).To(Equal("1"))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	reportDatabase(t, ns, "orders", "1", "", "True", "Provisioned", "")
	cur := waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(cur.Status.LastAppliedRevision).To(Equal("main@sha1:" + revert))
	g.Expect(cur.Status.History[1].Revision).To(Equal("main@sha1:" + bad))
	g.Expect(cur.Status.History[1].Result).To(Equal(v1alpha1.ReleaseFailed))
	g.Expect(cur.Status.History[1].RevertedBy).To(Equal(revert))
	g.Expect(condition(cur, v1alpha1.RolledBackCondition).Reason).To(Equal(v1alpha1.RevertPushedReason))
	checkKstatus(t, cur, status.CurrentStatus)
}

// TestCustomResourceBecomesHealthy: inProgress true holds the rollout; once current is
// true the release is healthy.
func TestCustomResourceBecomesHealthy(t *testing.T) {
	g := NewWithT(t)
	installDatabaseCRD(t)
	ns := newNamespace(t)
	repo := newRepo(t, ns, map[string]string{"app/database.yaml": databaseYAML("users", "1")})
	obj := newRelease(t, ns, repo, "app", withDatabaseHealth)

	// The failed expression is true too, but inProgress goes first (Flux's order).
	reportDatabase(t, ns, "users", "1", "Provisioning", "False", "MigrationFailed", "not yet")
	g.Eventually(func(g Gomega) {
		c := condition(get(g.(*WithT), obj), v1alpha1.HealthyCondition)
		g.Expect(c.Status).To(Equal(metav1.ConditionUnknown))
		g.Expect(c.Message).To(ContainSubstring("Database/" + ns + "/users: healthCheckExprs[0].inProgress is true"))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())

	reportDatabase(t, ns, "users", "1", "Ready", "True", "Provisioned", "")
	cur := waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(condition(cur, v1alpha1.HealthyCondition).Reason).To(Equal(v1alpha1.HealthySucceededReason))
	g.Expect(cur.Status.History[0].Result).To(Equal(v1alpha1.ReleaseHealthy))
	checkKstatus(t, cur, status.CurrentStatus)
}

// TestHealthChecksWaitForObjects: spec.healthChecks names a Database the release does not
// apply (another team's claim): the release waits for it, naming it while it does not
// exist, and judges it by healthCheckExprs once it does.
func TestHealthChecksWaitForObjects(t *testing.T) {
	g := NewWithT(t)
	installDatabaseCRD(t)
	ns := newNamespace(t)
	repo := newRepo(t, ns, map[string]string{"app/configmap.yaml": configMapYAML})
	obj := newRelease(t, ns, repo, "app", withDatabaseHealth, func(o *v1alpha1.ImmutableRelease) {
		o.Spec.HealthChecks = []meta.NamespacedObjectKindReference{{APIVersion: "health.example.com/v1", Kind: "Database", Name: "shared"}}
	})

	pending := waitFor(t, obj, v1alpha1.HealthyCondition, metav1.ConditionUnknown, v1alpha1.HealthCheckPendingReason, time.Minute)
	g.Expect(condition(pending, v1alpha1.HealthyCondition).Message).To(ContainSubstring("Database/" + ns + "/shared: not found"))
	g.Expect(condition(pending, meta.ReadyCondition).Message).To(ContainSubstring("Database/" + ns + "/shared: not found"))

	shared := &unstructured.Unstructured{}
	g.Expect(yaml.Unmarshal([]byte(databaseYAML("shared", "1")), &shared.Object)).To(Succeed())
	shared.SetNamespace(ns)
	g.Expect(k8s.Create(ctx, shared)).To(Succeed())
	reportDatabase(t, ns, "shared", "1", "", "True", "Provisioned", "")
	cur := waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	checkKstatus(t, cur, status.CurrentStatus)
}

// TestHealthChecksConfined: a release that acts as the operator may not read the health of
// objects outside its own namespace: naming one is refused before anything is applied.
func TestHealthChecksConfined(t *testing.T) {
	tests := []struct {
		name    string
		ref     meta.NamespacedObjectKindReference
		message string
	}{
		{name: "another namespace", ref: meta.NamespacedObjectKindReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "coredns", Namespace: "kube-system"},
			message: `spec.healthChecks[0] names Deployment/kube-system/coredns: namespace "kube-system" is not the release's own namespace`},
		{name: "cluster-scoped", ref: meta.NamespacedObjectKindReference{APIVersion: "v1", Kind: "Node", Name: "fake-node"},
			message: "spec.healthChecks[0] names Node/fake-node: a cluster-scoped object"},
		{name: "the operator's own", ref: meta.NamespacedObjectKindReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "manager", Namespace: "immutable-release-system"},
			message: `namespace "immutable-release-system" is the operator's`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := NewWithT(t)
			ns := newNamespace(t)
			repo := newRepo(t, ns, map[string]string{"app/configmap.yaml": configMapYAML})
			obj := newRelease(t, ns, repo, "app", func(o *v1alpha1.ImmutableRelease) {
				o.Spec.HealthChecks = []meta.NamespacedObjectKindReference{tt.ref}
			})
			refused := waitFor(t, obj, meta.StalledCondition, metav1.ConditionTrue, tenancy.ReasonAccessDenied, time.Minute)
			g.Expect(condition(refused, meta.StalledCondition).Message).To(ContainSubstring(tt.message))
			g.Expect(refused.Status.Inventory).To(BeNil(), "nothing applied")
			checkKstatus(t, refused, status.FailedStatus)
		})
	}
}

// TestInvalidHealthCheckExpr: what the API server can tell is refused at admission; an
// expression that does not compile stalls the release, naming the entry's field and kind,
// before anything is applied.
func TestInvalidHealthCheckExpr(t *testing.T) {
	g := NewWithT(t)
	installDatabaseCRD(t)
	ns := newNamespace(t)
	repo := newRepo(t, ns, map[string]string{"app/database.yaml": databaseYAML("orders", "1")})

	refusedAtAdmission := []struct {
		name    string
		exprs   []kustomize.CustomHealthCheck
		message string
	}{
		{name: "empty current", exprs: []kustomize.CustomHealthCheck{{APIVersion: "health.example.com/v1", Kind: "Database"}},
			message: "healthCheckExprs[].current is required"},
		{name: "too long", exprs: []kustomize.CustomHealthCheck{{APIVersion: "health.example.com/v1", Kind: "Database",
			HealthCheckExpressions: kustomize.HealthCheckExpressions{Current: "true", Failed: strings.Repeat("true && ", 200) + "true"}}},
			message: "a healthCheckExprs expression may be at most 1024 characters long"},
		{name: "too many", exprs: func() []kustomize.CustomHealthCheck {
			var out []kustomize.CustomHealthCheck
			for range 17 {
				out = append(out, databaseHealth)
			}
			return out
		}(), message: "must have at most 16 items"},
	}
	for _, tt := range refusedAtAdmission {
		rel := &v1alpha1.ImmutableRelease{
			ObjectMeta: metav1.ObjectMeta{Name: "refused", Namespace: ns},
			Spec: v1alpha1.ImmutableReleaseSpec{
				Git:              v1alpha1.GitSource{URL: repo.URL(), Ref: v1alpha1.GitReference{Branch: "main"}},
				HealthCheckExprs: tt.exprs,
			},
		}
		err := k8s.Create(ctx, rel)
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%s: %v", tt.name, err)
		g.Expect(err.Error()).To(ContainSubstring(tt.message), tt.name)
	}

	obj := newRelease(t, ns, repo, "app", func(o *v1alpha1.ImmutableRelease) {
		bad := databaseHealth
		bad.Failed = "status.conditions.exists(c, c.type == 'Ready' &&)"
		o.Spec.HealthCheckExprs = []kustomize.CustomHealthCheck{bad}
	})
	refused := waitFor(t, obj, meta.StalledCondition, metav1.ConditionTrue, v1alpha1.InvalidHealthCheckExprReason, time.Minute)
	g.Expect(condition(refused, meta.StalledCondition).Message).To(MatchRegexp(
		`^spec\.healthCheckExprs\[0\]\.failed \(health\.example\.com/v1 Database\): does not parse: 1:\d+: Syntax error: .*; nothing of this spec is applied until it is fixed$`))
	g.Expect(condition(refused, meta.ReadyCondition).Reason).To(Equal(v1alpha1.InvalidHealthCheckExprReason))
	g.Expect(refused.Status.Inventory).To(BeNil(), "nothing applied")
	checkKstatus(t, refused, status.FailedStatus)

	// Fixed, it applies.
	live := get(g, obj)
	live.Spec.HealthCheckExprs = []kustomize.CustomHealthCheck{databaseHealth}
	g.Expect(k8s.Update(ctx, live)).To(Succeed())
	reportDatabase(t, ns, "orders", "1", "", "True", "Provisioned", "")
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
}

// TestHealthCheckObject: a spec.healthChecks entry names its object as an applied object is
// named: the release's namespace when it names none, none for a cluster-scoped kind, the
// preferred version when it names none, and left as written for a kind not served.
func TestHealthCheckObject(t *testing.T) {
	mapper := apimeta.NewDefaultRESTMapper([]schema.GroupVersion{{Version: "v1"}, {Group: "health.example.com", Version: "v1"}})
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, apimeta.RESTScopeNamespace)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, apimeta.RESTScopeRoot)
	mapper.Add(schema.GroupVersionKind{Group: "health.example.com", Version: "v1", Kind: "Database"}, apimeta.RESTScopeNamespace)
	tests := []struct {
		ref              meta.NamespacedObjectKindReference
		apiVersion, want string
	}{
		{ref: meta.NamespacedObjectKindReference{Kind: "ConfigMap", Name: "settings"}, apiVersion: "v1", want: "ConfigMap/shop/settings"},
		{ref: meta.NamespacedObjectKindReference{APIVersion: "v1", Kind: "Namespace", Name: "shop", Namespace: "other"}, apiVersion: "v1", want: "Namespace/shop"},
		{ref: meta.NamespacedObjectKindReference{APIVersion: "health.example.com/v1", Kind: "Database", Name: "orders", Namespace: "data"},
			apiVersion: "health.example.com/v1", want: "Database/data/orders"},
		{ref: meta.NamespacedObjectKindReference{APIVersion: "serving.knative.dev/v1", Kind: "Service", Name: "web"},
			apiVersion: "serving.knative.dev/v1", want: "Service/shop/web"},
	}
	for _, tt := range tests {
		g := NewWithT(t)
		o, err := healthCheckObject(mapper, "shop", tt.ref)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(o.GetAPIVersion()).To(Equal(tt.apiVersion))
		g.Expect(manifest.ObjectName(o)).To(Equal(tt.want))
	}
}
