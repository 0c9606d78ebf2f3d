package docs

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/cel"
	. "github.com/onsi/gomega"
	lua "github.com/yuin/gopher-lua"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/immutable-release/operator/api/v1alpha1"
)

const (
	good   = "main@sha1:1111111111111111111111111111111111111111"
	bad    = "main@sha1:2222222222222222222222222222222222222222"
	revert = "3333333333333333333333333333333333333333"
	next   = "main@sha1:4444444444444444444444444444444444444444"
)

// TestHealthChecks runs the health checks the Flux and Argo CD guide tells people to
// install against a release in every state the operator writes:
//   - docs/guides/argocd-health.lua as Argo CD runs it (gopher-lua, the object as a table in
//     the global obj, the script's return value read from the stack);
//   - the healthCheckExprs of the guide's Flux Kustomization, through Flux's own CEL status
//     evaluator (fluxcd/pkg/runtime/cel);
//   - plain kstatus, Flux's default.
//
// So the guide's table is true row by row.
func TestHealthChecks(t *testing.T) {
	script, err := os.ReadFile(filepath.Join("guides", "argocd-health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	flux := fluxEvaluator(t)
	cases := []struct {
		name    string
		release *v1alpha1.ImmutableRelease
		argo    string
		message string
		kstatus status.Status
		flux    status.Status
	}{
		{
			name:    "new, no status yet",
			release: release(1, 0),
			argo:    "Progressing", message: "Waiting for the operator to report status",
			// kstatus counts an object without status as Current: see the Flux guide.
			kstatus: status.CurrentStatus, flux: status.InProgressStatus,
		},
		{
			name: "ready",
			release: release(2, 2, applied(good),
				cond(meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, "Applied revision "+good),
				cond(v1alpha1.HealthyCondition, metav1.ConditionTrue, v1alpha1.HealthySucceededReason, "all objects of "+good+" are healthy")),
			argo: "Healthy", message: "Applied revision " + good,
			kstatus: status.CurrentStatus, flux: status.CurrentStatus,
		},
		{
			name: "spec changed, not reconciled yet",
			release: release(2, 2, applied(good),
				cond(meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, "Applied revision "+good),
				generation(3)),
			argo: "Progressing", message: "Waiting for the operator to reconcile generation 3",
			kstatus: status.InProgressStatus, flux: status.InProgressStatus,
		},
		{
			name: "rolling out",
			release: release(2, 1, applied(good),
				cond(meta.ReadyCondition, metav1.ConditionUnknown, v1alpha1.ProgressingReason, "rolling out "+good+": Deployment/shop/web: 1 of 2 updated replicas are available"),
				cond(meta.ReconcilingCondition, metav1.ConditionTrue, v1alpha1.ProgressingReason, "rolling out "+good),
				cond(v1alpha1.HealthyCondition, metav1.ConditionUnknown, v1alpha1.HealthCheckPendingReason, "rolling out "+good)),
			argo: "Progressing", message: "Progressing: rolling out " + good + ": Deployment/shop/web: 1 of 2 updated replicas are available",
			kstatus: status.InProgressStatus, flux: status.InProgressStatus,
		},
		{
			name: "retrying a failure",
			release: release(2, 1, applied(good),
				cond(meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.GitOperationFailedReason, "listing https://git.example.com/acme/shop.git: authentication required"),
				cond(meta.ReconcilingCondition, metav1.ConditionTrue, v1alpha1.ProgressingWithRetryReason, "retrying: listing ...")),
			argo: "Degraded", message: "GitOperationFailed: listing https://git.example.com/acme/shop.git: authentication required",
			kstatus: status.InProgressStatus, flux: status.InProgressStatus,
		},
		{
			name: "stalled",
			release: release(2, 2, applied(good),
				cond(meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.ImageNotPinnedReason, "revision "+bad+": images must be pinned by sha256 digest"),
				cond(meta.StalledCondition, metav1.ConditionTrue, v1alpha1.ImageNotPinnedReason, "revision "+bad+": images must be pinned by sha256 digest")),
			argo: "Degraded", message: "ImageNotPinned: revision " + bad + ": images must be pinned by sha256 digest",
			kstatus: status.FailedStatus, flux: status.FailedStatus,
		},
		{
			name: "suspended",
			release: suspended(release(3, 3, applied(good),
				cond(meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, "Applied revision "+good))),
			argo: "Suspended", message: "spec.suspend is true: nothing is fetched or applied",
			kstatus: status.CurrentStatus, flux: status.CurrentStatus,
		},
		{
			name: "failed health check, revert pushed, not applied yet",
			release: rolledBack(release(2, 2, applied(bad),
				cond(meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.HealthCheckFailedReason, "revision "+bad+" did not become healthy within 5m0s"),
				cond(meta.StalledCondition, metav1.ConditionTrue, v1alpha1.HealthCheckFailedReason, "revision "+bad+" did not become healthy within 5m0s"),
				cond(v1alpha1.RolledBackCondition, metav1.ConditionTrue, v1alpha1.RevertPushedReason, "revision "+bad+" reverted by commit "+revert+" in Git"))),
			argo: "Degraded", message: "HealthCheckFailed: revision " + bad + " did not become healthy within 5m0s",
			kstatus: status.FailedStatus, flux: status.FailedStatus,
		},
		{
			name: "rolled back: running the revert",
			release: withHistory(rolledBack(release(2, 2, applied("main@sha1:"+revert),
				cond(meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, "Applied revision main@sha1:"+revert),
				cond(v1alpha1.RolledBackCondition, metav1.ConditionTrue, v1alpha1.RevertPushedReason, "revision "+bad+" reverted by commit "+revert+" in Git"))),
				"main@sha1:"+revert, v1alpha1.ReleaseHealthy, bad, v1alpha1.ReleaseFailed, good, v1alpha1.ReleaseHealthy),
			argo: "Degraded", message: "RolledBack: revision " + bad + " failed and was reverted in Git by commit " + revert + "; push a fix to release again",
			kstatus: status.CurrentStatus, flux: status.CurrentStatus,
		},
		{
			name: "rolled back, then a fix applied",
			release: withHistory(rolledBack(release(2, 2, applied(next),
				cond(meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, "Applied revision "+next),
				cond(v1alpha1.RolledBackCondition, metav1.ConditionTrue, v1alpha1.RevertPushedReason, "revision "+bad+" reverted by commit "+revert+" in Git"))),
				next, v1alpha1.ReleaseHealthy, "main@sha1:"+revert, v1alpha1.ReleaseHealthy, bad, v1alpha1.ReleaseFailed),
			argo: "Healthy", message: "Applied revision " + next,
			kstatus: status.CurrentStatus, flux: status.CurrentStatus,
		},
		{
			name: "manual rollback (kubectl release rollback): the reverted revision did not fail",
			release: withHistory(rolledBack(release(2, 2, applied("main@sha1:"+revert),
				cond(meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, "Applied revision main@sha1:"+revert),
				cond(v1alpha1.RolledBackCondition, metav1.ConditionTrue, v1alpha1.RevertPushedReason, "revision "+bad+" reverted by commit "+revert+" in Git"))),
				"main@sha1:"+revert, v1alpha1.ReleaseHealthy, bad, v1alpha1.ReleaseHealthy),
			argo: "Healthy", message: "Applied revision main@sha1:" + revert,
			kstatus: status.CurrentStatus, flux: status.CurrentStatus,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			gotStatus, gotMessage := argoHealth(g, string(script), asJSON(g, tc.release))
			g.Expect(gotStatus).To(Equal(tc.argo))
			g.Expect(gotMessage).To(Equal(tc.message))

			u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(tc.release)
			g.Expect(err).NotTo(HaveOccurred())
			res, err := status.Compute(&unstructured.Unstructured{Object: u})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res.Status).To(Equal(tc.kstatus), res.Message)

			res, err = flux.Evaluate(context.Background(), &unstructured.Unstructured{Object: u})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res.Status).To(Equal(tc.flux), "Flux healthCheckExprs")
		})
	}
}

// fluxEvaluator is Flux's evaluator of the healthCheckExprs for ImmutableRelease in the
// guide's Kustomization.
func fluxEvaluator(t *testing.T) *cel.StatusEvaluator {
	t.Helper()
	for _, doc := range yamlDocs(t, filepath.Join("guides", "flux-and-argo.md")) {
		if !strings.Contains(doc.text, "kind: Kustomization") {
			continue
		}
		k := &kustomizev1.Kustomization{}
		if err := yaml.UnmarshalStrict([]byte(doc.text), k); err != nil {
			t.Fatalf("%s: %v", doc.where, err)
		}
		for _, hc := range k.Spec.HealthCheckExprs {
			if hc.APIVersion == v1alpha1.GroupVersion.String() && hc.Kind == v1alpha1.ImmutableReleaseKind {
				ev, err := cel.NewStatusEvaluator(&hc.HealthCheckExpressions)
				if err != nil {
					t.Fatalf("%s: %v", doc.where, err)
				}
				return ev
			}
		}
	}
	t.Fatal("the Flux guide has no Kustomization with healthCheckExprs for ImmutableRelease")
	return nil
}

// argoHealth runs the health script as Argo CD does and returns hs.status and hs.message.
func argoHealth(g Gomega, script string, obj map[string]any) (string, string) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	// The libraries Argo CD opens for health scripts.
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, obj))
	g.Expect(L.DoString(script)).To(Succeed())
	hs, ok := L.Get(-1).(*lua.LTable)
	g.Expect(ok).To(BeTrue(), "the script returns a table")
	st, msg := hs.RawGetString("status"), hs.RawGetString("message")
	g.Expect(st.Type()).To(Equal(lua.LTString))
	g.Expect([]string{"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}).To(ContainElement(st.String()))
	return st.String(), msg.String()
}

// toLua turns decoded JSON into Lua values: objects and arrays become tables, numbers
// LNumber, as Argo CD does.
func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := L.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	case []any:
		t := L.NewTable()
		for _, e := range v {
			t.Append(toLua(L, e))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	default:
		return lua.LNil
	}
}

// asJSON is the object as Argo CD's Lua sees it: decoded JSON, numbers as float64.
func asJSON(g Gomega, obj *v1alpha1.ImmutableRelease) map[string]any {
	data, err := json.Marshal(obj)
	g.Expect(err).NotTo(HaveOccurred())
	var m map[string]any
	g.Expect(json.Unmarshal(data, &m)).To(Succeed())
	return m
}

func release(generation, observed int64, opts ...func(*v1alpha1.ImmutableRelease)) *v1alpha1.ImmutableRelease {
	obj := &v1alpha1.ImmutableRelease{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.ImmutableReleaseKind},
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "shop", Generation: generation},
		Spec: v1alpha1.ImmutableReleaseSpec{
			Git:  v1alpha1.GitSource{URL: "https://git.example.com/acme/shop.git", Ref: v1alpha1.GitReference{Branch: "main"}},
			Path: "./deploy/prod",
		},
	}
	obj.Status.ObservedGeneration = observed
	for _, o := range opts {
		o(obj)
	}
	return obj
}

func applied(revision string) func(*v1alpha1.ImmutableRelease) {
	return func(obj *v1alpha1.ImmutableRelease) {
		obj.Status.LastAttemptedRevision, obj.Status.LastAppliedRevision = revision, revision
	}
}

func cond(typ string, st metav1.ConditionStatus, reason, message string) func(*v1alpha1.ImmutableRelease) {
	return func(obj *v1alpha1.ImmutableRelease) {
		obj.Status.Conditions = append(obj.Status.Conditions, metav1.Condition{
			Type: typ, Status: st, Reason: reason, Message: message, ObservedGeneration: obj.Generation,
			LastTransitionTime: metav1.Unix(1700000000, 0),
		})
	}
}

// generation changes the spec's generation after the conditions were written.
func generation(g int64) func(*v1alpha1.ImmutableRelease) {
	return func(obj *v1alpha1.ImmutableRelease) { obj.Generation = g }
}

func suspended(obj *v1alpha1.ImmutableRelease) *v1alpha1.ImmutableRelease {
	obj.Spec.Suspend = true
	return obj
}

func rolledBack(obj *v1alpha1.ImmutableRelease) *v1alpha1.ImmutableRelease {
	obj.Status.LastRollback = &v1alpha1.Rollback{FailedRevision: bad, RevertCommit: revert, Time: metav1.Unix(1700000000, 0)}
	return obj
}

// withHistory sets the history, newest first, from revision, result pairs.
func withHistory(obj *v1alpha1.ImmutableRelease, pairs ...any) *v1alpha1.ImmutableRelease {
	for i := 0; i+1 < len(pairs); i += 2 {
		obj.Status.History = append(obj.Status.History, v1alpha1.ReleaseRecord{
			Revision: pairs[i].(string), Result: pairs[i+1].(v1alpha1.ReleaseResult), AppliedAt: metav1.Unix(1700000000, 0)})
	}
	return obj
}
