// Package tenancy decides what a release may apply, so that many teams can share one
// operator. A release that names no service account (and gets no default one) acts as the
// operator itself, whose rights reach every namespace: it is confined to namespaced objects
// of its own namespace and may not touch RBAC, admission or the namespace's quotas, unless
// the platform admin runs its namespace unconfined. Whatever account a release acts as, it
// may never change the operator's own objects. The checks are pure: they read the objects
// as prepared for apply (cluster-scoped objects carry no namespace) and nothing else.
package tenancy

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/immutable-release/operator/internal/manifest"
)

// ReasonAccessDenied is the reason of the Error that Check returns; it is also the
// condition reason on the release (as Flux names refused cross-namespace references).
const ReasonAccessDenied = "AccessDenied"

// Policy is what the platform admin allows releases, set by the manager's flags.
type Policy struct {
	// DefaultServiceAccount, when set, is the account of the release's own namespace that a
	// release without spec.serviceAccountName is impersonated as (Flux's
	// --default-service-account).
	DefaultServiceAccount string
	// UnconfinedNamespaces hold the platform's own releases: there, a release acting as the
	// operator may apply cluster-scoped objects and into other namespaces.
	UnconfinedNamespaces []string
	// Operator names the operator's own objects, which no release may change.
	Operator Operator
}

// Operator names the operator's own objects.
type Operator struct {
	// Namespace is where the operator runs: the namespace itself and everything in it are
	// the operator's. Empty when unknown (a manager run with a person's kubeconfig).
	Namespace string
	// NamePrefix begins the names of its cluster-scoped objects: its ClusterRoles,
	// ClusterRoleBindings and admission policies (config/default's namePrefix).
	NamePrefix string
	// Group is the API group of its CRDs.
	Group string
}

// ServiceAccount returns the account of its own namespace that a release naming
// serviceAccountName acts as: that one, else the default one, else "" for the operator.
func (p Policy) ServiceAccount(serviceAccountName string) string {
	if serviceAccountName != "" {
		return serviceAccountName
	}
	return p.DefaultServiceAccount
}

// MayDependAcross says whether a release of namespace may depend on releases of other
// namespaces (spec.dependsOn). The operator reads those releases as itself, whatever account
// the release acts as, so no RBAC guards the read: only the platform's own namespaces may.
func (p Policy) MayDependAcross(namespace string) bool {
	return slices.Contains(p.UnconfinedNamespaces, namespace)
}

// Confined says whether a release of namespace that acts as serviceAccount ("" for the
// operator) is held to its own namespace. An impersonated release is held by the account's
// RBAC instead, which the API server enforces.
func (p Policy) Confined(namespace, serviceAccount string) bool {
	if serviceAccount != "" {
		return false
	}
	for _, ns := range p.UnconfinedNamespaces {
		if ns == namespace {
			return false
		}
	}
	return true
}

// governed are the kinds with which whoever holds them governs others: RBAC, admission
// control, and a namespace's quotas and limits, which its admin sets for the team.
var governed = map[string]string{
	"rbac.authorization.k8s.io":    "RBAC objects",
	"admissionregistration.k8s.io": "admission policies and webhooks",
}

var governedKinds = map[string]string{
	"/ResourceQuota": "quotas",
	"/LimitRange":    "limit ranges",
}

// Check returns an Error with reason AccessDenied listing every object a release of
// namespace may not apply, or nil. confined is Confined's answer; targetNamespace is the
// release's spec.targetNamespace, named in the message when it is what leads out.
func (p Policy) Check(namespace, targetNamespace string, confined bool, objects []*unstructured.Unstructured) error {
	var problems []manifest.Problem
	if confined && targetNamespace != "" && targetNamespace != namespace {
		problems = append(problems, manifest.Problem{Message: fmt.Sprintf(
			"spec.targetNamespace %q is not the release's own namespace %q: %s", targetNamespace, namespace, p.howToWiden())})
	}
	for _, o := range objects {
		if why := p.Refusal(namespace, confined, o); why != "" {
			if confined && targetNamespace != "" && targetNamespace != namespace && o.GetNamespace() == targetNamespace {
				continue // said once above
			}
			problems = append(problems, manifest.Problem{Object: manifest.ObjectName(o), Message: why})
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return &manifest.Error{Reason: ReasonAccessDenied, Problems: problems}
}

// Refusal says why a release of namespace may not apply or delete o, or "" when it may.
func (p Policy) Refusal(namespace string, confined bool, o *unstructured.Unstructured) string {
	if why := p.Operator.owns(o); why != "" {
		return why + "; no release may change the operator's own objects"
	}
	if !confined {
		return ""
	}
	gvk := o.GroupVersionKind()
	switch {
	case o.GetNamespace() == "":
		return "a cluster-scoped object; " + p.howToWiden()
	case o.GetNamespace() != namespace:
		return fmt.Sprintf("namespace %q is not the release's own namespace %q; %s", o.GetNamespace(), namespace, p.howToWiden())
	case governed[gvk.Group] != "":
		return governed[gvk.Group] + " are refused for a release that acts as the operator; " + p.howToWiden()
	case governedKinds[gvk.Group+"/"+gvk.Kind] != "":
		return governedKinds[gvk.Group+"/"+gvk.Kind] + " are set by the namespace's admin, not by a release that acts as the operator; " + p.howToWiden()
	case gvk.Group == "" && gvk.Kind == "Secret" && secretType(o) == "kubernetes.io/service-account-token":
		return "a service account token Secret would mint a token for another account; " + p.howToWiden()
	}
	return ""
}

func (p Policy) howToWiden() string {
	return "a release without spec.serviceAccountName applies only namespaced objects into its own namespace: " +
		"set spec.serviceAccountName to an account whose RBAC grants what it needs"
}

func secretType(o *unstructured.Unstructured) string {
	t, _, _ := unstructured.NestedString(o.Object, "type")
	return t
}

// owns says why o is one of the operator's own objects, or "".
func (op Operator) owns(o *unstructured.Unstructured) string {
	gvk := o.GroupVersionKind()
	name := o.GetName()
	switch {
	case op.Namespace != "" && o.GetNamespace() == op.Namespace:
		return fmt.Sprintf("namespace %q is the operator's", op.Namespace)
	case op.Namespace != "" && gvk.Group == "" && gvk.Kind == "Namespace" && name == op.Namespace:
		return fmt.Sprintf("namespace %q is the operator's", op.Namespace)
	case op.Group != "" && gvk.Group == "apiextensions.k8s.io" && gvk.Kind == "CustomResourceDefinition" && strings.HasSuffix(name, "."+op.Group):
		return fmt.Sprintf("the CRDs of %s are the operator's", op.Group)
	case op.NamePrefix != "" && o.GetNamespace() == "" && (gvk.Group == "rbac.authorization.k8s.io" || gvk.Group == "admissionregistration.k8s.io") && strings.HasPrefix(name, op.NamePrefix):
		return fmt.Sprintf("%s names beginning %q are the operator's", gvk.Kind, op.NamePrefix)
	}
	return ""
}

// NamespaceOf returns the namespace of a service account's user name
// (system:serviceaccount:<namespace>:<name>), or "" for any other user.
func NamespaceOf(user string) string {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return ""
	}
	ns, name, ok := strings.Cut(rest, ":")
	if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
		return ""
	}
	return ns
}
