package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/predicates"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/receiver"
)

// +kubebuilder:rbac:groups=release.immutable.dev,resources=receivers,verbs=get;list;watch
// +kubebuilder:rbac:groups=release.immutable.dev,resources=receivers/status,verbs=get;update;patch

// ReceiverReconciler keeps the webhook receiver's Registry in step with the Receivers: it
// reads a Receiver's Secret once per reconcile (uncached: the manager has no list or watch
// on Secrets), derives the Receiver's path from the token, and registers path and token.
// The handler reads only the Registry, so no request, signed or not, reads a Secret. The
// Secret is read again at spec.interval and on a reconcile request, which is how a rotated
// token takes effect.
//
// It runs on every replica, as the receiver's server does, so that each replica serves
// every path; only the elected replica writes status.
type ReceiverReconciler struct {
	client.Client
	// APIReader reads Secrets from the API server.
	APIReader client.Reader
	Registry  *receiver.Registry
	// Elected is closed once this replica leads; nil takes the manager's.
	Elected <-chan struct{}
}

// SetupWithManager registers the reconciler.
func (r *ReceiverReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Elected == nil {
		r.Elected = mgr.Elected()
	}
	everyReplica := false
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Receiver{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicates.ReconcileRequestedPredicate{}),
		)).
		Named("receiver").
		WithOptions(controller.Options{
			NeedLeaderElection: &everyReplica,
			// A Secret created after its Receiver is noticed within 30s.
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](time.Second, 30*time.Second),
		}).
		Complete(r)
}

// Prime registers every Receiver the cache holds, so that a replica serves their paths from
// its first request rather than after each one's first reconcile. It waits for the cache;
// a Receiver that fails here is left to its reconcile to report.
func (r *ReceiverReconciler) Prime(ctx context.Context, c cache.Cache) error {
	if !c.WaitForCacheSync(ctx) {
		return errors.New("the cache did not sync")
	}
	var list v1alpha1.ReceiverList
	if err := r.List(ctx, &list); err != nil {
		return fmt.Errorf("listing Receivers: %w", err)
	}
	for i := range list.Items {
		if obj := &list.Items[i]; obj.DeletionTimestamp.IsZero() {
			_, _ = r.register(ctx, obj, r.Registry.Add)
		}
	}
	return nil
}

// receiverFailure is why a Receiver serves nothing, with the reason its Ready condition says.
type receiverFailure struct {
	reason   string
	err      error
	terminal bool
}

func (f *receiverFailure) Error() string { return f.err.Error() }
func (f *receiverFailure) Unwrap() error { return f.err }

// Reconcile registers one Receiver's path and token, or forgets them.
func (r *ReceiverReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	obj := &v1alpha1.Receiver{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.Registry.Forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !obj.DeletionTimestamp.IsZero() {
		r.Registry.Forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	before := obj.DeepCopy()
	path, err := r.register(ctx, obj, r.Registry.Set)
	var failure *receiverFailure
	if err != nil && !errors.As(err, &failure) {
		// The API server did not answer: keep serving what was registered, and retry.
		return ctrl.Result{}, fmt.Errorf("reading the Secret of Receiver %s: %w", req.NamespacedName, err)
	}
	if failure != nil {
		r.Registry.Forget(req.NamespacedName)
	}
	setReceiverStatus(obj, path, failure)
	if err := r.patchStatus(ctx, obj, before); err != nil {
		return ctrl.Result{}, err
	}
	switch {
	case failure != nil && failure.terminal:
		return ctrl.Result{}, reconcile.TerminalError(failure)
	case failure != nil && failure.reason == v1alpha1.InvalidSecretReason:
		return ctrl.Result{}, failure
	default:
		return ctrl.Result{RequeueAfter: obj.GetInterval()}, nil
	}
}

// register reads the Receiver's token and makes its path serve it with set.
func (r *ReceiverReconciler) register(ctx context.Context, obj *v1alpha1.Receiver, set func(string, receiver.Endpoint) error) (string, error) {
	target := receiver.Target{Namespace: obj.Namespace}
	if res := obj.Spec.Resources; res != nil {
		target.Names = res.Names
		if res.Selector != nil {
			sel, err := metav1.LabelSelectorAsSelector(res.Selector)
			if err != nil {
				return "", &receiverFailure{reason: v1alpha1.InvalidSelectorReason, err: fmt.Errorf("spec.resources.selector: %w", err), terminal: true}
			}
			if sel.Empty() {
				sel = labels.Everything()
			}
			target.Selector = sel
		}
	}
	secret := &corev1.Secret{}
	key := client.ObjectKey{Namespace: obj.Namespace, Name: obj.Spec.SecretRef.Name}
	if err := r.APIReader.Get(ctx, key, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return "", &receiverFailure{reason: v1alpha1.InvalidSecretReason, err: fmt.Errorf("the Secret %s does not exist", key.Name)}
		}
		return "", err
	}
	token := secret.Data[v1alpha1.ReceiverTokenKey]
	if len(token) == 0 {
		return "", &receiverFailure{reason: v1alpha1.InvalidSecretReason, err: fmt.Errorf("the Secret %s has no key %s, or it is empty", key.Name, v1alpha1.ReceiverTokenKey)}
	}
	path := receiver.WebhookPath(token, obj.Name, obj.Namespace)
	endpoint := receiver.Endpoint{Receiver: client.ObjectKeyFromObject(obj), Type: obj.Spec.Type, Token: token, Target: target}
	if err := set(path, endpoint); err != nil {
		return "", &receiverFailure{reason: v1alpha1.WebhookPathConflictReason, err: fmt.Errorf("another Receiver serves the path this token gives; choose another token")}
	}
	return path, nil
}

// setReceiverStatus records the outcome: the path served and Ready, or why not.
func setReceiverStatus(obj *v1alpha1.Receiver, path string, failure *receiverFailure) {
	if v, ok := meta.ReconcileAnnotationValue(obj.GetAnnotations()); ok {
		obj.Status.LastHandledReconcileAt = v
	}
	obj.Status.ObservedGeneration = obj.Generation
	obj.Status.WebhookPath = path
	ready := metav1.Condition{Type: meta.ReadyCondition, Status: metav1.ConditionTrue, Reason: v1alpha1.ReceiverReadyReason,
		Message: "Serving pushes at " + path, ObservedGeneration: obj.Generation}
	if failure != nil {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, failure.reason, failure.err.Error()
	}
	apimeta.SetStatusCondition(&obj.Status.Conditions, ready)
	if failure != nil && failure.terminal {
		apimeta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{Type: meta.StalledCondition, Status: metav1.ConditionTrue,
			Reason: failure.reason, Message: failure.err.Error(), ObservedGeneration: obj.Generation})
	} else {
		apimeta.RemoveStatusCondition(&obj.Status.Conditions, meta.StalledCondition)
	}
}

// patchStatus writes the status when it changed, from the elected replica only: the others
// reach the same status from the same Receiver and Secret.
func (r *ReceiverReconciler) patchStatus(ctx context.Context, obj, before *v1alpha1.Receiver) error {
	if equality.Semantic.DeepEqual(before.Status, obj.Status) {
		return nil
	}
	select {
	case <-r.Elected:
	default:
		return nil
	}
	if err := r.Status().Patch(ctx, obj, client.MergeFrom(before)); err != nil {
		return client.IgnoreNotFound(err)
	}
	return nil
}
