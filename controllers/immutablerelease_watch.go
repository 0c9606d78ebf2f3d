package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/apply"
	"github.com/immutable-release/operator/internal/shard"
)

// CacheOptions scopes the manager's cache to what the shard's releases applied: informers
// on applied kinds hold only objects that carry a release's labels and the shard's (only
// their metadata, but for the workloads of fullObjectKinds), so a change to one reaches its
// release at once without the operator caching the cluster or another shard's objects. The
// shard (Flux's --watch-label-selector) limits the releases this manager reconciles, so
// that several managers can share a large fleet; its releases' objects carry the labels the
// selector names (shard.Stamp), so the same selector finds them. Receivers are every
// shard's: a push may reach any replica.
func CacheOptions(sh shard.Shard) (cache.Options, error) {
	opts, err := appliedCacheOptions(sh)
	if err != nil {
		return cache.Options{}, err
	}
	opts.ByObject = map[client.Object]cache.ByObject{
		&v1alpha1.ImmutableRelease{}: {Label: sh.Selector()},
		&v1alpha1.Receiver{}:         {Label: labels.Everything()},
		// The Prevent policy and its bindings carry no release's labels: the
		// PreventPolicyReconciler watches them by name. Few exist in a cluster.
		&admissionv1.ValidatingAdmissionPolicy{}:        {Label: labels.Everything()},
		&admissionv1.ValidatingAdmissionPolicyBinding{}: {Label: labels.Everything()},
	}
	return opts, nil
}

// appliedCacheOptions hold a cache to the objects the shard's releases applied; a remote
// cluster's cache holds nothing else (newRemoteCluster).
func appliedCacheOptions(sh shard.Shard) (cache.Options, error) {
	owned, err := labels.NewRequirement(apply.NameLabel, selection.Exists, nil)
	if err != nil {
		return cache.Options{}, err
	}
	applied := labels.NewSelector().Add(*owned)
	if reqs, selectable := sh.Selector().Requirements(); selectable {
		applied = applied.Add(reqs...)
	}
	return cache.Options{
		DefaultLabelSelector: applied,
		// Nothing reads who manages which field from the cache (drift reads the live
		// object): managedFields are dropped before objects are stored.
		DefaultTransform: cache.TransformStripManagedFields(),
	}, nil
}

// watcher starts a watch on each kind a release applied, once per kind, and maps every
// event to the release named in the object's labels: one changed object reconciles its own
// release and no other. Most kinds are watched by their metadata only; the workloads whose
// status decides a rollout (fullObjectKinds) are watched whole. There is one watcher per
// cluster: the local one's cache is the manager's, a remote cluster's its own.
type watcher struct {
	controller controller.Controller
	cache      cache.Cache
	scheme     *runtime.Scheme
	handler    func(gvk schema.GroupVersionKind) handlerFunc
	// ctx, when set, bounds the watches: a remote cluster's end with it, even one whose
	// informer never synced; without it they last as long as the controller.
	ctx context.Context

	mu      sync.Mutex
	watched map[schema.GroupVersionKind]bool
}

// fullObjectKinds are kept whole in the watch cache, status included, so that the health of
// their rollouts is judged from the watch rather than from a read per status update. They
// are built-in kinds, watched in protobuf as kube-controller-manager watches them, so the
// API server encodes each event once for both.
var fullObjectKinds = map[schema.GroupVersionKind]bool{
	appsv1.SchemeGroupVersion.WithKind("Deployment"):  true,
	appsv1.SchemeGroupVersion.WithKind("StatefulSet"): true,
	appsv1.SchemeGroupVersion.WithKind("DaemonSet"):   true,
}

// newObject returns an empty object of the type the cache keeps for gvk: the typed object
// for fullObjectKinds, else its metadata.
func (w *watcher) newObject(gvk schema.GroupVersionKind) client.Object {
	if fullObjectKinds[gvk] && w.scheme != nil {
		if o, err := w.scheme.New(gvk); err == nil {
			if co, ok := o.(client.Object); ok {
				return co
			}
		}
	}
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(gvk)
	return m
}

func (w *watcher) ensure(objects []*unstructured.Unstructured) error {
	if w.controller == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, o := range objects {
		gvk := o.GroupVersionKind()
		if w.watched[gvk] {
			continue
		}
		var src source.Source = source.Kind(w.cache, w.newObject(gvk), w.handler(gvk))
		if w.ctx != nil {
			kind, ctx := src, w.ctx
			src = source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
				return kind.Start(ctx, q)
			})
		}
		if err := w.controller.Watch(src); err != nil {
			return fmt.Errorf("watching %s: %w", gvk.Kind, err)
		}
		w.watched[gvk] = true
	}
	return nil
}

// watching says whether changes to kind gvk are watched, so the cache holds its objects.
func (w *watcher) watching(gvk schema.GroupVersionKind) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.watched[gvk]
}

// errNotWatched: the kind is not watched, so the cache knows nothing of its objects.
var errNotWatched = errors.New("kind not watched")

// handlerFunc maps the events of an applied object to its release.
type handlerFunc = handler.TypedEventHandler[client.Object, reconcile.Request]

// fromCache reads the object of kind gvk named key from the watch cache, as the cache keeps
// it (see newObject). A kind whose informer has not synced yet (a remote cluster that has
// not answered) counts as not watched: a read would wait for the sync.
func (w *watcher) fromCache(ctx context.Context, gvk schema.GroupVersionKind, key client.ObjectKey) (client.Object, error) {
	if !w.watching(gvk) {
		return nil, errNotWatched
	}
	o := w.newObject(gvk)
	if inf, err := w.cache.GetInformer(ctx, o, cache.BlockUntilSynced(false)); err != nil || !inf.HasSynced() {
		return nil, errNotWatched
	}
	return o, w.cache.Get(ctx, key, o)
}

// cached is fromCache; false when the kind is not watched or the object is not there.
func (w *watcher) cached(ctx context.Context, gvk schema.GroupVersionKind, key client.ObjectKey) (client.Object, bool) {
	o, err := w.fromCache(ctx, gvk, key)
	return o, err == nil
}

// absent says that o is not in the watch cache of its kind: no object of that name carries
// a release's labels, as of the cache's last event.
func (w *watcher) absent(ctx context.Context, o *unstructured.Unstructured) bool {
	_, err := w.fromCache(ctx, o.GroupVersionKind(), client.ObjectKeyFromObject(o))
	return apierrors.IsNotFound(err)
}

// metadataOf is the metadata of an object from the watch cache, of kind gvk.
func metadataOf(o client.Object, gvk schema.GroupVersionKind) *metav1.PartialObjectMetadata {
	if m, ok := o.(*metav1.PartialObjectMetadata); ok {
		return m
	}
	m := &metav1.PartialObjectMetadata{}
	if a, ok := o.(metav1.ObjectMetaAccessor); ok {
		if om, ok := a.GetObjectMeta().(*metav1.ObjectMeta); ok {
			m.ObjectMeta = *om
		}
	}
	m.SetGroupVersionKind(gvk)
	return m
}

// statusSettle is how long status updates of an applied object are gathered before its
// release looks at them: a rollout updates a Deployment's status several times a second.
const statusSettle = 500 * time.Millisecond

// appliedObjectHandler queues the release of a changed object. A change to what the release
// manages (spec, labels, annotations, deletion) may be drift and goes first, at once; a
// status update of a workload, which only says how its rollout goes, waits a moment and
// yields to other work, so that a thousand rollouts do not starve drift corrections and
// bursts of status updates cost one look. The echo of the release's own apply is dropped:
// the reconcile that applied has the answer already, and looks at the rollout itself.
//
// Events of a cluster (key; "" for the local one) reach only the releases that target it:
// the labels of an object in a remote cluster are that cluster's to write, and must not
// wake a release of another.
func (r *ImmutableReleaseReconciler) appliedObjectHandler(key string, gvk schema.GroupVersionKind) handlerFunc {
	enqueue := func(ctx context.Context, obj client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request], statusOnly, deleted bool) {
		o := metadataOf(obj, gvk)
		for _, req := range ownerRelease(ctx, o) {
			if r.memories.peek(req.NamespacedName).cluster().key != key {
				continue
			}
			if !statusOnly && !deleted && r.ownWrite(req.NamespacedName, o) {
				continue
			}
			pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request])
			switch {
			case !ok:
				q.Add(req)
			case statusOnly:
				low := handler.LowPriority
				pq.AddWithOpts(priorityqueue.AddOpts{After: statusSettle, Priority: &low}, req)
			default:
				high := changedPriority
				pq.AddWithOpts(priorityqueue.AddOpts{Priority: &high}, req)
			}
		}
	}
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(ctx context.Context, e event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q, false, false)
		},
		UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.ObjectNew, q, statusOnly(metadataOf(e.ObjectOld, gvk), metadataOf(e.ObjectNew, gvk)), false)
		},
		DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			// Never taken for an echo: a deleted object is always looked at.
			enqueue(ctx, e.Object, q, false, true)
		},
		GenericFunc: func(ctx context.Context, e event.TypedGenericEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q, false, false)
		},
	}
}

// statusOnly says an update changed neither the spec nor the metadata of a kind whose
// generation moves with its spec: only its status.
func statusOnly(old, new *metav1.PartialObjectMetadata) bool {
	gvk := new.GroupVersionKind()
	return specGenerationKinds[gvk.Group+"/"+gvk.Kind] && old.Generation == new.Generation &&
		new.DeletionTimestamp == nil && equality.Semantic.DeepEqual(old.Labels, new.Labels) &&
		equality.Semantic.DeepEqual(old.Annotations, new.Annotations) &&
		equality.Semantic.DeepEqual(old.OwnerReferences, new.OwnerReferences)
}

// ownWrite says whether o is, to its resourceVersion, the object as the release's snapshot
// recorded it: the answer to this process's own apply or correction.
func (r *ImmutableReleaseReconciler) ownWrite(release types.NamespacedName, o *metav1.PartialObjectMetadata) bool {
	snap := r.memories.peek(release).lastSnapshot()
	if snap == nil {
		return false
	}
	was, ok := snap.objects[idOf(o.GroupVersionKind().GroupKind(), o.Namespace, o.Name)]
	return ok && was.uid == o.UID && was.resourceVersion == o.ResourceVersion
}

func ownerRelease(_ context.Context, o *metav1.PartialObjectMetadata) []reconcile.Request {
	name, namespace := o.GetLabels()[apply.NameLabel], o.GetLabels()[apply.NamespaceLabel]
	if name == "" || namespace == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: namespace, Name: name}}}
}
