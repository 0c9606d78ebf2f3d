package v1alpha1

import (
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

const (
	// ReceiverKind is the kind of the Receiver API.
	ReceiverKind = "Receiver"

	// ReceiverTokenKey is the key of the Receiver's Secret that holds its token.
	ReceiverTokenKey = "token"

	// DefaultReceiverInterval is how often a Receiver's Secret is read again when
	// spec.interval is unset.
	DefaultReceiverInterval = 10 * time.Minute
	// MinReceiverInterval bounds how often a Receiver's Secret is read: an interval of a
	// millisecond would have the manager read it a thousand times a second.
	MinReceiverInterval = 30 * time.Second
)

// Receiver types: the Git host whose signatures a Receiver checks.
const (
	// GitHubReceiver checks X-Hub-Signature-256, the HMAC-SHA256 of the body.
	GitHubReceiver = "github"
	// GiteaReceiver checks X-Gitea-Signature, the HMAC-SHA256 of the body (Gitea, Forgejo).
	GiteaReceiver = "gitea"
	// GitLabReceiver checks X-Gitlab-Token, the token itself.
	GitLabReceiver = "gitlab"
	// GenericReceiver checks X-Signature-256: sha256=<hex HMAC-SHA256 of the body>.
	GenericReceiver = "generic"
)

// Reasons of a Receiver's Ready condition.
const (
	// ReceiverReadyReason: the Receiver serves status.webhookPath with its Secret's token.
	ReceiverReadyReason string = "Succeeded"

	// InvalidSecretReason: the Secret of spec.secretRef is missing or has no non-empty key
	// token. The Receiver serves nothing until it has one; retried with backoff.
	InvalidSecretReason string = "InvalidSecret"

	// InvalidSelectorReason: spec.resources.matchLabels or matchExpressions is not a valid
	// label selector. Terminal until the spec changes.
	InvalidSelectorReason string = "InvalidSelector"

	// WebhookPathConflictReason: another Receiver already serves the path this one derives
	// from its token, name and namespace. Only a token chosen to collide does that: choose
	// another token.
	WebhookPathConflictReason string = "WebhookPathConflict"
)

// ReceiverSpec says which pushes a Receiver accepts and which releases of its namespace
// they reconcile.
type ReceiverSpec struct {
	// type is the Git host that posts to the Receiver, which decides the signature it
	// checks: github (X-Hub-Signature-256), gitea (X-Gitea-Signature), gitlab
	// (X-Gitlab-Token) or generic (X-Signature-256: sha256=<hex HMAC-SHA256 of the body>).
	// +kubebuilder:validation:Enum=github;gitea;gitlab;generic
	// +required
	Type string `json:"type"`

	// secretRef names a Secret in the Receiver's namespace whose key token is the shared
	// secret configured on the Git host. The path the Receiver serves is derived from it.
	// +required
	SecretRef meta.LocalObjectReference `json:"secretRef"`

	// resources limits which ImmutableReleases of the Receiver's namespace a push may
	// reconcile. Unset: every release of the namespace that follows the pushed repository
	// and branch or tag. Releases of other namespaces are never reconciled.
	// +optional
	Resources *ReceiverResources `json:"resources,omitempty"`

	// interval is how often the Secret is read again, so that a rotated token takes effect
	// without a change to the Receiver. Defaults to 10m; at least 30s.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
}

// ReceiverResources selects ImmutableReleases of the Receiver's namespace. A release must
// satisfy every field that is set.
type ReceiverResources struct {
	// names are the names of the releases a push may reconcile.
	// +kubebuilder:validation:MaxItems=1000
	// +optional
	Names []string `json:"names,omitempty"`

	// selector selects the releases a push may reconcile by their labels.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// ReceiverStatus is what the operator observed of a Receiver.
type ReceiverStatus struct {
	// observedGeneration is the generation of the spec the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready says whether the Receiver serves webhookPath, and why not.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// webhookPath is the path to configure on the Git host, on the manager's webhook
	// address: /hook/ followed by the hex SHA-256 of the token, the Receiver's name and its
	// namespace, so that it cannot be guessed without the token.
	// +optional
	WebhookPath string `json:"webhookPath,omitempty"`

	meta.ReconcileRequestStatus `json:",inline"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Ready",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].status",description=""
// +kubebuilder:printcolumn:name="Status",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].message",description=""
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp",description=""

// Receiver turns push events of a Git host, signed with the token of a Secret of its
// namespace, into immediate reconciles of the ImmutableReleases of that namespace.
type Receiver struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ReceiverSpec   `json:"spec,omitempty"`
	Status ReceiverStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (in *Receiver) GetConditions() []metav1.Condition { return in.Status.Conditions }

// SetConditions sets the status conditions.
func (in *Receiver) SetConditions(c []metav1.Condition) { in.Status.Conditions = c }

// GetInterval is spec.interval, or its default.
func (in *Receiver) GetInterval() time.Duration {
	if in.Spec.Interval == nil || in.Spec.Interval.Duration <= 0 {
		return DefaultReceiverInterval
	}
	return max(in.Spec.Interval.Duration, MinReceiverInterval)
}

// +kubebuilder:object:root=true

// ReceiverList is a list of Receivers.
type ReceiverList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Receiver `json:"items"`
}

func init() {
	SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &Receiver{}, &ReceiverList{})
		return nil
	})
}
