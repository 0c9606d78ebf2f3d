package verify

import (
	"fmt"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// maxPlatformPolicyBytes bounds the admin's policy file.
const maxPlatformPolicyBytes = 1 << 20

// PlatformPolicy is what the platform admin requires of the images of every release in the
// namespaces each entry selects (the manager's --image-policy file, mounted from a
// ConfigMap of the operator's namespace). Tenants cannot change it; their releases can
// only add their own requirements.
type PlatformPolicy struct {
	Policies []PlatformEntry `json:"policies"`

	selectors []labels.Selector
}

// PlatformEntry is one requirement of the admin, for the namespaces its selector matches.
type PlatformEntry struct {
	// Name names the entry in messages: "platform policy <name>".
	Name string `json:"name"`
	// NamespaceSelector selects namespaces by their labels; empty selects every namespace.
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// Keys are PEM public keys.
	Keys []string `json:"keys,omitempty"`
	// MatchOIDCIdentity are the keyless signers accepted.
	MatchOIDCIdentity []Identity `json:"matchOIDCIdentity,omitempty"`
	// Attestations are required of every image.
	Attestations []Attestation `json:"attestations,omitempty"`
}

// LoadPlatformPolicy reads and checks the admin's policy file.
func LoadPlatformPolicy(path string) (*PlatformPolicy, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading the image policy: %w", err)
	}
	if info.Size() > maxPlatformPolicyBytes {
		return nil, fmt.Errorf("the image policy %s is larger than %d bytes", path, maxPlatformPolicyBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the image policy: %w", err)
	}
	return ParsePlatformPolicy(data)
}

// ParsePlatformPolicy parses and checks the admin's policy: unknown fields, keys that do
// not parse and expressions that do not compile are errors, so that a mistyped policy
// does not silently require less.
func ParsePlatformPolicy(data []byte) (*PlatformPolicy, error) {
	p := &PlatformPolicy{}
	if err := yaml.UnmarshalStrict(data, p); err != nil {
		return nil, fmt.Errorf("the image policy: %w", err)
	}
	names := map[string]bool{}
	for i, e := range p.Policies {
		if e.Name == "" || names[e.Name] {
			return nil, fmt.Errorf("the image policy: entry %d needs a name of its own", i+1)
		}
		names[e.Name] = true
		sel := labels.Everything()
		if e.NamespaceSelector != nil {
			var err error
			if sel, err = metav1.LabelSelectorAsSelector(e.NamespaceSelector); err != nil {
				return nil, fmt.Errorf("the image policy: %s: namespaceSelector: %w", e.Name, err)
			}
		}
		p.selectors = append(p.selectors, sel)
		if _, err := compileRequirement(e.requirement()); err != nil {
			return nil, fmt.Errorf("the image policy: %w", err)
		}
	}
	return p, nil
}

func (e PlatformEntry) requirement() Requirement {
	r := Requirement{Source: "platform policy " + e.Name, Identities: e.MatchOIDCIdentity, Attestations: e.Attestations}
	for _, k := range e.Keys {
		r.Keys = append(r.Keys, []byte(k))
	}
	return r
}

// For returns the requirements of the entries that select a namespace with these labels.
func (p *PlatformPolicy) For(namespaceLabels map[string]string) []Requirement {
	if p == nil {
		return nil
	}
	var out []Requirement
	for i, e := range p.Policies {
		if p.selectors[i].Matches(labels.Set(namespaceLabels)) {
			out = append(out, e.requirement())
		}
	}
	return out
}

// Empty says whether the admin requires nothing anywhere.
func (p *PlatformPolicy) Empty() bool { return p == nil || len(p.Policies) == 0 }
