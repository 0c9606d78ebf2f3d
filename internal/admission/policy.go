// Package admission builds the ValidatingAdmissionPolicy that enforces drift mode Prevent:
// the API server itself refuses changes to the images of a workload that a release in
// Prevent mode applied, unless the change comes from the operator or from the account that
// release acts as. CEL only: there is no webhook server to run or to fail.
//
// Who owns an object is read from the labels of the object as stored (oldObject), never
// from the object a request sends: whoever sends it chooses those. The owning release is
// a param: the binding selects every ImmutableRelease of the request's namespace, the API
// server evaluates the policy once per release, and only the evaluation for the owner
// decides (the others pass). The owner's spec.serviceAccountName, read by the API server
// at the time of the request, names the one account besides the operator that may change
// the images. Objects a release put into another namespace (spec.targetNamespace) have no
// owner among the params there: a second binding, without params, decides for them, from
// the accounts of such releases that the operator writes into the policy.
package admission

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	// PolicyName names the policy and the binding that takes the owning release as param.
	PolicyName = "immutable-release-prevent-image-changes"
	// CrossNamespaceBindingName names the binding, without params, that decides for objects
	// a release put into another namespace than its own.
	CrossNamespaceBindingName = PolicyName + "-cross-namespace"
	// PreventLabel marks the objects of releases in Prevent mode; the bindings select them.
	PreventLabel = "release.immutable.dev/prevent"
	// ManagedByLabel marks the policy and its bindings as the operator's.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedBy is the value of ManagedByLabel.
	ManagedBy = "immutable-release"

	nameLabel      = "release.immutable.dev/name"
	namespaceLabel = "release.immutable.dev/namespace"
)

// Accounts says who may change the images of a release's objects besides the operator.
type Accounts struct {
	// Operator is the user name the operator runs as (see WhoAmI).
	Operator string
	// DefaultServiceAccount is the account of its own namespace that a release without
	// spec.serviceAccountName acts as; empty: such a release acts as the operator.
	DefaultServiceAccount string
	// CrossNamespace maps "namespace/name" of each Prevent release that acts as a service
	// account and applies into another namespace to the user name of that account.
	CrossNamespace map[string]string
	// Remote, when not empty, makes the policy of a remote cluster (spec.kubeConfig), named
	// RemotePolicyName-<Remote>, where there is no ImmutableRelease to take as a param: one
	// binding without params decides for the objects of the releases CrossNamespace names,
	// which then lists every Prevent release of that cluster and kubeconfig, whatever its
	// namespace (an empty account: only the operator may change their images). Several
	// such policies (other kubeconfigs, other operators) each decide for their own releases.
	Remote string
}

// RemotePolicyName prefixes the policies and bindings the operator installs in a remote
// cluster, apart from the one an operator running there may install for its own releases.
const RemotePolicyName = PolicyName + "-remote"

// User is the user name of the service account name of namespace.
func User(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// Policy returns the policy and its bindings.
func Policy(a Accounts) (*admissionv1.ValidatingAdmissionPolicy, []*admissionv1.ValidatingAdmissionPolicyBinding) {
	fail := admissionv1.Fail
	podSpec := func(o string) string {
		return fmt.Sprintf("%[1]s.kind == 'CronJob' ? %[1]s.spec.jobTemplate.spec.template.spec : (%[1]s.kind == 'Pod' ? %[1]s.spec : %[1]s.spec.template.spec)", o)
	}
	images := func(spec string) string {
		return fmt.Sprintf("%[1]s.containers.map(c, c.name + '=' + c.image) + (has(%[1]s.initContainers) ? %[1]s.initContainers.map(c, c.name + '=' + c.image) : [])", spec)
	}
	ephemeral := func(o string) string {
		return fmt.Sprintf("%[1]s.kind == 'Pod' && has(%[1]s.spec.ephemeralContainers) ? %[1]s.spec.ephemeralContainers.map(c, c.name + '=' + c.image) : []", o)
	}
	label := func(o, key string) string {
		return fmt.Sprintf("has(%[1]s.metadata.labels) && %[2]s in %[1]s.metadata.labels ? %[1]s.metadata.labels[%[2]s] : ''", o, cel(key))
	}
	ownLabels := func(o string) string {
		return "[" + label(o, namespaceLabel) + ", " + label(o, nameLabel) + ", " + label(o, PreventLabel) + "]"
	}
	// The account a release acts as, for the param binding: its spec.serviceAccountName,
	// else the manager's default account, else none (it acts as the operator).
	account := "''"
	if a.DefaultServiceAccount != "" {
		account = "'system:serviceaccount:' + params.metadata.namespace + ':' + " + cel(a.DefaultServiceAccount)
	}
	account = "has(params.spec.serviceAccountName) && params.spec.serviceAccountName != '' ? " +
		"'system:serviceaccount:' + params.metadata.namespace + ':' + params.spec.serviceAccountName : " + account
	cross := crossNamespaceMap(a.CrossNamespace)
	decides := "variables.ownerName != '' && (params == null ? " +
		"variables.ownerNamespace != request.namespace : " +
		"(params.metadata.namespace == variables.ownerNamespace && params.metadata.name == variables.ownerName))"
	accountOf := "params == null ? " +
		"(variables.release in " + cross + " ? " + cross + "[variables.release] : '') : " +
		"(" + account + ")"
	policyName, paramKind := PolicyName, &admissionv1.ParamKind{APIVersion: "release.immutable.dev/v1alpha1", Kind: "ImmutableRelease"}
	if a.Remote != "" {
		// Without a param kind, CEL knows no params at all.
		decides, policyName, paramKind = "variables.ownerName != '' && variables.release in "+cross, RemotePolicyName+"-"+a.Remote, nil
		accountOf = cross + "[variables.release]"
	}

	policy := &admissionv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: policyName, Labels: map[string]string{ManagedByLabel: ManagedBy}},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: &fail,
			ParamKind:     paramKind,
			MatchConstraints: &admissionv1.MatchResources{
				ResourceRules: []admissionv1.NamedRuleWithOperations{
					rule("apps", "deployments", "statefulsets", "daemonsets", "replicasets"),
					rule("batch", "jobs", "cronjobs"),
					// kubectl debug adds containers through pods/ephemeralcontainers.
					rule("", "pods", "pods/ephemeralcontainers"),
				},
			},
			Variables: []admissionv1.Variable{
				{Name: "images", Expression: images("(" + podSpec("object") + ")")},
				{Name: "oldImages", Expression: images("(" + podSpec("oldObject") + ")")},
				{Name: "ephemeral", Expression: ephemeral("object")},
				{Name: "oldEphemeral", Expression: ephemeral("oldObject")},
				{Name: "labels", Expression: ownLabels("object")},
				{Name: "oldLabels", Expression: ownLabels("oldObject")},
				// The release that owns the object, as stored.
				{Name: "ownerNamespace", Expression: "variables.oldLabels[0]"},
				{Name: "ownerName", Expression: "variables.oldLabels[1]"},
				{Name: "release", Expression: "variables.ownerNamespace + '/' + variables.ownerName"},
				// Whether this evaluation decides: the one whose param is the owner, or, without
				// params, the one for an object outside its owner's namespace.
				{Name: "decides", Expression: decides},
				{Name: "account", Expression: accountOf},
				{Name: "allowed", Expression: fmt.Sprintf(
					"!variables.decides || request.userInfo.username == %s || (variables.account != '' && request.userInfo.username == variables.account)",
					cel(a.Operator))},
			},
			Validations: []admissionv1.Validation{
				{
					Expression: "variables.allowed || variables.images == variables.oldImages",
					MessageExpression: "'the images of ' + object.kind + ' ' + object.metadata.namespace + '/' + object.metadata.name + " +
						"' are pinned by ImmutableRelease ' + variables.release + ' (drift mode Prevent): change them in Git, and the release applies them'",
					Reason: ptr(metav1.StatusReasonForbidden),
				},
				{
					Expression: "variables.allowed || variables.ephemeral == variables.oldEphemeral",
					MessageExpression: "'the ephemeral containers of ' + object.kind + ' ' + object.metadata.namespace + '/' + object.metadata.name + " +
						"' are pinned by ImmutableRelease ' + variables.release + ' (drift mode Prevent): kubectl debug --copy-to debugs a copy instead'",
					Reason: ptr(metav1.StatusReasonForbidden),
				},
				{
					// Without its labels the object would escape the bindings at the next request.
					Expression: "variables.allowed || variables.labels == variables.oldLabels",
					MessageExpression: "'the labels release.immutable.dev/* of ' + object.kind + ' ' + object.metadata.namespace + '/' + object.metadata.name + " +
						"' are set by ImmutableRelease ' + variables.release + ' (drift mode Prevent)'",
					Reason: ptr(metav1.StatusReasonForbidden),
				},
			},
		},
	}
	selected := &admissionv1.MatchResources{
		ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{PreventLabel: "true"}},
	}
	allow := admissionv1.AllowAction
	binding := func(name string, params *admissionv1.ParamRef) *admissionv1.ValidatingAdmissionPolicyBinding {
		return &admissionv1.ValidatingAdmissionPolicyBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicyBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{ManagedByLabel: ManagedBy}},
			Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
				PolicyName:        policyName,
				ParamRef:          params,
				ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
				MatchResources:    selected.DeepCopy(),
			},
		}
	}
	if a.Remote != "" {
		return policy, []*admissionv1.ValidatingAdmissionPolicyBinding{binding(policyName, nil)}
	}
	return policy, []*admissionv1.ValidatingAdmissionPolicyBinding{
		// Every release of the request's namespace. None: no release there owns the object,
		// and the binding without params decides.
		binding(PolicyName, &admissionv1.ParamRef{Selector: &metav1.LabelSelector{}, ParameterNotFoundAction: &allow}),
		binding(CrossNamespaceBindingName, nil),
	}
}

// crossNamespaceMap is a CEL map literal of accounts, in a stable order: the policy is
// written again only when it changes.
func crossNamespaceMap(accounts map[string]string) string {
	keys := make([]string, 0, len(accounts))
	for k := range accounts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	entries := make([]string, len(keys))
	for i, k := range keys {
		entries[i] = cel(k) + ": " + cel(accounts[k])
	}
	return "{" + strings.Join(entries, ", ") + "}"
}

// cel is s as a CEL string literal.
func cel(s string) string { return strconv.Quote(s) }

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
