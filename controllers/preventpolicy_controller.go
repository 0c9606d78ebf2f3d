package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/admission"
	"github.com/immutable-release/operator/internal/tenancy"
)

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=get;list;watch;create;update;delete

// PreventPolicyReconciler keeps the ValidatingAdmissionPolicy of drift mode Prevent and its
// bindings (see package admission) while any release uses that mode, and removes them when
// none does. It is one controller with one key for the whole cluster, not a step of a
// release's reconcile: it watches the releases, the policy and the bindings, so that a
// policy or binding someone deleted or edited is put back at once. What it decides comes
// from the cached releases at every reconcile; all it remembers is the resourceVersion of
// what it last wrote, so that an object the watch cache shows unchanged since is not read
// or written again.
//
// The policy is one for the cluster, but a manager started with --watch-label-selector
// reconciles only its shard's releases, and every shard's leader runs this controller. So
// the releases it decides from are not the manager's: SetupWithManager gives it a cache of
// its own that holds every release of the cluster, whatever the shard, and of each only the
// fields the policy depends on (see preventFields). Every shard's leader then computes the
// same policy and bindings: the first writes them, the others find nothing to change, and
// no shard deletes them while a release of another shard is in Prevent mode. The shards
// must run as the same user with the same --default-service-account, since both are
// written into the policy (and a shard whose user the policy does not name could not apply
// its own Prevent releases' images).
type PreventPolicyReconciler struct {
	client.Client
	// APIReader reads the policy and bindings as the API server has them, to replace them.
	APIReader client.Reader
	// Config learns the operator's user when OperatorUser is empty.
	Config *rest.Config
	// OperatorUser is the user the operator acts as; the policy lets it through.
	OperatorUser string
	// Tenancy says which account a release acts as.
	Tenancy tenancy.Policy

	// releases holds every release of the cluster, trimmed by preventFields; SetupWithManager
	// creates it.
	releases cache.Cache
	// written holds, per object name, what this controller last wrote or found right (the
	// desired object, as JSON) and the resourceVersion the API server then had: while the
	// watch cache shows that resourceVersion, the object is still right. Losing it costs
	// one read.
	written sync.Map // string -> writtenAs
}

// writtenAs is an object as this controller last made it right.
type writtenAs struct{ desired, resourceVersion string }

// preventPolicyKey is the one key the controller reconciles.
var preventPolicyKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: admission.PolicyName}}

// SetupWithManager registers the controller, and the cache of every release it reads.
func (r *PreventPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.OperatorUser == "" {
		user, err := admission.WhoAmI(context.Background(), r.Config)
		if err != nil {
			return err
		}
		r.OperatorUser = user
	}
	releases, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient: mgr.GetHTTPClient(),
		Scheme:     mgr.GetScheme(),
		Mapper:     mgr.GetRESTMapper(),
		// Only releases: a read of any other kind is an error, not a new cluster-wide
		// informer.
		ReaderFailOnMissingInformer: true,
		ByObject: map[client.Object]cache.ByObject{
			// No label selector: every shard's releases.
			&v1alpha1.ImmutableRelease{}: {Label: labels.Everything(), Transform: preventFields},
		},
	})
	if err != nil {
		return fmt.Errorf("creating the cache of every release: %w", err)
	}
	// Only the leader reconciles, so only the leader needs every release: the standby
	// replicas of each shard do not watch them. A new leader lists them before its first
	// reconcile (the controller waits for the cache to sync); the policy stays in place
	// meanwhile.
	if err := mgr.Add(leaderElectedCache{releases}); err != nil {
		return err
	}
	r.releases = releases
	toKey := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{preventPolicyKey}
	})
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetName() == admission.PolicyName || o.GetName() == admission.CrossNamespaceBindingName
	})
	releaseToKey := handler.TypedEnqueueRequestsFromMapFunc(func(context.Context, *v1alpha1.ImmutableRelease) []reconcile.Request {
		return []reconcile.Request{preventPolicyKey}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("prevent-policy").
		// The policy and bindings are in the manager's cache (see CacheOptions).
		Watches(&admissionv1.ValidatingAdmissionPolicy{}, toKey, builder.WithPredicates(ours)).
		Watches(&admissionv1.ValidatingAdmissionPolicyBinding{}, toKey, builder.WithPredicates(ours)).
		WatchesRawSource(source.Kind(releases, &v1alpha1.ImmutableRelease{}, releaseToKey, predicate.TypedFuncs[*v1alpha1.ImmutableRelease]{
			// A release's updates that change nothing the policy depends on (its status
			// writes above all) are not reconciled.
			UpdateFunc: func(e event.TypedUpdateEvent[*v1alpha1.ImmutableRelease]) bool {
				return r.preventState(e.ObjectOld) != r.preventState(e.ObjectNew)
			},
		})).
		Complete(r)
}

// leaderElectedCache runs a cache only on the elected leader.
type leaderElectedCache struct{ cache.Cache }

// NeedLeaderElection is true: see SetupWithManager.
func (leaderElectedCache) NeedLeaderElection() bool { return true }

// preventFields keeps of a release only what the policy depends on (see Reconcile), and
// what the cache itself needs, so that thousands of releases, their status and the rest of
// their spec, do not stay in memory twice. Idempotent, as an informer's transform must be.
func preventFields(obj any) (any, error) {
	rel, ok := obj.(*v1alpha1.ImmutableRelease)
	if !ok {
		return obj, nil
	}
	kept := &v1alpha1.ImmutableRelease{
		ObjectMeta: metav1.ObjectMeta{
			Name:              rel.Name,
			Namespace:         rel.Namespace,
			UID:               rel.UID,
			ResourceVersion:   rel.ResourceVersion,
			DeletionTimestamp: rel.DeletionTimestamp,
		},
		Spec: v1alpha1.ImmutableReleaseSpec{
			ServiceAccountName: rel.Spec.ServiceAccountName,
			TargetNamespace:    rel.Spec.TargetNamespace,
		},
	}
	if rel.Spec.Drift != nil {
		kept.Spec.Drift = &v1alpha1.DriftSpec{Mode: rel.Spec.Drift.Mode}
	}
	return kept, nil
}

// preventState is what of a release the policy depends on.
func (r *PreventPolicyReconciler) preventState(obj *v1alpha1.ImmutableRelease) string {
	return fmt.Sprintf("%t/%s/%s/%s", obj.DeletionTimestamp.IsZero(), obj.GetDriftMode(), r.Tenancy.ServiceAccount(obj.Spec.ServiceAccountName), obj.Spec.TargetNamespace)
}

// Reconcile installs or removes the policy and its bindings, from every release of the
// cluster.
func (r *PreventPolicyReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	var list v1alpha1.ImmutableReleaseList
	// Read only, so not copied out of the cache.
	if err := r.releases.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing the releases: %w", err)
	}
	accounts := admission.Accounts{Operator: r.OperatorUser, DefaultServiceAccount: r.Tenancy.DefaultServiceAccount, CrossNamespace: map[string]string{}}
	prevent := false
	for i := range list.Items {
		rel := &list.Items[i]
		if !rel.DeletionTimestamp.IsZero() || rel.GetDriftMode() != v1alpha1.DriftPrevent {
			continue
		}
		prevent = true
		sa := r.Tenancy.ServiceAccount(rel.Spec.ServiceAccountName)
		if sa != "" && rel.Spec.TargetNamespace != "" && rel.Spec.TargetNamespace != rel.Namespace {
			accounts.CrossNamespace[rel.Namespace+"/"+rel.Name] = admission.User(rel.Namespace, sa)
		}
	}
	policy, bindings := admission.Policy(accounts)
	objects := []client.Object{policy}
	for _, b := range bindings {
		objects = append(objects, b)
	}
	for _, o := range objects {
		// The watch cache holds the policy and bindings: an object it shows as this
		// controller last made it, or one it shows absent when none is wanted, is not
		// written, nor read again. Were the cache behind, the watch event that brings it up
		// to date reconciles again.
		cached := o.DeepCopyObject().(client.Object)
		err := r.Get(ctx, client.ObjectKeyFromObject(o), cached)
		switch {
		case err != nil && !apierrors.IsNotFound(err):
		case prevent && err == nil && r.stillWritten(cached, o):
			continue
		case !prevent && apierrors.IsNotFound(err):
			continue
		}
		if prevent {
			err = r.replace(ctx, o)
		} else {
			r.written.Delete(o.GetName())
			err = client.IgnoreNotFound(r.Delete(ctx, o))
		}
		if apierrors.IsConflict(err) {
			// Another shard's leader wrote it since it was read: most likely what this one
			// would write. Look again from a fresh read, without an error.
			return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
		}
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("reconciling the admission policy %s: %w", o.GetName(), err)
		}
	}
	return reconcile.Result{}, nil
}

// stillWritten says whether the cached object is at the resourceVersion it had when this
// controller last made it what desired is now.
func (r *PreventPolicyReconciler) stillWritten(cached, desired client.Object) bool {
	v, ok := r.written.Load(desired.GetName())
	return ok && v.(writtenAs).resourceVersion == cached.GetResourceVersion() && v.(writtenAs).desired == asJSON(desired)
}

func asJSON(o client.Object) string {
	b, _ := json.Marshal(o)
	return string(b)
}

// replace makes the live object exactly desired: its spec whole, and its labels. A server-
// side apply would leave what others added (a match condition that matches nothing, a
// selector expression), since those fields would be theirs. An update that changes nothing
// is not written, so it brings no watch event back.
func (r *PreventPolicyReconciler) replace(ctx context.Context, desired client.Object) error {
	r.written.Delete(desired.GetName())
	resourceVersion, err := replacePolicyObject(ctx, r.APIReader, r.Client, desired)
	if err != nil {
		return err
	}
	r.written.Store(desired.GetName(), writtenAs{desired: asJSON(desired), resourceVersion: resourceVersion})
	return nil
}

// replacePolicyObject creates the policy or binding desired, or writes its whole spec and
// labels over the live one, read with reader: a field someone added (a matchCondition that
// matches nothing, a namespaceSelector) does not survive. It returns the resourceVersion
// written. Another writer that created it since the read (another shard's leader) is most
// likely writing the same: its object is taken and written over.
func replacePolicyObject(ctx context.Context, reader client.Reader, writer client.Writer, desired client.Object) (string, error) {
	live := desired.DeepCopyObject().(client.Object)
	key := client.ObjectKeyFromObject(desired)
	err := reader.Get(ctx, key, live)
	if apierrors.IsNotFound(err) {
		created := desired.DeepCopyObject().(client.Object)
		if err = writer.Create(ctx, created); err == nil {
			return created.GetResourceVersion(), nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return "", err
		}
		err = reader.Get(ctx, key, live)
	}
	if err != nil {
		return "", err
	}
	switch d := desired.(type) {
	case *admissionv1.ValidatingAdmissionPolicy:
		live.(*admissionv1.ValidatingAdmissionPolicy).Spec = d.Spec
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		live.(*admissionv1.ValidatingAdmissionPolicyBinding).Spec = d.Spec
	}
	live.SetLabels(desired.GetLabels())
	if err := writer.Update(ctx, live); err != nil {
		return "", err
	}
	return live.GetResourceVersion(), nil
}
