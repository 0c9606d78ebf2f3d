package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxcd/cli-utils/pkg/object"
)

// snapshot is what this process last saw of a release's live objects when they matched
// Git: the revision, a checksum of the objects Git asked for, and the metadata of each live
// object. While the metadata cache shows the same, nobody has changed the objects, so an
// apply or a dry-run comparison would find nothing: reconciles triggered by a rollout's
// status updates, or by a commit that did not touch the release's path, skip those API
// calls. Any change a person or a controller makes shows in the metadata (below), so drift
// is never missed; losing the snapshot (a restart) only costs one comparison.
type snapshot struct {
	revision string
	desired  string
	objects  map[string]liveMeta
	// healthy holds the resourceVersion of each object when the release was last judged
	// healthy, at healthyAt; objects unchanged since are healthy still.
	healthy   map[string]string
	healthyAt time.Time
}

// liveMeta is the part of an object's metadata that any change to it moves.
type liveMeta struct {
	uid             types.UID
	resourceVersion string
	generation      int64
	labels          string
}

// specGenerationKinds are kinds whose metadata.generation moves with every change of their
// spec but not with status updates. For them, an unchanged generation and unchanged labels
// and annotations mean an unchanged object, whatever their status did. Other kinds must
// keep their resourceVersion.
var specGenerationKinds = map[string]bool{
	"apps/Deployment": true, "apps/StatefulSet": true, "apps/DaemonSet": true, "apps/ReplicaSet": true,
	"batch/Job": true, "batch/CronJob": true,
}

// metaOf reads the metadata of live. Of its labels and annotations only those Git sets on
// desired count: others (a Deployment's revision annotation) are not the release's to keep.
func metaOf(live metav1.Object, desired *unstructured.Unstructured) liveMeta {
	return liveMeta{uid: live.GetUID(), resourceVersion: live.GetResourceVersion(), generation: live.GetGeneration(),
		labels: flatten(live.GetLabels(), desired.GetLabels()) + "\x00" + flatten(live.GetAnnotations(), desired.GetAnnotations())}
}

// flatten writes the entries of live whose keys Git sets, and the keys Git sets that are
// missing.
func flatten(live, desired map[string]string) string {
	keys := make([]string, 0, len(desired))
	for k := range desired {
		v, ok := live[k]
		if !ok {
			v = "\x02missing"
		}
		keys = append(keys, k+"="+v)
	}
	sort.Strings(keys)
	return strings.Join(keys, "\x01")
}

// desiredChecksum identifies the objects Git asks for, as prepared for apply. It is
// computed once per reconcile, however many times it is compared.
func (s *scope) desiredChecksum() string {
	if s.desired == "" {
		h := sha256.New()
		for _, o := range s.objects {
			b, _ := json.Marshal(o.Object)
			h.Write(b)
			h.Write([]byte{0})
		}
		s.desired = hex.EncodeToString(h.Sum(nil))
	}
	return s.desired
}

func objectID(o *unstructured.Unstructured) string {
	return idOf(o.GroupVersionKind().GroupKind(), o.GetNamespace(), o.GetName())
}

// idOf is the inventory ID of the object of kind gk named namespace/name.
func idOf(gk schema.GroupKind, namespace, name string) string {
	return object.ObjMetadata{Namespace: namespace, Name: name, GroupKind: gk}.String()
}

// recordSnapshot remembers the live objects a comparison found equal to Git; live[i] is the
// live copy of s.objects[i], or nil when it was not read because prev, the snapshot the
// comparison started from, showed it unchanged.
func (r *ImmutableReleaseReconciler) recordSnapshot(s *scope, live []*unstructured.Unstructured, prev *snapshot) {
	snap := snapshot{revision: s.revision, desired: s.desiredChecksum(), objects: map[string]liveMeta{}}
	if prev != nil {
		snap.healthy, snap.healthyAt = prev.healthy, prev.healthyAt
	}
	for i, o := range s.objects {
		id := objectID(o)
		switch {
		case live[i] != nil:
			snap.objects[id] = metaOf(live[i], o)
		case prev != nil:
			snap.objects[id] = prev.objects[id]
		}
	}
	s.mem.setSnapshot(&snap)
}

// advanceSnapshot moves the snapshot to the revision just recorded as applied, whose objects
// are the snapshot's.
func (r *ImmutableReleaseReconciler) advanceSnapshot(s *scope) {
	if prev := s.mem.lastSnapshot(); prev != nil {
		snap := *prev
		snap.revision = s.revision
		s.mem.setSnapshot(&snap)
	}
}

// comparableSnapshot returns the release's snapshot if it was taken of the same objects
// Git asks for now, else nil.
func (r *ImmutableReleaseReconciler) comparableSnapshot(s *scope) *snapshot {
	snap := s.mem.lastSnapshot()
	if snap == nil || len(snap.objects) != len(s.objects) || snap.desired != s.desiredChecksum() {
		return nil
	}
	return snap
}

// objectUnchanged says whether the metadata cache shows o's live object as the snapshot
// saw it.
func (r *ImmutableReleaseReconciler) objectUnchanged(ctx context.Context, s *scope, snap *snapshot, o *unstructured.Unstructured) bool {
	was, ok := snap.objects[objectID(o)]
	if !ok {
		return false
	}
	now, ok := s.cachedMeta(ctx, o)
	if !ok || now.uid != was.uid || now.labels != was.labels {
		return false
	}
	gvk := o.GroupVersionKind()
	return now.resourceVersion == was.resourceVersion ||
		(specGenerationKinds[gvk.Group+"/"+gvk.Kind] && now.generation == was.generation)
}

// unchangedSinceSnapshot says whether the objects Git asks for are those of the snapshot,
// the status records the snapshot's revision as applied (a status write that was lost,
// say to a conflict, must not let a new revision pass unrecorded), and the metadata cache
// shows every live object as it was then.
func (r *ImmutableReleaseReconciler) unchangedSinceSnapshot(ctx context.Context, s *scope) bool {
	snap := r.comparableSnapshot(s)
	if snap == nil || snap.revision != s.obj.Status.LastAppliedRevision {
		return false
	}
	for _, o := range s.objects {
		if !r.objectUnchanged(ctx, s, snap, o) {
			return false
		}
	}
	return true
}

// recordHealthy remembers the resourceVersions of the objects judged healthy.
func (r *ImmutableReleaseReconciler) recordHealthy(ctx context.Context, s *scope) {
	prev := s.mem.lastSnapshot()
	if prev == nil {
		return
	}
	snap := *prev
	snap.healthy, snap.healthyAt = map[string]string{}, time.Now()
	for _, o := range s.objects {
		now, ok := s.cachedMeta(ctx, o)
		if !ok {
			return
		}
		snap.healthy[objectID(o)] = now.resourceVersion
	}
	s.mem.setSnapshot(&snap)
}

// stillHealthy says whether no object changed, status included, since it was judged healthy
// less than an interval ago. Once an interval the pods are looked at again all the same.
func (r *ImmutableReleaseReconciler) stillHealthy(ctx context.Context, s *scope) bool {
	snap := s.mem.lastSnapshot()
	if snap == nil || snap.healthy == nil || time.Since(snap.healthyAt) >= r.shortestInterval(s.obj) {
		return false
	}
	healthy := snap.healthy
	for _, o := range s.objects {
		now, ok := s.cachedMeta(ctx, o)
		if !ok || healthy[objectID(o)] != now.resourceVersion {
			return false
		}
	}
	return true
}

// cachedMeta reads an applied object's metadata from the watch cache (the informers that
// map its changes to the release); false when it is not there.
func (s *scope) cachedMeta(ctx context.Context, o *unstructured.Unstructured) (liveMeta, bool) {
	live, ok := s.cluster.watches.cached(ctx, o.GroupVersionKind(), client.ObjectKeyFromObject(o))
	if !ok {
		return liveMeta{}, false
	}
	return metaOf(live, o), true
}
