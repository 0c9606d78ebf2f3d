package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	"github.com/fluxcd/pkg/ssa"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/manifest"
)

// failure is an error with the reason it gets on the Ready condition. A stalled failure
// cannot be fixed by retrying the same input: it waits for a new commit or a new spec, at
// the normal interval. Any other failure is retried with backoff.
type failure struct {
	reason  string
	err     error
	stalled bool
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func retry(reason string, err error) error { return &failure{reason: reason, err: err} }
func stall(reason string, err error) error { return &failure{reason: reason, err: err, stalled: true} }

// finalizeStatus runs once at the end of every reconcile: it derives Ready, Reconciling and
// Stalled from the outcome, records the handled reconcile request and the observed
// generation, patches the status, and emits one event for a failure.
func (r *ImmutableReleaseReconciler) finalizeStatus(ctx context.Context, obj, before *v1alpha1.ImmutableRelease, mem *memory,
	result ctrl.Result, err error, start time.Time) (ctrl.Result, error) {
	if v, ok := meta.ReconcileAnnotationValue(obj.GetAnnotations()); ok {
		obj.Status.SetLastHandledReconcileRequest(v)
	}

	var f *failure
	switch {
	case !obj.DeletionTimestamp.IsZero():
	case isWaiting(err) || isVerifying(err):
		conditions.MarkUnknown(obj, meta.ReadyCondition, v1alpha1.ProgressingReason, "%s", err.Error())
		conditions.MarkReconciling(obj, v1alpha1.ProgressingReason, "%s", err.Error())
		conditions.Delete(obj, meta.StalledCondition)
		err = nil
	case errors.As(err, &f):
		repeated := sameFailure(obj, f)
		conditions.MarkFalse(obj, meta.ReadyCondition, f.reason, "%s", f.err.Error())
		if f.stalled {
			conditions.MarkStalled(obj, f.reason, "%s", f.err.Error())
			conditions.Delete(obj, meta.ReconcilingCondition)
			err = nil
		} else {
			conditions.MarkReconciling(obj, v1alpha1.ProgressingWithRetryReason, "retrying: %s", f.err.Error())
			conditions.Delete(obj, meta.StalledCondition)
		}
		if !repeated {
			r.event(obj, corev1.EventTypeWarning, f.reason, "Reconcile", f.err.Error())
		}
	case err != nil:
		conditions.MarkFalse(obj, meta.ReadyCondition, meta.ReconciliationFailedReason, "%s", err.Error())
		conditions.MarkReconciling(obj, v1alpha1.ProgressingWithRetryReason, "retrying: %s", err.Error())
	case obj.Spec.Suspend:
	case conditions.IsTrue(obj, v1alpha1.HealthyCondition):
		conditions.MarkTrue(obj, meta.ReadyCondition, v1alpha1.ReconciliationSucceededReason, "Applied revision %s", obj.Status.LastAppliedRevision)
		conditions.Delete(obj, meta.ReconcilingCondition)
		conditions.Delete(obj, meta.StalledCondition)
	default:
		msg := conditions.GetMessage(obj, v1alpha1.HealthyCondition)
		conditions.MarkUnknown(obj, meta.ReadyCondition, v1alpha1.ProgressingReason, "%s", msg)
		conditions.MarkReconciling(obj, v1alpha1.ProgressingReason, "%s", msg)
		conditions.Delete(obj, meta.StalledCondition)
	}
	if conditions.IsReady(obj) || conditions.IsStalled(obj) {
		obj.Status.ObservedGeneration = obj.Generation
	}
	key := client.ObjectKeyFromObject(obj)
	gone := !obj.DeletionTimestamp.IsZero() && !controllerutil.ContainsFinalizer(obj, v1alpha1.Finalizer)
	if !gone {
		recordReady(obj, conditions.IsReady(obj))
	}
	corrections := mem.pendingCorrections()
	obj.Status.DriftCorrections += corrections
	perr := r.patch(ctx, obj, before)
	switch {
	case gone && perr == nil:
		// The finalizer is removed: the release is gone, and so is what this process
		// remembers of it.
		r.forget(key)
		return result, err
	case perr == nil:
		mem.correctionsWritten(corrections)
		if obj.ResourceVersion != before.ResourceVersion {
			mem.wrote(overwritten{resourceVersion: before.ResourceVersion, at: time.Now()})
		}
	default:
		// What was applied is not recorded in status: the next reconcile applies again.
		mem.setSnapshot(nil)
		if apierrors.IsConflict(perr) {
			// The object changed since it was read (the cache can lag behind our own last
			// write): this reconcile's view was stale, so its status is dropped and the
			// release reconciled again from a fresh read.
			log.FromContext(ctx).V(1).Info("Status patch conflicted; reconciling again")
			return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
		}
		err = errors.Join(err, perr)
	}
	log.FromContext(ctx).V(1).Info("Reconciled release", "duration", time.Since(start).String(), "revision", obj.Status.LastAppliedRevision)
	return result, err
}

// patch writes the finalizers and the status. The status patch carries the resourceVersion
// that was read, so a reconcile working from a stale copy cannot overwrite newer status.
func (r *ImmutableReleaseReconciler) patch(ctx context.Context, obj, before *v1alpha1.ImmutableRelease) error {
	if !equality.Semantic.DeepEqual(obj.Finalizers, before.Finalizers) {
		status := obj.Status.DeepCopy()
		if err := r.Patch(ctx, obj, client.MergeFrom(before)); err != nil {
			return client.IgnoreNotFound(err)
		}
		if !obj.DeletionTimestamp.IsZero() && !controllerutil.ContainsFinalizer(obj, v1alpha1.Finalizer) {
			// The object is gone once its last finalizer is removed; no status to write.
			return nil
		}
		obj.Status = *status
		before = before.DeepCopy()
		before.ResourceVersion = obj.ResourceVersion
	}
	if equality.Semantic.DeepEqual(obj.Status, before.Status) {
		return nil
	}
	return client.IgnoreNotFound(r.Status().Patch(ctx, obj, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})))
}

// sameFailure says whether the Ready condition already reports this failure, so that a
// retry of the same failure does not repeat its warning event.
func sameFailure(obj *v1alpha1.ImmutableRelease, f *failure) bool {
	old := conditions.Get(obj, meta.ReadyCondition)
	return old != nil && old.Status == metav1.ConditionFalse && old.Reason == f.reason && old.Message == f.err.Error()
}

// recordRelease adds a history entry for a newly applied revision, newest first.
func recordRelease(obj *v1alpha1.ImmutableRelease, revision string, commit git.Commit, checksum string) {
	rec := v1alpha1.ReleaseRecord{
		Revision:       revision,
		Subject:        commit.Subject,
		Author:         commit.Author,
		AppliedAt:      metav1.Now(),
		ImagesChecksum: checksum,
		Result:         v1alpha1.ReleaseApplied,
	}
	if !commit.Time.IsZero() {
		t := metav1.NewTime(commit.Time)
		rec.CommitTime = &t
	}
	obj.Status.History = append([]v1alpha1.ReleaseRecord{rec}, obj.Status.History...)
	if len(obj.Status.History) > v1alpha1.MaxHistory {
		obj.Status.History = obj.Status.History[:v1alpha1.MaxHistory]
	}
}

// setResult records the health verdict of revision in its history entry. A verdict, once
// Failed, is kept: it is what happened to that rollout.
func setResult(obj *v1alpha1.ImmutableRelease, revision string, result v1alpha1.ReleaseResult, message string) {
	for i := range obj.Status.History {
		h := &obj.Status.History[i]
		if h.Revision != revision {
			continue
		}
		if h.Result == v1alpha1.ReleaseFailed && result == v1alpha1.ReleaseHealthy {
			return
		}
		h.Result, h.Message = result, message
		return
	}
}

// workloadImages lists the image of every container of every object that has a pod spec.
func workloadImages(objects []*unstructured.Unstructured) []v1alpha1.WorkloadImage {
	var out []v1alpha1.WorkloadImage
	for _, o := range objects {
		for _, c := range manifest.Containers(o) {
			out = append(out, v1alpha1.WorkloadImage{Workload: manifest.ObjectName(o), Container: c.Name, Image: c.Image})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Workload != out[j].Workload {
			return out[i].Workload < out[j].Workload
		}
		return out[i].Container < out[j].Container
	})
	return out
}

func imagesChecksum(images []v1alpha1.WorkloadImage) string {
	lines := make([]string, len(images))
	for i, im := range images {
		lines[i] = im.Workload + "=" + im.Container + "=" + im.Image
	}
	return manifest.ImagesChecksum(lines)
}

// summarize counts the changes of an apply: "2 created, 1 configured, 1 deleted".
func summarize(cs *ssa.ChangeSet) string {
	counts := map[ssa.Action]int{}
	for _, e := range cs.Entries {
		counts[e.Action]++
	}
	var parts []string
	for _, a := range []ssa.Action{ssa.CreatedAction, ssa.ConfiguredAction, ssa.DeletedAction} {
		if counts[a] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[a], a))
		}
	}
	return strings.Join(parts, ", ")
}

func orNothing(s string) string {
	if s == "" {
		return "no changes"
	}
	return s
}
