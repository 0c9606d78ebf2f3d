package tenancy

import (
	"errors"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/immutable-release/operator/internal/manifest"
)

func obj(apiVersion, kind, namespace, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace(namespace)
	u.SetName(name)
	return u
}

var operator = Operator{Namespace: "immutable-release-system", NamePrefix: "immutable-release-", Group: "release.immutable.dev"}

func TestCheck(t *testing.T) {
	token := obj("v1", "Secret", "shop", "admin-token")
	token.Object["type"] = "kubernetes.io/service-account-token"
	tests := []struct {
		name     string
		policy   Policy
		sa       string
		target   string
		objects  []*unstructured.Unstructured
		refusals []string // substrings, one per expected problem
	}{
		{name: "own namespace, namespaced kinds", objects: []*unstructured.Unstructured{
			obj("apps/v1", "Deployment", "shop", "web"), obj("v1", "Service", "shop", "web"), obj("v1", "Secret", "shop", "config"),
		}},
		{name: "a ClusterRoleBinding that gives the tenant cluster-admin", objects: []*unstructured.Unstructured{
			obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "", "shop-admin"),
		}, refusals: []string{"ClusterRoleBinding/shop-admin: a cluster-scoped object"}},
		{name: "a Pod in kube-system", objects: []*unstructured.Unstructured{
			obj("v1", "Pod", "kube-system", "miner"),
		}, refusals: []string{`Pod/kube-system/miner: namespace "kube-system" is not the release's own namespace "shop"`}},
		{name: "another team's Deployment", objects: []*unstructured.Unstructured{
			obj("apps/v1", "Deployment", "payments", "api"),
		}, refusals: []string{`namespace "payments"`}},
		{name: "targetNamespace elsewhere is said once", target: "payments", objects: []*unstructured.Unstructured{
			obj("apps/v1", "Deployment", "payments", "api"), obj("v1", "Service", "payments", "api"),
		}, refusals: []string{`spec.targetNamespace "payments" is not the release's own namespace "shop"`}},
		{name: "a Role and RoleBinding in its own namespace", objects: []*unstructured.Unstructured{
			obj("rbac.authorization.k8s.io/v1", "Role", "shop", "r"), obj("rbac.authorization.k8s.io/v1", "RoleBinding", "shop", "rb"),
		}, refusals: []string{"Role/shop/r: RBAC objects are refused", "RoleBinding/shop/rb: RBAC objects are refused"}},
		{name: "its namespace's quota", objects: []*unstructured.Unstructured{
			obj("v1", "ResourceQuota", "shop", "q"), obj("v1", "LimitRange", "shop", "l"),
		}, refusals: []string{"quotas are set by the namespace's admin", "limit ranges"}},
		{name: "a token for another account", objects: []*unstructured.Unstructured{token}, refusals: []string{"service account token"}},
		{name: "a ValidatingAdmissionPolicy named like the operator's", objects: []*unstructured.Unstructured{
			obj("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "", "immutable-release-prevent-image-changes"),
		}, refusals: []string{"no release may change the operator's own objects"}},
		{name: "impersonated: RBAC decides, cluster-scoped allowed", sa: "deployer", objects: []*unstructured.Unstructured{
			obj("rbac.authorization.k8s.io/v1", "ClusterRole", "", "shop-reader"), obj("v1", "Namespace", "", "shop-extra"), obj("apps/v1", "Deployment", "payments", "api"),
		}},
		{name: "impersonated: still not the operator's objects", sa: "deployer", objects: []*unstructured.Unstructured{
			obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "immutablereleases.release.immutable.dev"),
			obj("rbac.authorization.k8s.io/v1", "ClusterRole", "", "immutable-release-manager-role"),
			obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "", "immutable-release-manager-rolebinding"),
			obj("apps/v1", "Deployment", "immutable-release-system", "immutable-release-controller-manager"),
			obj("v1", "Namespace", "", "immutable-release-system"),
			obj("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding", "", "immutable-release-prevent-image-changes"),
		}, refusals: []string{"the CRDs of release.immutable.dev", "ClusterRole names beginning", "ClusterRoleBinding names beginning", `namespace "immutable-release-system" is the operator's`, `Namespace/immutable-release-system`, "ValidatingAdmissionPolicyBinding names"}},
		{name: "unconfined namespace: cluster-scoped allowed", policy: Policy{UnconfinedNamespaces: []string{"platform", "shop"}}, objects: []*unstructured.Unstructured{
			obj("rbac.authorization.k8s.io/v1", "ClusterRole", "", "platform-view"), obj("v1", "Namespace", "", "team-a"),
		}},
		{name: "unconfined namespace: still not the operator's objects", policy: Policy{UnconfinedNamespaces: []string{"shop"}}, objects: []*unstructured.Unstructured{
			obj("rbac.authorization.k8s.io/v1", "ClusterRole", "", "immutable-release-manager-role"),
		}, refusals: []string{"operator's own objects"}},
		{name: "default service account: impersonated", policy: Policy{DefaultServiceAccount: "default"}, objects: []*unstructured.Unstructured{
			obj("v1", "Namespace", "", "team-a"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			p := tt.policy
			p.Operator = operator
			sa := p.ServiceAccount(tt.sa)
			err := p.Check("shop", tt.target, p.Confined("shop", sa), tt.objects)
			if len(tt.refusals) == 0 {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			var merr *manifest.Error
			g.Expect(errors.As(err, &merr)).To(BeTrue(), "an AccessDenied error, got %v", err)
			g.Expect(merr.Reason).To(Equal(ReasonAccessDenied))
			g.Expect(merr.Problems).To(HaveLen(len(tt.refusals)), "%v", err)
			for i, want := range tt.refusals {
				g.Expect(merr.Problems[i].String()).To(ContainSubstring(want))
			}
			g.Expect(strings.ToLower(err.Error())).NotTo(ContainSubstring("todo"))
		})
	}
}

func TestServiceAccountAndConfined(t *testing.T) {
	g := NewWithT(t)
	p := Policy{DefaultServiceAccount: "default", UnconfinedNamespaces: []string{"platform"}}
	g.Expect(p.ServiceAccount("deployer")).To(Equal("deployer"))
	g.Expect(p.ServiceAccount("")).To(Equal("default"))
	g.Expect(Policy{}.ServiceAccount("")).To(BeEmpty())
	g.Expect(p.Confined("shop", "")).To(BeTrue())
	g.Expect(p.Confined("platform", "")).To(BeFalse())
	g.Expect(p.Confined("shop", "deployer")).To(BeFalse())
}

func TestNamespaceOf(t *testing.T) {
	g := NewWithT(t)
	g.Expect(NamespaceOf("system:serviceaccount:immutable-release-system:immutable-release-controller-manager")).To(Equal("immutable-release-system"))
	for _, user := range []string{"admin", "system:serviceaccount:", "system:serviceaccount:ns", "system:serviceaccount::x", "system:serviceaccount:ns:a:b", "system:admin"} {
		g.Expect(NamespaceOf(user)).To(BeEmpty(), user)
	}
}
