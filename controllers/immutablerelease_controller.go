// Package controllers holds the ImmutableRelease reconciler. The decisions live in internal/:
// git fetches, manifest validates, apply applies and prunes, health judges rollouts.
package controllers

import (
	"context"
	"sync"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/jitter"
	"github.com/fluxcd/pkg/runtime/patch"
	"github.com/fluxcd/pkg/runtime/predicates"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/manifest"
)

// +kubebuilder:rbac:groups=release.immutable.dev,resources=immutablereleases,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=release.immutable.dev,resources=immutablereleases/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=release.immutable.dev,resources=immutablereleases/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=impersonate
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=*,resources=*,verbs=get;list;watch;create;update;patch;delete

// ImmutableReleaseReconciler reconciles ImmutableRelease objects.
type ImmutableReleaseReconciler struct {
	client.Client
	Config   *rest.Config
	Scheme   *runtime.Scheme
	Recorder events.EventRecorder
	Git      *git.Cache
	Options  Options

	// checks remembers, per release, when this process last checked Git and applied, so
	// that reconciles between intervals (health polling) neither list the remote nor apply.
	// Losing it (a restart) only costs one extra check.
	checks sync.Map // types.NamespacedName -> lastCheck
}

// Options tune the reconciler.
type Options struct {
	// Limits bound what one release may hold.
	Limits manifest.Limits
	// HealthPollInterval is how often a rollout in progress is looked at.
	HealthPollInterval time.Duration
	// MaxConcurrentReconciles is how many releases are reconciled at once.
	MaxConcurrentReconciles int
}

type lastCheck struct {
	at         time.Time
	generation int64
	token      string
}

// SetupWithManager registers the reconciler.
func (r *ImmutableReleaseReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Options.HealthPollInterval == 0 {
		r.Options.HealthPollInterval = 2 * time.Second
	}
	if r.Options.Limits == (manifest.Limits{}) {
		r.Options.Limits = manifest.DefaultLimits
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.ImmutableRelease{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicates.ReconcileRequestedPredicate{}),
		)).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Options.MaxConcurrentReconciles, 1)}).
		Complete(r)
}

// Reconcile brings one release in line with Git.
func (r *ImmutableReleaseReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	start := time.Now()
	obj := &v1alpha1.ImmutableRelease{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	if obj.DeletionTimestamp.IsZero() && !controllerutil.ContainsFinalizer(obj, v1alpha1.Finalizer) {
		base := obj.DeepCopy()
		controllerutil.AddFinalizer(obj, v1alpha1.Finalizer)
		// A finalizer does not change the generation: ask for the next reconcile explicitly.
		return ctrl.Result{RequeueAfter: time.Millisecond}, r.Patch(ctx, obj, client.MergeFrom(base))
	}

	patcher := patch.NewSerialPatcher(obj, r.Client)
	defer func() {
		result, retErr = r.finalizeStatus(ctx, obj, patcher, result, retErr, start)
	}()

	if !obj.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.reconcileDelete(ctx, obj)
	}
	if obj.Spec.Suspend {
		return ctrl.Result{}, nil
	}
	return r.reconcile(ctx, obj)
}

// requeue is the jittered interval, or the health poll while a rollout is in progress.
func requeue(obj *v1alpha1.ImmutableRelease, polling time.Duration) ctrl.Result {
	if polling > 0 {
		return ctrl.Result{RequeueAfter: polling}
	}
	return ctrl.Result{RequeueAfter: jitter.JitteredIntervalDuration(obj.GetRequeueAfter())}
}

// gitCheckDue says whether this reconcile must list the remote and apply: the first time in
// this process, after a spec change or a reconcile request, and once per interval. fresh
// says the remote head must be listed now, not taken from another release's recent answer:
// someone asked for this reconcile, likely right after a push.
func (r *ImmutableReleaseReconciler) gitCheckDue(obj *v1alpha1.ImmutableRelease) (due, fresh bool) {
	v, ok := r.checks.Load(types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name})
	if !ok || obj.Status.LastAttemptedRevision == "" {
		return true, false
	}
	c := v.(lastCheck)
	token, _ := meta.ReconcileAnnotationValue(obj.GetAnnotations())
	if c.generation != obj.Generation || c.token != token {
		return true, true
	}
	return time.Since(c.at) >= obj.GetRequeueAfter(), false
}

func (r *ImmutableReleaseReconciler) recordGitCheck(obj *v1alpha1.ImmutableRelease) {
	token, _ := meta.ReconcileAnnotationValue(obj.GetAnnotations())
	r.checks.Store(types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}, lastCheck{at: time.Now(), generation: obj.Generation, token: token})
}

func (r *ImmutableReleaseReconciler) forgetGitCheck(obj *v1alpha1.ImmutableRelease) {
	r.checks.Delete(types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name})
}

// event records an event about the release.
func (r *ImmutableReleaseReconciler) event(obj *v1alpha1.ImmutableRelease, eventType, reason, action, message string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(obj, nil, eventType, reason, action, "%s", message)
	}
}
