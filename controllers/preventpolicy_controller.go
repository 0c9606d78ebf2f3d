package controllers

import (
	"context"
	"fmt"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

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
// from the cached releases at every reconcile; it remembers nothing.
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
}

// preventPolicyKey is the one key the controller reconciles.
var preventPolicyKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: admission.PolicyName}}

// SetupWithManager registers the controller.
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
	toKey := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{preventPolicyKey}
	})
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetName() == admission.PolicyName || o.GetName() == admission.CrossNamespaceBindingName
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("prevent-policy").
		Watches(&admissionv1.ValidatingAdmissionPolicy{}, toKey, builder.WithPredicates(ours)).
		Watches(&admissionv1.ValidatingAdmissionPolicyBinding{}, toKey, builder.WithPredicates(ours)).
		Watches(&v1alpha1.ImmutableRelease{}, toKey, builder.WithPredicates(predicate.Funcs{
			// Status writes, the most frequent updates, change nothing the policy depends on.
			UpdateFunc: func(e event.UpdateEvent) bool {
				return r.preventState(e.ObjectOld.(*v1alpha1.ImmutableRelease)) != r.preventState(e.ObjectNew.(*v1alpha1.ImmutableRelease))
			},
		})).
		Complete(r)
}

// preventState is what of a release the policy depends on.
func (r *PreventPolicyReconciler) preventState(obj *v1alpha1.ImmutableRelease) string {
	return fmt.Sprintf("%t/%s/%s/%s", obj.DeletionTimestamp.IsZero(), obj.GetDriftMode(), r.Tenancy.ServiceAccount(obj.Spec.ServiceAccountName), obj.Spec.TargetNamespace)
}

// Reconcile installs or removes the policy and its bindings.
func (r *PreventPolicyReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	var list v1alpha1.ImmutableReleaseList
	if err := r.List(ctx, &list); err != nil {
		return reconcile.Result{}, err
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
		var err error
		if prevent {
			err = r.replace(ctx, o)
		} else {
			err = client.IgnoreNotFound(r.Delete(ctx, o))
		}
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("reconciling the admission policy %s: %w", o.GetName(), err)
		}
	}
	return reconcile.Result{}, nil
}

// replace makes the live object exactly desired: its spec whole, and its labels. A server-
// side apply would leave what others added (a match condition that matches nothing, a
// selector expression), since those fields would be theirs. An update that changes nothing
// is not written, so it brings no watch event back.
func (r *PreventPolicyReconciler) replace(ctx context.Context, desired client.Object) error {
	live := desired.DeepCopyObject().(client.Object)
	err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(desired), live)
	if apierrors.IsNotFound(err) {
		return r.Create(ctx, desired.DeepCopyObject().(client.Object))
	}
	if err != nil {
		return err
	}
	switch d := desired.(type) {
	case *admissionv1.ValidatingAdmissionPolicy:
		live.(*admissionv1.ValidatingAdmissionPolicy).Spec = d.Spec
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		live.(*admissionv1.ValidatingAdmissionPolicyBinding).Spec = d.Spec
	}
	live.SetLabels(desired.GetLabels())
	return r.Update(ctx, live)
}
