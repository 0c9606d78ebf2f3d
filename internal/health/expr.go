package health

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/fluxcd/pkg/apis/kustomize"
	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// The bounds of spec.healthCheckExprs. A tenant writes the expressions and the operator runs
// them, so each is held to a cost, as the API server holds CRD validation rules: without
// one, `'aaaaaaaaaa'.replace('a', 'aaaaaaaaaa')` nine times over asks for 10 GB and ends
// the manager of every tenant.
const (
	// MaxExprLength is the longest expression, in characters (the CRD refuses longer ones).
	MaxExprLength = 1024
	// ExprCostLimit is the most one evaluation of one expression may cost, in CEL's cost
	// units: about a hundred thousand list elements or string bytes visited, tens of
	// milliseconds at most. Health expressions cost tens of units.
	ExprCostLimit = 100_000
	// CheckCostBudget is the most the evaluations of one Check may cost together, so that
	// many objects of a kind do not multiply an expensive expression.
	CheckCostBudget = 10 * ExprCostLimit
)

// Exprs are the compiled spec.healthCheckExprs, as Flux's Kustomization has them (Flux's
// RFC 0009): CEL expressions current, inProgress and failed per apiVersion and kind, that
// judge the custom resources kstatus cannot. The zero value and nil judge nothing.
type Exprs struct {
	byKind map[schema.GroupKind]*kindExprs
}

// kindExprs are the expressions of one entry, in the order Flux evaluates them.
type kindExprs struct {
	inProgress, failed, current *expression
}

// expression is one compiled expression.
type expression struct {
	// field names it in the spec: healthCheckExprs[0].current.
	field string
	prog  cel.Program
	// reads are the top-level fields of the object it reads (status, spec, ...).
	reads []string
}

// ExprError is an entry of spec.healthCheckExprs that cannot be used.
type ExprError struct {
	// Field is the entry's field, as healthCheckExprs[0].current, or the entry alone.
	Field string
	// Kind is the apiVersion and kind the entry judges.
	Kind string
	Err  error
}

func (e *ExprError) Error() string {
	return fmt.Sprintf("spec.%s (%s): %v", e.Field, e.Kind, e.Err)
}

func (e *ExprError) Unwrap() error { return e.Err }

// CompileExprs compiles the entries of spec.healthCheckExprs; the error is an *ExprError
// naming the first entry that does not compile, is empty, too long, not a bool, or judges
// a kind an earlier entry judges.
func CompileExprs(specs []kustomize.CustomHealthCheck) (*Exprs, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	env, err := baseEnv()
	if err != nil {
		return nil, err
	}
	out := &Exprs{byKind: map[schema.GroupKind]*kindExprs{}}
	for i, spec := range specs {
		entry := fmt.Sprintf("healthCheckExprs[%d]", i)
		kind := strings.TrimSpace(spec.APIVersion + " " + spec.Kind)
		gv, err := schema.ParseGroupVersion(spec.APIVersion)
		if err != nil || spec.APIVersion == "" {
			return nil, &ExprError{Field: entry + ".apiVersion", Kind: kind, Err: fmt.Errorf("not an API version: %q", spec.APIVersion)}
		}
		// Flux's rule: an entry without kind judges every kind of its group.
		gk := schema.GroupKind{Group: gv.Group, Kind: spec.Kind}
		if _, dup := out.byKind[gk]; dup {
			return nil, &ExprError{Field: entry, Kind: kind, Err: errors.New("an earlier entry judges the same group and kind")}
		}
		k := &kindExprs{}
		for _, e := range []struct {
			name string
			text string
			into **expression
		}{
			{"current", spec.Current, &k.current},
			{"inProgress", spec.InProgress, &k.inProgress},
			{"failed", spec.Failed, &k.failed},
		} {
			field := entry + "." + e.name
			if e.text == "" {
				if e.name == "current" {
					return nil, &ExprError{Field: field, Kind: kind, Err: errors.New("is required")}
				}
				continue
			}
			x, err := compile(env, field, e.text)
			if err != nil {
				return nil, &ExprError{Field: field, Kind: kind, Err: err}
			}
			*e.into = x
		}
		out.byKind[gk] = k
	}
	return out, nil
}

// baseEnv is the CEL environment of Flux's health expressions (fluxcd/pkg/runtime/cel's
// NewExpression), so that an expression means here what it means to Flux. It is made once.
var baseEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		cel.HomogeneousAggregateLiterals(),
		cel.EagerlyValidateDeclarations(true),
		cel.DefaultUTCTimeZone(true),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Sets(),
		ext.Encoders(),
	)
})

// compile type-checks text with every top-level field it reads declared dyn. Flux only
// parses (a custom resource may have any top-level fields); checking, with those fields
// declared, finds the overload of each call, which is what lets the cost of a call such as
// replace or join be counted by the size of what it makes.
func compile(env *cel.Env, field, text string) (*expression, error) {
	if n := len([]rune(text)); n > MaxExprLength {
		return nil, fmt.Errorf("is %d characters long, more than %d", n, MaxExprLength)
	}
	parsed, iss := env.Parse(text)
	if iss.Err() != nil {
		return nil, fmt.Errorf("does not parse: %s", errorLines(iss.Err().Error()))
	}
	idents := freeIdents(parsed.NativeRep().Expr())
	vars := make([]cel.EnvOption, 0, len(idents))
	declared := map[string]bool{}
	for name := range idents {
		// A name CEL knows already (map, int, null_type) is a type, not a field.
		if _, iss := env.Compile(name); iss.Err() == nil {
			continue
		}
		vars = append(vars, cel.Variable(name, cel.DynType))
		declared[name] = true
	}
	checkEnv, err := env.Extend(vars...)
	if err != nil {
		return nil, fmt.Errorf("cannot declare the fields it reads: %w", err)
	}
	checked, iss := checkEnv.Check(parsed)
	if iss.Err() != nil {
		return nil, fmt.Errorf("does not compile: %s", errorLines(iss.Err().Error()))
	}
	if t := checked.OutputType(); t != cel.BoolType && t != cel.DynType {
		return nil, fmt.Errorf("gives a value of type %s, not a bool", t)
	}
	// Of the names declared, those the checker took for variables are the fields read: sets
	// in sets.contains is a library's name.
	var reads []string
	refs := checked.NativeRep().ReferenceMap()
	for name, ids := range freeIdents(checked.NativeRep().Expr()) {
		if !declared[name] {
			continue
		}
		for _, id := range ids {
			if ref, ok := refs[id]; ok && ref.Value == nil && ref.Name == name {
				reads = append(reads, name)
				break
			}
		}
	}
	slices.Sort(reads)
	prog, err := checkEnv.Program(checked,
		cel.EvalOptions(cel.OptOptimize),
		cel.CostLimit(ExprCostLimit),
		// Loops look at the context this often, as the API server's do.
		cel.InterruptCheckFrequency(100),
	)
	if err != nil {
		return nil, fmt.Errorf("does not compile: %w", err)
	}
	return &expression{field: field, prog: prog, reads: reads}, nil
}

// freeIdents returns the identifiers e reads that no comprehension binds, each with the
// expressions that name it: the object's top-level fields (status, spec, metadata, ...), and
// names such as sets in sets.contains until the checker resolves them.
func freeIdents(e ast.Expr) map[string][]int64 {
	found := map[string][]int64{}
	var walk func(e ast.Expr, bound map[string]bool)
	walk = func(e ast.Expr, bound map[string]bool) {
		switch e.Kind() {
		case ast.IdentKind:
			if !bound[e.AsIdent()] {
				found[e.AsIdent()] = append(found[e.AsIdent()], e.ID())
			}
		case ast.SelectKind:
			walk(e.AsSelect().Operand(), bound)
		case ast.CallKind:
			c := e.AsCall()
			if c.IsMemberFunction() {
				walk(c.Target(), bound)
			}
			for _, a := range c.Args() {
				walk(a, bound)
			}
		case ast.ListKind:
			for _, el := range e.AsList().Elements() {
				walk(el, bound)
			}
		case ast.MapKind:
			for _, en := range e.AsMap().Entries() {
				walk(en.AsMapEntry().Key(), bound)
				walk(en.AsMapEntry().Value(), bound)
			}
		case ast.StructKind:
			for _, f := range e.AsStruct().Fields() {
				walk(f.AsStructField().Value(), bound)
			}
		case ast.ComprehensionKind:
			c := e.AsComprehension()
			walk(c.IterRange(), bound)
			walk(c.AccuInit(), bound)
			inner := maps.Clone(bound)
			if inner == nil {
				inner = map[string]bool{}
			}
			inner[c.IterVar()] = true
			if c.HasIterVar2() {
				inner[c.IterVar2()] = true
			}
			inner[c.AccuVar()] = true
			walk(c.LoopCondition(), inner)
			walk(c.LoopStep(), inner)
			walk(c.Result(), inner)
		}
	}
	walk(e, nil)
	return found
}

// budget is what the evaluations of one Check may still cost.
type budget struct{ left int64 }

func newBudget() *budget { return &budget{left: CheckCostBudget} }

// judge returns kstatus's word for live, by the entry of its kind, and ok false when no
// entry judges its kind (kstatus then does). The rules are Flux's (RFC 0009): an object
// whose status.observedGeneration is an integer other than its generation is in progress;
// otherwise inProgress, failed and current are evaluated in that order and the first that
// is true decides; none true is in progress. An expression that cannot be evaluated, costs
// too much or reads a field the object does not have leaves the object in progress, with
// why: the rollout's timeout decides, as for any object that does not become healthy.
func (x *Exprs) judge(ctx context.Context, live *unstructured.Unstructured, b *budget) (res *status.Result, ok bool) {
	if x == nil {
		return nil, false
	}
	gvk := live.GroupVersionKind()
	k, ok := x.byKind[gvk.GroupKind()]
	if !ok {
		if k, ok = x.byKind[schema.GroupKind{Group: gvk.Group}]; !ok {
			return nil, false
		}
	}
	inProgress := func(format string, args ...any) (*status.Result, bool) {
		return &status.Result{Status: status.InProgressStatus, Message: fmt.Sprintf(format, args...)}, true
	}
	obj := live.UnstructuredContent()
	if observed, found, err := unstructured.NestedInt64(obj, "status", "observedGeneration"); err == nil && found {
		if generation, found, err := unstructured.NestedInt64(obj, "metadata", "generation"); err == nil && found && observed != generation {
			return inProgress("%s generation is %d, but latest observed generation is %d", live.GetKind(), generation, observed)
		}
	}
	for _, e := range []struct {
		expr   *expression
		status status.Status
	}{
		{k.inProgress, status.InProgressStatus},
		{k.failed, status.FailedStatus},
		{k.current, status.CurrentStatus},
	} {
		if e.expr == nil {
			continue
		}
		for _, field := range e.expr.reads {
			if _, has := obj[field]; !has {
				return inProgress("no %s yet (%s reads it)", field, e.expr.field)
			}
		}
		if b.left <= 0 {
			return inProgress("not judged: the health expressions used up the cost budget of one health check (%d) on other objects", CheckCostBudget)
		}
		isTrue, err := e.expr.evaluate(ctx, obj, b)
		if err != nil {
			return inProgress("%s: %v", e.expr.field, err)
		}
		if isTrue {
			msg := e.expr.field + " is true"
			if e.status == status.CurrentStatus {
				msg = ""
			} else if ready := readyMessage(obj); ready != "" {
				msg += " (" + ready + ")"
			}
			return &status.Result{Status: e.status, Message: msg}, true
		}
	}
	return inProgress("%s is not true yet", k.current.field)
}

// evaluate runs the expression on obj and charges its cost to b. It never panics: CEL's own
// cancellations are errors, and anything else that panics in it becomes one.
func (e *expression) evaluate(ctx context.Context, obj map[string]any, b *budget) (result bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			result, err = false, fmt.Errorf("evaluation failed: %v", p)
		}
	}()
	val, details, err := e.prog.ContextEval(ctx, obj)
	if details != nil && details.ActualCost() != nil {
		b.left -= int64(min(*details.ActualCost(), uint64(CheckCostBudget)))
	}
	if err != nil {
		if strings.Contains(err.Error(), "cost limit exceeded") {
			return false, fmt.Errorf("costs more than the %d an evaluation may (CEL cost units): make it visit fewer elements", ExprCostLimit)
		}
		return false, err
	}
	v, ok := val.(types.Bool)
	if !ok {
		return false, fmt.Errorf("gave %s %v, not a bool", val.Type().TypeName(), val.Value())
	}
	return bool(v), nil
}

// readyMessage is the object's own word on a verdict: its Ready condition's status, reason
// and message, when it has one.
func readyMessage(obj map[string]any) string {
	conds, _, _ := unstructured.NestedSlice(obj, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Ready" {
			continue
		}
		var parts []string
		for _, k := range []string{"status", "reason", "message"} {
			if s, ok := m[k].(string); ok && s != "" {
				parts = append(parts, s)
			}
		}
		if len(parts) == 0 {
			return ""
		}
		return "Ready: " + strings.Join(parts, ", ")
	}
	return ""
}

// errorLines keeps of CEL's errors, each a message, the source line and a caret under the
// column, the messages, on one line for a condition.
func errorLines(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "ERROR:") {
			l = strings.TrimSpace(strings.TrimPrefix(l, "ERROR:"))
			out = append(out, strings.TrimPrefix(l, "<input>:"))
		}
	}
	if len(out) == 0 {
		return strings.Join(strings.Fields(s), " ")
	}
	return strings.Join(out, "; ")
}
