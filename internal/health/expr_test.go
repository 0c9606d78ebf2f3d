package health

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// widgetExprs judge Widgets by their Ready condition, as Flux's documentation writes such
// expressions.
var widgetExprs = kustomize.CustomHealthCheck{
	APIVersion: "example.com/v1",
	Kind:       "Widget",
	HealthCheckExpressions: kustomize.HealthCheckExpressions{
		InProgress: "has(status.phase) && status.phase == 'Provisioning'",
		Failed:     "status.conditions.exists(c, c.type == 'Ready' && c.status == 'False' && c.reason == 'Failed')",
		Current:    "status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')",
	},
}

// widget is a Widget of generation 2 with status (nil: none).
func widget(status map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1",
		"kind":       "Widget",
		"metadata":   map[string]any{"name": "blue", "namespace": "shop", "generation": int64(2)},
		"spec":       map[string]any{"color": "blue"},
	}}
	if status != nil {
		u.Object["status"] = status
	}
	return u
}

func ready(st, reason, message string) map[string]any {
	return map[string]any{"observedGeneration": int64(2), "conditions": []any{
		map[string]any{"type": "Ready", "status": st, "reason": reason, "message": message},
	}}
}

// bomb makes a string ten times longer at each of its nine replaces: 10 GB, unless its
// cost is counted.
func bomb(target string) string {
	return target + strings.Repeat(".replace('a', 'aaaaaaaaaa')", 9) + " == ''"
}

func TestExprVerdicts(t *testing.T) {
	tests := []struct {
		name   string
		checks []kustomize.CustomHealthCheck
		obj    *unstructured.Unstructured
		// judged false: no entry judges the object; kstatus does.
		judged bool
		want   status.Status
		// message is contained in the verdict's message.
		message string
		// flux: Flux's own evaluator (fluxcd/pkg/runtime/cel) gives the same status.
		flux bool
	}{
		{name: "current", obj: widget(ready("True", "Succeeded", "")), judged: true,
			want: status.CurrentStatus, flux: true},
		{name: "failed", obj: widget(ready("False", "Failed", "the backend refused the claim")), judged: true,
			want: status.FailedStatus, message: "healthCheckExprs[0].failed is true (Ready: False, Failed, the backend refused the claim)", flux: true},
		{name: "inProgress goes first", obj: widget(map[string]any{"observedGeneration": int64(2), "phase": "Provisioning",
			"conditions": []any{map[string]any{"type": "Ready", "status": "False", "reason": "Failed"}}}), judged: true,
			want: status.InProgressStatus, message: "healthCheckExprs[0].inProgress is true", flux: true},
		{name: "none true", obj: widget(ready("False", "Waiting", "")), judged: true,
			want: status.InProgressStatus, message: "healthCheckExprs[0].current is not true yet", flux: true},
		{name: "status of an older generation", obj: widget(map[string]any{"observedGeneration": int64(1),
			"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}}), judged: true,
			want: status.InProgressStatus, message: "Widget generation is 2, but latest observed generation is 1", flux: true},
		{name: "no status yet", obj: widget(nil), judged: true,
			want: status.InProgressStatus, message: "no status yet (healthCheckExprs[0].inProgress reads it)"},
		{name: "no match", obj: func() *unstructured.Unstructured {
			u := widget(ready("True", "", ""))
			u.SetKind("Gadget")
			return u
		}(), judged: false},
		{name: "an entry without kind judges its whole group",
			checks: []kustomize.CustomHealthCheck{{APIVersion: "example.com/v1", HealthCheckExpressions: kustomize.HealthCheckExpressions{
				Current: "status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')"}}},
			obj: widget(ready("True", "", "")), judged: true, want: status.CurrentStatus, flux: true},
		{name: "evaluation error",
			checks: []kustomize.CustomHealthCheck{{APIVersion: "example.com/v1", Kind: "Widget", HealthCheckExpressions: kustomize.HealthCheckExpressions{
				Current: "status.conditions[3].status == 'True'"}}},
			obj: widget(ready("True", "", "")), judged: true, want: status.InProgressStatus, message: "healthCheckExprs[0].current: index out of bounds: 3"},
		{name: "a field of another type",
			checks: []kustomize.CustomHealthCheck{{APIVersion: "example.com/v1", Kind: "Widget", HealthCheckExpressions: kustomize.HealthCheckExpressions{
				Current: "status.observedGeneration"}}},
			obj: widget(ready("True", "", "")), judged: true, want: status.InProgressStatus, message: "healthCheckExprs[0].current: gave int 2, not a bool"},
		{name: "an expression that makes 10 GB",
			checks: []kustomize.CustomHealthCheck{{APIVersion: "example.com/v1", Kind: "Widget", HealthCheckExpressions: kustomize.HealthCheckExpressions{
				Current: "true", Failed: bomb("(spec.color + 'a')")}}},
			obj: widget(ready("True", "", "")), judged: true, want: status.InProgressStatus,
			message: "healthCheckExprs[0].failed: costs more than the 100000 an evaluation may (CEL cost units)"},
		{name: "a loop of a million steps",
			checks: []kustomize.CustomHealthCheck{{APIVersion: "example.com/v1", Kind: "Widget", HealthCheckExpressions: kustomize.HealthCheckExpressions{
				Current: "[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, [0,1,2,3,4,5,6,7,8,9].all(c, " +
					"[0,1,2,3,4,5,6,7,8,9].all(d, [0,1,2,3,4,5,6,7,8,9].all(e, [0,1,2,3,4,5,6,7,8,9].all(f, a+b+c+d+e+f >= 0))))))"}}},
			obj: widget(ready("True", "", "")), judged: true, want: status.InProgressStatus, message: "costs more than the 100000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			checks := tt.checks
			if checks == nil {
				checks = []kustomize.CustomHealthCheck{widgetExprs}
			}
			exprs, err := CompileExprs(checks)
			g.Expect(err).NotTo(HaveOccurred())
			res, judged := exprs.judge(context.Background(), tt.obj, newBudget())
			g.Expect(judged).To(Equal(tt.judged))
			if !tt.judged {
				return
			}
			g.Expect(res.Status).To(Equal(tt.want), res.Message)
			g.Expect(res.Message).To(ContainSubstring(tt.message))
			if tt.flux {
				reader, err := fluxcel.NewStatusReader(checks)
				g.Expect(err).NotTo(HaveOccurred())
				gk := tt.obj.GroupVersionKind().GroupKind()
				g.Expect(reader(nil).Supports(gk)).To(BeTrue())
				ev, err := fluxcel.NewStatusEvaluator(&checks[0].HealthCheckExpressions)
				g.Expect(err).NotTo(HaveOccurred())
				flux, err := ev.Evaluate(context.Background(), tt.obj)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(string(flux.Status)).To(Equal(string(res.Status)), "Flux judges it otherwise")
			}
		})
	}
}

// TestCompileExprs: an entry that cannot be used is refused, naming its field and kind.
func TestCompileExprs(t *testing.T) {
	entry := func(current, failed string) kustomize.CustomHealthCheck {
		return kustomize.CustomHealthCheck{APIVersion: "example.com/v1", Kind: "Widget",
			HealthCheckExpressions: kustomize.HealthCheckExpressions{Current: current, Failed: failed}}
	}
	const ok = "status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')"
	tests := []struct {
		name   string
		checks []kustomize.CustomHealthCheck
		field  string
		err    string
	}{
		{name: "Flux's library", checks: []kustomize.CustomHealthCheck{
			entry(ok, "sets.contains(status.reasons, ['Failed']) || base64.encode(b'x') == 'eA==' || type(status.phase) == string"),
			{APIVersion: "other.example.com/v1", HealthCheckExpressions: kustomize.HealthCheckExpressions{
				Current:    "status.?phase.orValue('') == 'Ready' && status.conditions.map(c, c.type).join(',') == 'Ready'",
				InProgress: "status.conditions.filter(c, c.type == 'Ready').all(c, c.status == 'Unknown')"}},
		}},
		{name: "syntax", checks: []kustomize.CustomHealthCheck{entry(ok, "status.")},
			field: "healthCheckExprs[0].failed", err: "spec.healthCheckExprs[0].failed (example.com/v1 Widget): does not parse: 1:8: Syntax error"},
		{name: "types", checks: []kustomize.CustomHealthCheck{entry("1 == 'one'", "")},
			field: "healthCheckExprs[0].current", err: "does not compile: 1:3: found no matching overload for '_==_' applied to '(int, string)'"},
		{name: "not a bool", checks: []kustomize.CustomHealthCheck{entry("'Ready'", "")},
			field: "healthCheckExprs[0].current", err: "gives a value of type string, not a bool"},
		{name: "a size, not a bool", checks: []kustomize.CustomHealthCheck{entry(ok, "size(status.conditions)")},
			field: "healthCheckExprs[0].failed", err: "gives a value of type int, not a bool"},
		{name: "unknown function", checks: []kustomize.CustomHealthCheck{entry("status.ready.isTrue()", "")},
			field: "healthCheckExprs[0].current", err: "undeclared reference to 'isTrue'"},
		{name: "no current", checks: []kustomize.CustomHealthCheck{entry("", "true")},
			field: "healthCheckExprs[0].current", err: "is required"},
		{name: "too long", checks: []kustomize.CustomHealthCheck{entry(ok+strings.Repeat(" && true", 200), "")},
			field: "healthCheckExprs[0].current", err: "characters long, more than 1024"},
		{name: "twice the same kind", checks: []kustomize.CustomHealthCheck{entry(ok, ""), entry("true", "")},
			field: "healthCheckExprs[1]", err: "an earlier entry judges the same group and kind"},
		{name: "not an API version", checks: []kustomize.CustomHealthCheck{{APIVersion: "a/b/c", Kind: "Widget",
			HealthCheckExpressions: kustomize.HealthCheckExpressions{Current: "true"}}},
			field: "healthCheckExprs[0].apiVersion", err: `not an API version: "a/b/c"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := CompileExprs(tt.checks)
			if tt.err == "" {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			var ee *ExprError
			g.Expect(errors.As(err, &ee)).To(BeTrue(), "%v", err)
			g.Expect(ee.Field).To(Equal(tt.field))
			g.Expect(err.Error()).To(ContainSubstring(tt.err))
			g.Expect(err.Error()).NotTo(ContainSubstring("\n"))
		})
	}
}

// TestExprReads: the fields an expression reads are the object's top-level fields it
// names, not the names its comprehensions bind nor the libraries and types it calls.
func TestExprReads(t *testing.T) {
	g := NewWithT(t)
	env, err := baseEnv()
	g.Expect(err).NotTo(HaveOccurred())
	x, err := compile(env, "current", "status.conditions.exists(c, c.type == 'Ready') && sets.contains(spec.l, ['a']) && "+
		"type(metadata) == map && [1].all(status, status > 0)")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(x.reads).To(Equal([]string{"metadata", "spec", "status"}))
}

// TestCheckCostBudget: one Check spends at most CheckCostBudget on expressions, however
// many objects of the kind a release has: the rest wait, with why.
func TestCheckCostBudget(t *testing.T) {
	g := NewWithT(t)
	// Each evaluation costs about 37,000: the budget of 1,000,000 is spent after 27 objects.
	exprs, err := CompileExprs([]kustomize.CustomHealthCheck{{APIVersion: "example.com/v1", Kind: "Widget",
		HealthCheckExpressions: kustomize.HealthCheckExpressions{
			Current: "[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, [0,1,2,3,4,5,6,7,8,9].all(c, [0,1,2].all(d, a+b+c+d >= 0))))"}}})
	g.Expect(err).NotTo(HaveOccurred())
	var objects []client.Object
	var applied []*unstructured.Unstructured
	for i := range 100 {
		w := widget(ready("True", "", ""))
		w.SetName("w" + strings.Repeat("x", i))
		objects = append(objects, w)
		applied = append(applied, w.DeepCopy())
	}
	c := fake.NewClientBuilder().WithObjects(objects...).Build()
	res, err := Check(context.Background(), c, applied, exprs)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Verdict).To(Equal(Progressing))
	g.Expect(len(res.Objects)).To(BeNumerically(">", 50))
	g.Expect(len(res.Objects)).To(BeNumerically("<", 80))
	g.Expect(res.Objects[0]).To(ContainSubstring("not judged: the health expressions used up the cost budget of one health check (1000000) on other objects"))
}

// TestCheckCustomResources: Check judges custom resources by their expressions, and names
// what it cannot find: an object that does not exist, a kind not served.
func TestCheckCustomResources(t *testing.T) {
	exprs, err := CompileExprs([]kustomize.CustomHealthCheck{widgetExprs})
	if err != nil {
		t.Fatal(err)
	}
	key := func(name string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("example.com/v1")
		u.SetKind("Widget")
		u.SetNamespace("shop")
		u.SetName(name)
		return u
	}
	tests := []struct {
		name    string
		reader  client.Reader
		verdict Verdict
		objects []string
	}{
		{name: "healthy", reader: fake.NewClientBuilder().WithObjects(widget(ready("True", "", ""))).Build(), verdict: Healthy},
		{name: "failed", reader: fake.NewClientBuilder().WithObjects(widget(ready("False", "Failed", "quota exceeded"))).Build(),
			verdict: Failed, objects: []string{"Widget/shop/blue: healthCheckExprs[0].failed is true (Ready: False, Failed, quota exceeded)"}},
		{name: "missing", reader: fake.NewClientBuilder().Build(), verdict: Progressing, objects: []string{"Widget/shop/blue: not found"}},
		{name: "kind not served", reader: noMatch{}, verdict: Progressing,
			objects: []string{"Widget/shop/blue: the API server does not serve example.com/v1 Widget"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			res, err := Check(context.Background(), tt.reader, []*unstructured.Unstructured{key("blue")}, exprs)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res.Verdict).To(Equal(tt.verdict), res.Message())
			g.Expect(res.Objects).To(Equal(tt.objects))
		})
	}
}

// noMatch is an API server that serves no custom resource.
type noMatch struct{ client.Reader }

func (noMatch) Get(_ context.Context, _ client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	gvk := obj.GetObjectKind().GroupVersionKind()
	return &meta.NoKindMatchError{GroupKind: gvk.GroupKind(), SearchedVersions: []string{gvk.Version}}
}

// FuzzExprs: whatever a tenant writes as an expression, compiling it and evaluating what
// compiles on a custom resource returns a verdict or an error, never a panic.
func FuzzExprs(f *testing.F) {
	for _, seed := range []string{
		widgetExprs.Current, widgetExprs.Failed, widgetExprs.InProgress, "status.", "1 == 'one'", "'Ready'",
		"status.conditions[3].status == 'True'", bomb("(spec.color + 'a')"), "[1].all(status, status > 0)",
		"sets.contains(status.l, ['a'])", "status.?phase.orValue('') == 'Ready'", "type(metadata) == map",
	} {
		f.Add(seed)
	}
	obj := widget(ready("False", "Failed", "quota exceeded"))
	f.Fuzz(func(t *testing.T, expr string) {
		exprs, err := CompileExprs([]kustomize.CustomHealthCheck{{APIVersion: "example.com/v1", Kind: "Widget",
			HealthCheckExpressions: kustomize.HealthCheckExpressions{Current: "true", Failed: expr}}})
		if err != nil {
			var ee *ExprError
			if !errors.As(err, &ee) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("not a one-line ExprError: %v", err)
			}
			return
		}
		res, judged := exprs.judge(context.Background(), obj.DeepCopy(), newBudget())
		if !judged || res == nil {
			t.Fatal("a Widget was not judged")
		}
	})
}
