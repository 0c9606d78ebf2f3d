package controllers

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/runtime/conditions"
	"github.com/fluxcd/pkg/ssa"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/apply"
	"github.com/immutable-release/operator/internal/drift"
	"github.com/immutable-release/operator/internal/manifest"
)

// objectDrift is how one live object differs from Git.
type objectDrift struct {
	index   int // in scope.objects
	desired *unstructured.Unstructured
	object  string
	deleted bool
	changes []drift.Change
	by      string
}

func (d objectDrift) String() string {
	if d.deleted {
		return d.object + " was deleted"
	}
	parts := make([]string, len(d.changes))
	for i, c := range d.changes {
		parts[i] = c.String()
	}
	msg := d.object + ": " + strings.Join(parts, ", ")
	if len(d.changes) == 0 {
		msg = d.object + ": fields the release manages were taken over"
	}
	if d.by != "" {
		msg += ", changed by " + d.by
	}
	return msg
}

func (d objectDrift) image() bool {
	for _, c := range d.changes {
		if c.Image {
			return true
		}
	}
	return false
}

// handleDrift compares the live objects with the revision already applied. Correct and
// Prevent put back what differs at once; Report only says so in the Drifted condition.
// Containers others added (injected sidecars) are recorded, never removed.
func (r *ImmutableReleaseReconciler) handleDrift(ctx context.Context, s *scope) error {
	obj := s.obj
	cmp, err := r.detectDrift(ctx, s)
	if err != nil {
		return retry(v1alpha1.ApplyFailedReason, fmt.Errorf("comparing the live objects with revision %s: %w", s.revision, err))
	}
	if err := r.relabel(ctx, s, cmp); err != nil {
		return err
	}
	drifts := cmp.drifts
	obj.Status.InjectedContainers = cmp.injected
	if len(drifts) == 0 {
		r.recordSnapshot(s, cmp.lives, cmp.snap)
	}

	if obj.GetDriftMode() == v1alpha1.DriftReport {
		if len(drifts) == 0 {
			conditions.MarkFalse(obj, v1alpha1.DriftedCondition, v1alpha1.NoDriftReason, "the live objects match revision %s", s.revision)
			return nil
		}
		reason := v1alpha1.SpecDriftReason
		for _, d := range drifts {
			if d.image() {
				reason = v1alpha1.ImageDriftReason
			}
		}
		msg := fmt.Sprintf("%d objects differ from revision %s: %s", len(drifts), s.revision, joinDrifts(drifts))
		if conditions.GetMessage(obj, v1alpha1.DriftedCondition) != msg {
			r.event(obj, corev1.EventTypeWarning, reason, "DetectDrift", msg)
		}
		conditions.MarkTrue(obj, v1alpha1.DriftedCondition, reason, "%s", msg)
		return nil
	}

	conditions.Delete(obj, v1alpha1.DriftedCondition)
	if len(drifts) == 0 {
		return nil
	}
	// Only what drifted is put back: each was dry-run by the comparison.
	fix := make([]*unstructured.Unstructured, len(drifts))
	cs := ssa.NewChangeSet()
	for i, d := range drifts {
		fix[i] = d.desired
		action := ssa.ConfiguredAction
		if d.deleted {
			action = ssa.CreatedAction
		}
		cs.Add(ssa.ChangeSetEntry{ObjMetadata: object.UnstructuredToObjMetadata(d.desired), Subject: d.object, Action: action})
	}
	put, err := s.applier.Put(ctx, fix)
	if err != nil {
		s.mem.setSnapshot(nil)
		return retry(v1alpha1.ApplyFailedReason, fmt.Errorf("putting back revision %s: %w", s.revision, err))
	}
	// The answers to the corrections are the objects as Git has them again: the reconcile
	// their watch events bring need not compare them once more.
	for i, d := range drifts {
		cmp.lives[d.index] = put[i]
	}
	s.remember(fix, put)
	r.recordSnapshot(s, cmp.lives, cmp.snap)
	r.startRolloutIfChanged(s, cs)
	// Counted through pendingCorrections: if this reconcile's status write is dropped (a
	// conflict), the next one finds no drift left and would not count it again.
	s.mem.addCorrections(int64(len(drifts)))
	driftCorrections.WithLabelValues(obj.Namespace, obj.Name).Add(float64(len(drifts)))
	r.event(obj, corev1.EventTypeNormal, v1alpha1.DriftCorrectedReason, "CorrectDrift",
		fmt.Sprintf("Put back revision %s: %s", s.revision, joinDrifts(drifts)))
	return nil
}

// comparison is what detectDrift found.
type comparison struct {
	drifts []objectDrift
	// moved are objects that differ from Git only by the shard labels (shard.Stamp).
	moved    []objectDrift
	injected []v1alpha1.WorkloadImage
	// lives[i] is the live copy of scope.objects[i] read for the comparison, or nil when
	// snap showed it unchanged.
	lives []*unstructured.Unstructured
	snap  *snapshot
}

// detectDrift dry-runs the apply of every object and compares it with the live object.
// Objects the metadata cache shows unchanged since the last comparison found them equal to
// Git are not compared again: an edit to one object of a release costs one comparison.
func (r *ImmutableReleaseReconciler) detectDrift(ctx context.Context, s *scope) (*comparison, error) {
	c := &comparison{lives: make([]*unstructured.Unstructured, len(s.objects)), snap: r.comparableSnapshot(s)}
	for i, o := range s.objects {
		name := manifest.ObjectName(o)
		if c.snap != nil && r.objectUnchanged(ctx, s, c.snap, o) {
			c.injected = append(c.injected, injectedOf(s.obj, name)...)
			continue
		}
		live, merged, err := s.applier.Diff(ctx, o)
		if err != nil {
			return nil, err
		}
		c.lives[i] = live
		if live == nil {
			c.drifts = append(c.drifts, objectDrift{index: i, desired: o, object: name, deleted: true})
			continue
		}
		if changes := drift.Compare(merged, live); len(changes) > 0 {
			d := objectDrift{index: i, desired: o, object: name, changes: changes, by: drift.ChangedBy(live, apply.FieldManager)}
			if r.onlyShardLabels(changes) {
				// The release came from another shard: its objects still carry that
				// shard's labels. Not drift: they are relabelled, quietly.
				c.moved = append(c.moved, d)
			} else {
				c.drifts = append(c.drifts, d)
			}
		}
		c.injected = append(c.injected, injectedContainers(name, o, live)...)
	}
	return c, nil
}

// relabel applies the shard's labels to objects that came with their release from another
// shard, in every drift mode: the labels are the operator's, not the release's.
func (r *ImmutableReleaseReconciler) relabel(ctx context.Context, s *scope, cmp *comparison) error {
	if len(cmp.moved) == 0 {
		return nil
	}
	fix := make([]*unstructured.Unstructured, len(cmp.moved))
	for i, d := range cmp.moved {
		fix[i] = d.desired
	}
	put, err := s.applier.Put(ctx, fix)
	if err != nil {
		return retry(v1alpha1.ApplyFailedReason, fmt.Errorf("labelling the objects of revision %s for this shard: %w", s.revision, err))
	}
	for i, d := range cmp.moved {
		cmp.lives[d.index] = put[i]
	}
	s.remember(fix, put)
	return nil
}

// onlyShardLabels says whether every change is to a label the shard selector names.
func (r *ImmutableReleaseReconciler) onlyShardLabels(changes []drift.Change) bool {
	keys := r.Options.Shard.Keys()
	if len(keys) == 0 {
		return false
	}
	for _, c := range changes {
		if !slices.ContainsFunc(keys, func(k string) bool { return c.Path == "metadata.labels["+k+"]" }) {
			return false
		}
	}
	return true
}

// injectedOf returns the injected containers status already lists for the workload name.
func injectedOf(obj *v1alpha1.ImmutableRelease, name string) []v1alpha1.WorkloadImage {
	var out []v1alpha1.WorkloadImage
	for _, c := range obj.Status.InjectedContainers {
		if c.Workload == name {
			out = append(out, c)
		}
	}
	return out
}

// injectedContainers lists the containers live runs that Git does not name.
func injectedContainers(name string, desired, live *unstructured.Unstructured) []v1alpha1.WorkloadImage {
	want := map[string]bool{}
	for _, c := range manifest.Containers(desired) {
		want[c.Name] = true
	}
	var out []v1alpha1.WorkloadImage
	for _, c := range manifest.Containers(live) {
		if !want[c.Name] {
			out = append(out, v1alpha1.WorkloadImage{Workload: name, Container: c.Name, Image: c.Image})
		}
	}
	return out
}

func joinDrifts(drifts []objectDrift) string {
	parts := make([]string, len(drifts))
	for i, d := range drifts {
		parts[i] = d.String()
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// startRolloutIfChanged restarts the health clock when an apply changed anything.
func (r *ImmutableReleaseReconciler) startRolloutIfChanged(s *scope, cs *ssa.ChangeSet) {
	for _, e := range cs.Entries {
		if e.Action == ssa.CreatedAction || e.Action == ssa.ConfiguredAction {
			s.changed = true
		}
	}
	if s.changed || !conditions.Has(s.obj, v1alpha1.HealthyCondition) {
		// A new rollout: its timeout starts now, at the condition's transition time.
		conditions.Delete(s.obj, v1alpha1.HealthyCondition)
		conditions.MarkUnknown(s.obj, v1alpha1.HealthyCondition, v1alpha1.HealthCheckPendingReason, "rollout of %s started", s.revision)
	}
}
