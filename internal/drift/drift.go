// Package drift finds where live objects differ from what Git says, and who changed them.
// It compares the API server's dry-run of the desired object (defaults and normalisation
// applied, as an apply would leave it) with the live object.
package drift

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Change is one field of a live object that differs from Git.
type Change struct {
	// Path is the field, with list items named by their name and map keys in brackets:
	// spec.template.spec.containers[web].image, data[password].
	Path string
	// Desired and Live are the values, formatted; Live is empty when the field is missing.
	// Both are HiddenValue when Hidden.
	Desired, Live string
	// Image is true when the field is a container image.
	Image bool
	// Hidden is true when the field is a Secret's data (or holds it): its values, live or
	// from Git, are not in the Change at all.
	Hidden bool
}

func (c Change) String() string {
	switch {
	case c.Hidden && c.Live == "":
		return c.Path + " is missing " + HiddenValue
	case c.Hidden:
		return c.Path + " differs from Git " + HiddenValue
	case c.Live == "":
		return fmt.Sprintf("%s is missing (Git: %s)", c.Path, c.Desired)
	}
	return fmt.Sprintf("%s is %s (Git: %s)", c.Path, c.Live, c.Desired)
}

// keyed are the maps whose keys users choose rather than the schema: their keys are shown in
// brackets, as a key may hold dots (tls.crt).
var keyed = map[string]bool{
	"metadata.annotations": true,
	"metadata.labels":      true,
	"data":                 true,
	"stringData":           true,
	"binaryData":           true,
}

// childPath is the path of the field key of the map at path.
func childPath(path, key string) string {
	switch {
	case keyed[path]:
		return path + "[" + key + "]"
	case path == "":
		return key
	default:
		return path + "." + key
	}
}

// ignored are fields that always differ between a dry-run and the live object, or that
// others own by design.
var ignored = map[string]bool{
	"metadata.managedFields":     true,
	"metadata.resourceVersion":   true,
	"metadata.generation":        true,
	"metadata.uid":               true,
	"metadata.creationTimestamp": true,
	"status":                     true,
	// The deployment controller records its revision here.
	"metadata.annotations[deployment.kubernetes.io/revision]": true,
}

// Compare lists the fields of desired whose live value differs, sorted by path. Fields set
// only in live (added by others, such as an injected sidecar) are not drift; see AddedContainers.
// When either is a Secret, the changes to its data name the field and never the value
// (Hidden): every consumer, condition, event, log or plugin, gets them so.
func Compare(desired, live *unstructured.Unstructured) []Change {
	var changes []Change
	walk("", desired.Object, live.Object, &changes)
	if isSecret(desired) || isSecret(live) {
		for i := range changes {
			changes[i] = hide(changes[i])
		}
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].Path < changes[j].Path })
	return changes
}

func walk(path string, desired, live any, changes *[]Change) {
	if ignored[path] {
		return
	}
	switch d := desired.(type) {
	case map[string]any:
		l, _ := live.(map[string]any)
		for k, dv := range d {
			p := childPath(path, k)
			var lv any
			if l != nil {
				lv = l[k]
			}
			walk(p, dv, lv, changes)
		}
	case []any:
		l, _ := live.([]any)
		if byName, ok := named(d); ok {
			liveByName, _ := named(l)
			for name, dv := range byName {
				walk(path+"["+name+"]", dv, liveByName[name], changes)
			}
			return
		}
		if !reflect.DeepEqual(d, l) {
			*changes = append(*changes, change(path, d, live))
		}
	default:
		if !reflect.DeepEqual(desired, live) {
			*changes = append(*changes, change(path, desired, live))
		}
	}
}

// named indexes a list of objects by their name field, when every item has one.
func named(list []any) (map[string]any, bool) {
	if len(list) == 0 {
		return nil, false
	}
	out := make(map[string]any, len(list))
	for _, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, false
		}
		name, ok := m["name"].(string)
		if !ok || name == "" {
			return nil, false
		}
		out[name] = item
	}
	return out, true
}

func change(path string, desired, live any) Change {
	c := Change{Path: path, Desired: format(desired), Image: strings.HasSuffix(path, ".image")}
	if live != nil {
		c.Live = format(live)
	}
	return c
}

func format(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	default:
		return fmt.Sprint(x)
	}
}

// AddedContainers lists containers that live runs and desired does not name, such as
// sidecars injected by a mutating webhook. They are reported, never removed.
func AddedContainers(desired, live *unstructured.Unstructured, specPath ...string) []string {
	d, _, _ := unstructured.NestedSlice(desired.Object, append(specPath, "containers")...)
	l, _, _ := unstructured.NestedSlice(live.Object, append(specPath, "containers")...)
	want, _ := named(d)
	var added []string
	for _, item := range l {
		m, _ := item.(map[string]any)
		name, _ := m["name"].(string)
		if _, ok := want[name]; !ok && name != "" {
			added = append(added, name)
		}
	}
	sort.Strings(added)
	return added
}

// ChangedBy names the field manager that most recently changed live, other than ours and
// than status writers: who to ask about the drift. Empty when unknown.
func ChangedBy(live *unstructured.Unstructured, ours string) string {
	var (
		who  string
		when metav1.Time
	)
	for _, mf := range live.GetManagedFields() {
		if mf.Manager == ours || mf.Subresource != "" || mf.Time == nil {
			continue
		}
		if who == "" || !mf.Time.Before(&when) {
			who, when = mf.Manager, *mf.Time
		}
	}
	return who
}
