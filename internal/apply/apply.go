// Package apply puts a release's objects into the cluster with server-side apply, keeps the
// inventory of what was applied, and prunes what left Git. It wraps
// github.com/fluxcd/pkg/ssa, which applies namespaces and CRDs before the objects that need
// them and skips objects that a dry run shows unchanged.
package apply

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
)

const (
	// FieldManager is the field manager of every apply the operator makes.
	FieldManager = "immutable-release"
	// NameLabel and NamespaceLabel mark every applied object with the release that owns it.
	NameLabel      = "release.immutable.dev/name"
	NamespaceLabel = "release.immutable.dev/namespace"
)

// Applier applies and prunes the objects of one release, as the client it was made with
// (the operator itself, or the release's service account).
type Applier struct {
	client   client.Client
	manager  *ssa.ResourceManager
	owner    client.ObjectKey
	observer *observer

	// Absent, when set, says that an object is known not to exist (a synced watch cache
	// that would hold it does not): Apply then does not read it before its dry run. An
	// object that existed all the same (one a person created before the release took it
	// over, or one the cache had not seen yet) is applied again, read first, so that
	// nothing differs but the requests saved.
	Absent func(*unstructured.Unstructured) bool
}

// NewApplier returns an Applier for the release named owner.
func NewApplier(c client.Client, owner client.ObjectKey) *Applier {
	poller := polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{})
	obs := &observer{Client: c}
	rm := ssa.NewResourceManager(obs, poller, ssa.Owner{Field: FieldManager, Group: v1alpha1.GroupVersion.Group})
	rm.SetConcurrency(4)
	return &Applier{client: c, manager: rm, owner: owner, observer: obs}
}

// observer keeps, for each object of one Apply, what the API server answered: the object as
// read before it was applied, replaced by the answer to its apply. Either is the live
// object as the release wants it (ssa applies an object when its dry run differs from what
// was read), so the caller need not read it again to know its state.
type observer struct {
	client.Client
	mu   sync.Mutex
	live map[object.ObjMetadata]*unstructured.Unstructured
	// absent, while set, answers NotFound for the objects it names without reading them;
	// unread holds those, with the resourceVersion their dry run showed ("" for none).
	absent func(*unstructured.Unstructured) bool
	unread map[object.ObjMetadata]string
}

func (o *observer) reset(absent func(*unstructured.Unstructured) bool) {
	o.mu.Lock()
	o.live = map[object.ObjMetadata]*unstructured.Unstructured{}
	o.absent, o.unread = absent, map[object.ObjMetadata]string{}
	o.mu.Unlock()
}

func (o *observer) note(u *unstructured.Unstructured, applied bool) {
	id := object.UnstructuredToObjMetadata(u)
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, read := o.live[id]; o.live != nil && (applied || !read) {
		// Only the first read counts: a later one (waiting for a namespace) may show
		// changes made by others since.
		o.live[id] = u.DeepCopy()
	}
}

func (o *observer) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	o.mu.Lock()
	absent := o.absent
	o.mu.Unlock()
	if u, ok := obj.(*unstructured.Unstructured); ok && absent != nil {
		gvk := u.GroupVersionKind()
		stub := &unstructured.Unstructured{}
		stub.SetGroupVersionKind(gvk)
		stub.SetNamespace(key.Namespace)
		stub.SetName(key.Name)
		if absent(stub) {
			o.mu.Lock()
			o.unread[object.UnstructuredToObjMetadata(stub)] = ""
			o.mu.Unlock()
			return apierrors.NewNotFound(schema.GroupResource{Group: gvk.Group, Resource: gvk.Kind}, key.Name)
		}
	}
	err := o.Client.Get(ctx, key, obj, opts...)
	if u, ok := obj.(*unstructured.Unstructured); ok && err == nil {
		o.note(u, false)
	}
	return err
}

func (o *observer) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	err := o.Client.Patch(ctx, obj, patch, opts...)
	if u, ok := obj.(*unstructured.Unstructured); ok && err == nil && patch.Type() == types.ApplyPatchType {
		po := &client.PatchOptions{}
		po.ApplyOptions(opts)
		if len(po.DryRun) == 0 {
			o.note(u, true)
		} else {
			id := object.UnstructuredToObjMetadata(u)
			o.mu.Lock()
			if _, unread := o.unread[id]; unread {
				o.unread[id] = u.GetResourceVersion()
			}
			o.mu.Unlock()
		}
	}
	return err
}

// OwnerLabels are the labels that mark an object as applied by the release.
func OwnerLabels(owner client.ObjectKey) map[string]string {
	return map[string]string{NameLabel: owner.Name, NamespaceLabel: owner.Namespace}
}

// Prepare sets the namespace of every namespaced object (targetNamespace when set, else
// defaultNamespace for objects that name none) and the owner labels. Kinds unknown to the
// API server are looked up among the CRDs of the same set.
func (a *Applier) Prepare(objects []*unstructured.Unstructured, targetNamespace, defaultNamespace string) error {
	crdScopes := map[schema.GroupKind]bool{}
	for _, o := range objects {
		if o.GetKind() == "CustomResourceDefinition" && strings.HasPrefix(o.GetAPIVersion(), "apiextensions.k8s.io/") {
			group, _, _ := unstructured.NestedString(o.Object, "spec", "group")
			kind, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
			scope, _, _ := unstructured.NestedString(o.Object, "spec", "scope")
			crdScopes[schema.GroupKind{Group: group, Kind: kind}] = scope == "Namespaced"
		}
	}
	var unknown []string
	for _, o := range objects {
		gvk := o.GroupVersionKind()
		namespaced, known := crdScopes[gvk.GroupKind()]
		if !known {
			mapping, err := a.client.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				if meta.IsNoMatchError(err) {
					unknown = append(unknown, fmt.Sprintf("%s (%s)", o.GetName(), gvk.GroupVersion().WithKind(gvk.Kind)))
					continue
				}
				return fmt.Errorf("looking up %s: %w", gvk, err)
			}
			namespaced = mapping.Scope.Name() == meta.RESTScopeNameNamespace
		}
		switch {
		case !namespaced:
			o.SetNamespace("")
		case targetNamespace != "":
			o.SetNamespace(targetNamespace)
		case o.GetNamespace() == "":
			o.SetNamespace(defaultNamespace)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("the API server does not serve the kind of %s: install its CRD first or add it to the release", strings.Join(unknown, ", "))
	}
	a.manager.SetOwnerLabels(objects, a.owner.Name, a.owner.Namespace)
	return nil
}

// Apply server-side applies the objects, namespaces and CRDs first. When any object is
// refused in its stage's dry run, nothing of that stage is applied. live[i] is objects[i]
// as the API server holds it after the apply (its answer to the apply, or what was read
// when nothing needed applying), or nil when unknown.
func (a *Applier) Apply(ctx context.Context, objects []*unstructured.Unstructured) (cs *ssa.ChangeSet, live []*unstructured.Unstructured, err error) {
	opts := ssa.DefaultApplyOptions()
	opts.WaitInterval = time.Second
	opts.WaitTimeout = time.Minute
	opts.Cleanup = ssa.ApplyCleanupOptions{
		// Take over fields that kubectl applied before the release existed.
		FieldManagers: []ssa.FieldManager{
			{Name: "kubectl", OperationType: metav1.ManagedFieldsOperationApply},
			{Name: "kubectl-client-side-apply", OperationType: metav1.ManagedFieldsOperationUpdate},
		},
	}
	a.observer.reset(a.Absent)
	defer func() {
		// Only Apply takes objects for absent: a prune reads what it deletes.
		a.observer.mu.Lock()
		a.observer.absent = nil
		a.observer.mu.Unlock()
	}()
	cs, err = a.manager.ApplyAllStaged(ctx, objects, opts)
	if err != nil {
		return cs, nil, explainApplyError(err)
	}
	if err := a.applyUnreadAgain(ctx, objects, cs, opts); err != nil {
		return cs, nil, explainApplyError(err)
	}
	a.observer.mu.Lock()
	defer a.observer.mu.Unlock()
	live = make([]*unstructured.Unstructured, len(objects))
	for i, o := range objects {
		live[i] = a.observer.live[object.UnstructuredToObjMetadata(o)]
	}
	return cs, live, nil
}

// applyUnreadAgain applies again, read first this time, the objects Apply did not read
// because they were taken for absent but whose dry run showed them existing: ssa could then
// neither take over other managers' fields nor tell an unchanged object from a changed one.
// Their entries in cs say what the two applies did together.
func (a *Applier) applyUnreadAgain(ctx context.Context, objects []*unstructured.Unstructured, cs *ssa.ChangeSet, opts ssa.ApplyOptions) error {
	a.observer.mu.Lock()
	a.observer.absent = nil
	var again []*unstructured.Unstructured
	// moved: the first apply changed the object (its resourceVersion is not the dry run's).
	moved := map[object.ObjMetadata]bool{}
	for _, o := range objects {
		id := object.UnstructuredToObjMetadata(o)
		if rv, unread := a.observer.unread[id]; unread && rv != "" {
			again = append(again, o)
			moved[id] = a.observer.live[id] == nil || a.observer.live[id].GetResourceVersion() != rv
			delete(a.observer.live, id)
		}
	}
	a.observer.mu.Unlock()
	if len(again) == 0 {
		return nil
	}
	second, err := a.manager.ApplyAll(ctx, again, opts)
	if err != nil {
		return err
	}
	actions := map[string]ssa.Action{}
	for _, e := range second.Entries {
		actions[e.ObjMetadata.String()] = e.Action
	}
	for i, e := range cs.Entries {
		if action, ok := actions[e.ObjMetadata.String()]; ok && !moved[e.ObjMetadata] {
			cs.Entries[i].Action = action
		}
	}
	return nil
}

// Diff dry-runs the apply of object and returns the live object (nil when it does not
// exist) and what the apply would make of it. Unlike ssa's Diff it keeps the live object's
// managed fields, which say who changed it.
func (a *Applier) Diff(ctx context.Context, object *unstructured.Unstructured) (live, merged *unstructured.Unstructured, err error) {
	return a.dryRun(ctx, object, false)
}

// DryRun is Diff that also dry-runs the creation of an object that does not exist yet, so
// that the API server validates and defaults it: live is nil and merged is what would be
// created. The object's namespace and kind must exist in the cluster.
func (a *Applier) DryRun(ctx context.Context, object *unstructured.Unstructured) (live, merged *unstructured.Unstructured, err error) {
	return a.dryRun(ctx, object, true)
}

func (a *Applier) dryRun(ctx context.Context, object *unstructured.Unstructured, create bool) (live, merged *unstructured.Unstructured, err error) {
	live = &unstructured.Unstructured{}
	live.SetGroupVersionKind(object.GroupVersionKind())
	if err := a.client.Get(ctx, client.ObjectKeyFromObject(object), live); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, nil, explainApplyError(err)
		}
		if !create {
			return nil, nil, nil
		}
		live = nil
	}
	merged = object.DeepCopy()
	if err := a.client.Patch(ctx, merged, client.Apply, client.DryRunAll, client.ForceOwnership, client.FieldOwner(FieldManager)); err != nil {
		return nil, nil, explainApplyError(err)
	}
	return live, merged, nil
}

// Put server-side applies objects one by one, taking back every field the release manages:
// the correction of drift, for objects already compared (and dry-run) with Diff. Unlike
// Apply it makes one request per object. live[i] is the API server's answer for objects[i].
func (a *Applier) Put(ctx context.Context, objects []*unstructured.Unstructured) (live []*unstructured.Unstructured, err error) {
	for _, o := range objects {
		applied := o.DeepCopy()
		if err := a.client.Patch(ctx, applied, client.Apply, client.ForceOwnership, client.FieldOwner(FieldManager)); err != nil {
			return nil, explainApplyError(fmt.Errorf("%s/%s: %w", o.GetKind(), o.GetName(), err))
		}
		live = append(live, applied)
	}
	return live, nil
}

// Prune deletes the objects of old that are not in current and that may says it may
// delete. Objects that no longer carry this release's labels (someone else took them over)
// are left alone.
func (a *Applier) Prune(ctx context.Context, old, current *v1alpha1.ResourceInventory, may func(*unstructured.Unstructured) bool) (*ssa.ChangeSet, error) {
	stale, err := Diff(old, current)
	if err != nil {
		return nil, err
	}
	return a.Delete(ctx, Only(stale, may))
}

// Only returns the objects that keep says to keep.
func Only(objects []*unstructured.Unstructured, keep func(*unstructured.Unstructured) bool) []*unstructured.Unstructured {
	out := objects[:0:0]
	for _, o := range objects {
		if keep(o) {
			out = append(out, o)
		}
	}
	return out
}

// Delete deletes the given objects if they still carry this release's labels.
func (a *Applier) Delete(ctx context.Context, objects []*unstructured.Unstructured) (*ssa.ChangeSet, error) {
	if len(objects) == 0 {
		return ssa.NewChangeSet(), nil
	}
	opts := ssa.DefaultDeleteOptions()
	opts.Inclusions = OwnerLabels(a.owner)
	cs, err := a.manager.DeleteAll(ctx, objects, opts)
	if err != nil {
		return cs, explainApplyError(err)
	}
	return cs, nil
}

// explainApplyError adds what a person can do about the common refusals.
func explainApplyError(err error) error {
	switch {
	case apierrors.IsForbidden(err) || strings.Contains(err.Error(), "forbidden"):
		return fmt.Errorf("%w (grant the release's service account the rights it needs, or remove spec.serviceAccountName)", err)
	default:
		return err
	}
}

// Inventory lists the objects as inventory entries, sorted.
func Inventory(objects []*unstructured.Unstructured) *v1alpha1.ResourceInventory {
	inv := &v1alpha1.ResourceInventory{Entries: make([]v1alpha1.ResourceRef, 0, len(objects))}
	for _, o := range objects {
		inv.Entries = append(inv.Entries, v1alpha1.ResourceRef{
			ID:      object.UnstructuredToObjMetadata(o).String(),
			Version: o.GroupVersionKind().Version,
		})
	}
	sort.Slice(inv.Entries, func(i, j int) bool { return inv.Entries[i].ID < inv.Entries[j].ID })
	return inv
}

// Objects turns inventory entries back into object stubs (kind, name, namespace).
func Objects(inv *v1alpha1.ResourceInventory) ([]*unstructured.Unstructured, error) {
	if inv == nil {
		return nil, nil
	}
	out := make([]*unstructured.Unstructured, 0, len(inv.Entries))
	for _, e := range inv.Entries {
		m, err := object.ParseObjMetadata(e.ID)
		if err != nil {
			return nil, fmt.Errorf("reading inventory entry %q: %w", e.ID, err)
		}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(m.GroupKind.WithVersion(e.Version))
		u.SetNamespace(m.Namespace)
		u.SetName(m.Name)
		out = append(out, u)
	}
	return out, nil
}

// Diff returns the objects of old that are not in current.
func Diff(old, current *v1alpha1.ResourceInventory) ([]*unstructured.Unstructured, error) {
	if old == nil {
		return nil, nil
	}
	keep := map[string]bool{}
	if current != nil {
		for _, e := range current.Entries {
			keep[e.ID] = true
		}
	}
	stale := &v1alpha1.ResourceInventory{}
	for _, e := range old.Entries {
		if !keep[e.ID] {
			stale.Entries = append(stale.Entries, e)
		}
	}
	objects, err := Objects(stale)
	if err != nil {
		return nil, err
	}
	// Delete namespaced objects before namespaces and CRDs, so nothing is orphaned mid-way.
	sort.SliceStable(objects, func(i, j int) bool { return objects[i].GetNamespace() != "" && objects[j].GetNamespace() == "" })
	return objects, nil
}
