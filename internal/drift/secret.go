package drift

import (
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// HiddenValue stands in for a value of a Secret wherever drift is shown: in a Change, and so
// in conditions, events and logs, and in the plugin's diffs. Anyone who may read events or
// a release must not learn a Secret's data from them, live or from Git, nor any encoding of it.
const HiddenValue = "(value hidden)"

// The markers Redact writes where a hidden value differs, so that a diff still shows a line
// as changed without saying how.
const (
	hiddenBefore = "(value hidden, before)"
	hiddenAfter  = "(value hidden, after)"
)

// lastApplied is where `kubectl apply` keeps a copy of the whole object it applied: for a
// Secret, its data.
var lastApplied = childPath(childPath("metadata", "annotations"), corev1.LastAppliedConfigAnnotation)

// isSecret says whether u is a core Secret, whose values are never shown.
func isSecret(u *unstructured.Unstructured) bool {
	if u == nil {
		return false
	}
	gvk := u.GroupVersionKind()
	return gvk.Group == "" && gvk.Kind == "Secret"
}

// revealable says whether the value at path of a Secret may be shown. Only the fields that
// cannot hold the data are: its type, immutable, apiVersion, kind and metadata without the
// last-applied annotation. Every other field, data and stringData first, and any field a
// later Kubernetes adds, is hidden. A path that holds a hidden field (the whole object,
// metadata, metadata.annotations) is hidden too, as its value would print it.
func revealable(path string) bool {
	top, rest, _ := strings.Cut(path, ".")
	switch top {
	case "apiVersion", "kind", "type", "immutable":
		return true
	case "metadata":
		return rest != "" && rest != "annotations" && path != lastApplied
	}
	return false
}

// hide replaces the values of a Change to a Secret's hidden field with HiddenValue; Live
// stays empty when the field is missing.
func hide(c Change) Change {
	if revealable(c.Path) {
		return c
	}
	c.Hidden, c.Desired = true, HiddenValue
	if c.Live != "" {
		c.Live = HiddenValue
	}
	return c
}

// Redact returns before and after (either may be nil), the two sides of a change of one
// object, for showing: when they are a Secret, copies in which every hidden value is
// replaced by HiddenValue (or, where the two sides differ, by a marker that differs), keys
// kept, so that a diff names what changed and never what it holds. Other objects are
// returned as they are.
func Redact(before, after *unstructured.Unstructured) (*unstructured.Unstructured, *unstructured.Unstructured) {
	if !isSecret(before) && !isSecret(after) {
		return before, after
	}
	var b, a map[string]any
	if before != nil {
		b = before.DeepCopy().Object
	}
	if after != nil {
		a = after.DeepCopy().Object
	}
	bv, av := redact("", b, a, before != nil, after != nil)
	var rb, ra *unstructured.Unstructured
	if before != nil {
		rb = &unstructured.Unstructured{Object: bv.(map[string]any)}
	}
	if after != nil {
		ra = &unstructured.Unstructured{Object: av.(map[string]any)}
	}
	return rb, ra
}

// redact masks the value at path on each side present (hasB, hasA), descending into maps so
// that their keys, field names, stay visible.
func redact(path string, b, a any, hasB, hasA bool) (any, any) {
	if revealable(path) {
		return b, a
	}
	bm, bIsMap := b.(map[string]any)
	am, aIsMap := a.(map[string]any)
	if (bIsMap || !hasB) && (aIsMap || !hasA) {
		for k := range bm {
			av, ok := am[k]
			bm[k], av = redact(childPath(path, k), bm[k], av, true, ok)
			if ok {
				am[k] = av
			}
		}
		for k := range am {
			if _, ok := bm[k]; !ok {
				_, am[k] = redact(childPath(path, k), nil, am[k], false, true)
			}
		}
		return b, a
	}
	switch {
	case hasB && hasA && !reflect.DeepEqual(b, a):
		return hiddenBefore, hiddenAfter
	case hasB && hasA:
		return HiddenValue, HiddenValue
	case hasB:
		return HiddenValue, a
	default:
		return b, HiddenValue
	}
}
