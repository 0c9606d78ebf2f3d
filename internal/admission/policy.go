// Package admission builds the ValidatingAdmissionPolicy that enforces drift mode Prevent:
// the API server itself refuses changes to the images of a workload that a release in
// Prevent mode applied, unless the change comes from the operator. CEL only: there is no
// webhook server to run or to fail.
package admission

import (
	"context"
	"fmt"
	"strings"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	// PolicyName names both the policy and its binding.
	PolicyName = "immutable-release-prevent-image-changes"
	// PreventLabel marks the objects of releases in Prevent mode; the binding selects them.
	PreventLabel = "release.immutable.dev/prevent"
)

// Policy returns the policy and its binding. operatorUser is the user name the operator
// runs as (see WhoAmI); fieldManager is the field manager of its applies, which releases
// that impersonate a service account of their own namespace also use.
func Policy(operatorUser, fieldManager string) (*admissionv1.ValidatingAdmissionPolicy, *admissionv1.ValidatingAdmissionPolicyBinding) {
	fail := admissionv1.Fail
	podSpec := func(o string) string {
		return fmt.Sprintf("%[1]s.kind == 'CronJob' ? %[1]s.spec.jobTemplate.spec.template.spec : (%[1]s.kind == 'Pod' ? %[1]s.spec : %[1]s.spec.template.spec)", o)
	}
	images := func(spec string) string {
		return fmt.Sprintf("%[1]s.containers.map(c, c.name + '=' + c.image) + (has(%[1]s.initContainers) ? %[1]s.initContainers.map(c, c.name + '=' + c.image) : [])", spec)
	}
	policy := &admissionv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: PolicyName, Labels: map[string]string{"app.kubernetes.io/managed-by": "immutable-release"}},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: &fail,
			MatchConstraints: &admissionv1.MatchResources{
				ResourceRules: []admissionv1.NamedRuleWithOperations{
					rule("apps", "deployments", "statefulsets", "daemonsets", "replicasets"),
					rule("batch", "jobs", "cronjobs"),
					rule("", "pods"),
				},
			},
			Variables: []admissionv1.Variable{
				{Name: "images", Expression: images("(" + podSpec("object") + ")")},
				{Name: "oldImages", Expression: images("(" + podSpec("oldObject") + ")")},
				{Name: "release", Expression: "object.metadata.labels['release.immutable.dev/namespace'] + '/' + object.metadata.labels['release.immutable.dev/name']"},
				{Name: "fromOperator", Expression: fmt.Sprintf(
					"request.userInfo.username == %q || (request.userInfo.username.startsWith('system:serviceaccount:' + object.metadata.labels['release.immutable.dev/namespace'] + ':') && has(request.options.fieldManager) && request.options.fieldManager == %q)",
					operatorUser, fieldManager)},
			},
			Validations: []admissionv1.Validation{{
				Expression: "variables.fromOperator || variables.images == variables.oldImages",
				MessageExpression: "'the images of ' + object.kind + ' ' + object.metadata.namespace + '/' + object.metadata.name + " +
					"' are pinned by ImmutableRelease ' + variables.release + ' (drift mode Prevent): change them in Git, and the release applies them'",
				Reason: ptr(metav1.StatusReasonForbidden),
			}},
		},
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: PolicyName, Labels: map[string]string{"app.kubernetes.io/managed-by": "immutable-release"}},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        PolicyName,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
			MatchResources: &admissionv1.MatchResources{
				ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{PreventLabel: "true"}},
			},
		},
	}
	return policy, binding
}

func rule(group string, resources ...string) admissionv1.NamedRuleWithOperations {
	return admissionv1.NamedRuleWithOperations{RuleWithOperations: admissionv1.RuleWithOperations{
		Operations: []admissionv1.OperationType{admissionv1.Update},
		Rule:       admissionv1.Rule{APIGroups: []string{group}, APIVersions: []string{"*"}, Resources: resources},
	}}
}

func ptr[T any](v T) *T { return &v }

// WhoAmI asks the API server which user cfg authenticates as (a SelfSubjectReview).
func WhoAmI(ctx context.Context, cfg *rest.Config) (string, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("asking the API server who the operator is: %w", err)
	}
	user := review.Status.UserInfo.Username
	if strings.TrimSpace(user) == "" {
		return "", fmt.Errorf("the API server did not name the operator's user")
	}
	return user, nil
}
