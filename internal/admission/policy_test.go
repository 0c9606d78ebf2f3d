package admission

import (
	"testing"

	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admissionregistration/v1"
)

// The decisions the CEL makes are tested against a real API server in controllers
// (prevent_policy_test.go); these tests pin what the operator writes into the policy.

func variable(p *admissionv1.ValidatingAdmissionPolicy, name string) string {
	for _, v := range p.Spec.Variables {
		if v.Name == name {
			return v.Expression
		}
	}
	return ""
}

func TestPolicyBindings(t *testing.T) {
	g := NewWithT(t)
	policy, bindings := Policy(Accounts{Operator: "system:serviceaccount:immutable-release-system:manager"})
	g.Expect(policy.Spec.ParamKind).To(Equal(&admissionv1.ParamKind{APIVersion: "release.immutable.dev/v1alpha1", Kind: "ImmutableRelease"}))
	g.Expect(bindings).To(HaveLen(2))
	params := bindings[0]
	g.Expect(params.Name).To(Equal(PolicyName))
	// Every release of the request's namespace, looked up there (no namespace), and no
	// release there is not a refusal: the other binding decides then.
	g.Expect(params.Spec.ParamRef.Namespace).To(BeEmpty())
	g.Expect(params.Spec.ParamRef.Name).To(BeEmpty())
	g.Expect(params.Spec.ParamRef.Selector.MatchLabels).To(BeEmpty())
	g.Expect(params.Spec.ParamRef.Selector.MatchExpressions).To(BeEmpty())
	g.Expect(*params.Spec.ParamRef.ParameterNotFoundAction).To(Equal(admissionv1.AllowAction))
	g.Expect(bindings[1].Name).To(Equal(CrossNamespaceBindingName))
	g.Expect(bindings[1].Spec.ParamRef).To(BeNil())
	for _, b := range bindings {
		g.Expect(b.Spec.PolicyName).To(Equal(PolicyName))
		g.Expect(b.Spec.ValidationActions).To(Equal([]admissionv1.ValidationAction{admissionv1.Deny}))
		g.Expect(b.Spec.MatchResources.ObjectSelector.MatchLabels).To(Equal(map[string]string{PreventLabel: "true"}))
	}
}

func TestPolicyCoversEphemeralContainers(t *testing.T) {
	g := NewWithT(t)
	policy, _ := Policy(Accounts{Operator: "admin"})
	var resources []string
	for _, r := range policy.Spec.MatchConstraints.ResourceRules {
		g.Expect(r.Operations).To(Equal([]admissionv1.OperationType{admissionv1.Update}))
		resources = append(resources, r.Resources...)
	}
	g.Expect(resources).To(ContainElements("deployments", "cronjobs", "pods", "pods/ephemeralcontainers"))
}

// TestPolicyOwnerFromStoredObject: the owner is read from oldObject only; a request names
// whatever labels it likes on object.
func TestPolicyOwnerFromStoredObject(t *testing.T) {
	g := NewWithT(t)
	policy, _ := Policy(Accounts{Operator: "admin", DefaultServiceAccount: "deployer"})
	for _, name := range []string{"ownerNamespace", "ownerName", "release", "decides", "account", "allowed"} {
		g.Expect(variable(policy, name)).NotTo(BeEmpty(), name)
		g.Expect(variable(policy, name)).NotTo(ContainSubstring("object.metadata"), name)
		g.Expect(variable(policy, name)).NotTo(ContainSubstring("fieldManager"), name)
	}
	g.Expect(variable(policy, "oldLabels")).To(HavePrefix("[has(oldObject.metadata.labels)"))
}

func TestPolicyAccounts(t *testing.T) {
	tests := []struct {
		name     string
		accounts Accounts
		contains []string
		absent   []string
	}{
		{
			name:     "no default account: a release without serviceAccountName acts as the operator",
			accounts: Accounts{Operator: "admin"},
			contains: []string{`params.spec.serviceAccountName : ''`, `request.userInfo.username == "admin"`, `variables.release in {} ?`},
		},
		{
			name:     "the default account",
			accounts: Accounts{Operator: "admin", DefaultServiceAccount: "deployer"},
			contains: []string{`'system:serviceaccount:' + params.metadata.namespace + ':' + "deployer"`},
		},
		{
			name: "releases that apply into other namespaces, in a stable order",
			accounts: Accounts{Operator: "admin", CrossNamespace: map[string]string{
				"team-b/web": "system:serviceaccount:team-b:deployer",
				"team-a/api": "system:serviceaccount:team-a:deployer",
			}},
			contains: []string{`{"team-a/api": "system:serviceaccount:team-a:deployer", "team-b/web": "system:serviceaccount:team-b:deployer"}`},
		},
		{
			name:     "a user name that would close the literal is escaped",
			accounts: Accounts{Operator: `x" || true || "`},
			contains: []string{`request.userInfo.username == "x\" || true || \""`},
			absent:   []string{`== "x" || true`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			policy, _ := Policy(tt.accounts)
			all := variable(policy, "account") + "\n" + variable(policy, "allowed")
			for _, s := range tt.contains {
				g.Expect(all).To(ContainSubstring(s))
			}
			for _, s := range tt.absent {
				g.Expect(all).NotTo(ContainSubstring(s))
			}
		})
	}
	// Written the same every time: the controller then has nothing to update.
	a := Accounts{Operator: "admin", CrossNamespace: map[string]string{"a/1": "u1", "b/2": "u2", "c/3": "u3"}}
	p1, _ := Policy(a)
	p2, _ := Policy(a)
	NewWithT(t).Expect(variable(p1, "account")).To(Equal(variable(p2, "account")))
}

// TestRemotePolicy: in a remote cluster there is no ImmutableRelease to take as a param: one
// binding without params decides for the objects of the releases it names, from the
// accounts written in, and leaves other releases' objects to their own policies.
func TestRemotePolicy(t *testing.T) {
	g := NewWithT(t)
	policy, bindings := Policy(Accounts{Operator: "hub", Remote: "0123456789", CrossNamespace: map[string]string{"shop/web": "system:serviceaccount:shop:deployer", "ops/base": ""}})
	g.Expect(policy.Name).To(Equal(RemotePolicyName + "-0123456789"))
	g.Expect(policy.Spec.ParamKind).To(BeNil())
	g.Expect(bindings).To(HaveLen(1))
	g.Expect(bindings[0].Name).To(Equal(policy.Name))
	g.Expect(bindings[0].Spec.PolicyName).To(Equal(policy.Name))
	g.Expect(bindings[0].Spec.ParamRef).To(BeNil())
	accounts := `{"ops/base": "", "shop/web": "system:serviceaccount:shop:deployer"}`
	g.Expect(variable(policy, "decides")).To(Equal("variables.ownerName != '' && variables.release in " + accounts))
	g.Expect(variable(policy, "account")).To(Equal(accounts + "[variables.release]"))
	g.Expect(variable(policy, "allowed")).To(ContainSubstring(`request.userInfo.username == "hub"`))
}
