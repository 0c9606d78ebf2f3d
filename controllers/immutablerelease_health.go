package controllers

import (
	"fmt"

	"github.com/fluxcd/pkg/apis/meta"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/manifest"
	"github.com/immutable-release/operator/internal/tenancy"
)

// prepareHealth compiles spec.healthCheckExprs and finds the objects spec.healthChecks
// names, before anything is applied: a spec whose rollouts cannot be judged as it asks is
// refused, and so is one that would read the health of objects the release may not touch.
func (r *ImmutableReleaseReconciler) prepareHealth(s *scope) error {
	obj := s.obj
	exprs, err := s.mem.healthExprs(obj.Spec.HealthCheckExprs)
	if err != nil {
		return stall(v1alpha1.InvalidHealthCheckExprReason, fmt.Errorf("%w; nothing of this spec is applied until it is fixed", err))
	}
	s.exprs = exprs
	s.healthChecks = nil
	confined := r.confined(obj)
	for i, ref := range obj.Spec.HealthChecks {
		o, err := healthCheckObject(s.client.RESTMapper(), obj.Namespace, ref)
		if err != nil {
			return retry(v1alpha1.HealthCheckFailedReason, fmt.Errorf("spec.healthChecks[%d]: %w", i, err))
		}
		// The release's client reads it: an impersonated release is held by its account's
		// RBAC, one that acts as the operator by the same confinement as what it applies.
		if why := r.Options.Tenancy.Refusal(obj.Namespace, confined, o); why != "" {
			return stall(tenancy.ReasonAccessDenied, fmt.Errorf("spec.healthChecks[%d] names %s: %s; nothing of this spec is applied", i, manifest.ObjectName(o), why))
		}
		s.healthChecks = append(s.healthChecks, o)
	}
	return nil
}

// healthCheckObject is the object ref names, its namespace set as an applied object's is:
// ref's, else the release's, and none for a cluster-scoped kind. The version, when ref has
// none, is the one the API server prefers. A kind the API server does not serve (yet) is
// left as ref says: the health check reports it as not served.
func healthCheckObject(mapper apimeta.RESTMapper, namespace string, ref meta.NamespacedObjectKindReference) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(ref.APIVersion)
	u.SetKind(ref.Kind)
	u.SetName(ref.Name)
	u.SetNamespace(ref.Namespace)
	if ref.Namespace == "" {
		u.SetNamespace(namespace)
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return u, nil
	}
	var versions []string
	if gv.Version != "" {
		versions = []string{gv.Version}
	}
	mapping, err := mapper.RESTMapping(schema.GroupKind{Group: gv.Group, Kind: ref.Kind}, versions...)
	switch {
	case apimeta.IsNoMatchError(err):
		return u, nil
	case err != nil:
		return nil, fmt.Errorf("looking up %s %s: %w", ref.APIVersion, ref.Kind, err)
	}
	u.SetGroupVersionKind(mapping.GroupVersionKind)
	if mapping.Scope.Name() != apimeta.RESTScopeNameNamespace {
		u.SetNamespace("")
	}
	return u, nil
}

// withHealthChecks adds to the applied objects those of spec.healthChecks that are not
// among them.
func withHealthChecks(applied, checks []*unstructured.Unstructured) []*unstructured.Unstructured {
	if len(checks) == 0 {
		return applied
	}
	seen := make(map[string]bool, len(applied))
	for _, o := range applied {
		seen[objectID(o)] = true
	}
	out := applied
	for _, o := range checks {
		if id := objectID(o); !seen[id] {
			seen[id] = true
			out = append(out, o)
		}
	}
	return out
}
