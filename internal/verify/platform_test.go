package verify

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/verify/verifytest"
)

func TestPlatformPolicy(t *testing.T) {
	g := NewWithT(t)
	key := verifytest.NewKey(t)
	pemKey := "      " + strings.ReplaceAll(strings.TrimSpace(string(key.PublicPEM)), "\n", "\n      ")
	p, err := ParsePlatformPolicy([]byte(`
policies:
- name: ci
  namespaceSelector: {matchLabels: {tier: prod}}
  matchOIDCIdentity:
  - {issuer: '^https://token.actions.githubusercontent.com$', subject: '^https://github.com/acme/.*$'}
- name: everywhere
  keys:
  - |
` + pemKey + `
`))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(p.For(map[string]string{"tier": "prod"})).To(HaveLen(2))
	dev := p.For(map[string]string{"tier": "dev"})
	g.Expect(dev).To(HaveLen(1))
	g.Expect(dev[0].Source).To(Equal("platform policy everywhere"))
	g.Expect(CheckPolicy(Policy{Requirements: dev})).To(Succeed())

	for name, bad := range map[string]string{
		"a mistyped field":          "policies:\n- name: x\n  matchOIDCIdentities: [{issuer: a, subject: b}]\n",
		"nothing to verify with":    "policies:\n- name: x\n",
		"a bad expression":          "policies:\n- name: x\n  matchOIDCIdentity: [{issuer: '(', subject: b}]\n",
		"a bad selector":            "policies:\n- name: x\n  namespaceSelector: {matchExpressions: [{key: a, operator: Foo}]}\n  matchOIDCIdentity: [{issuer: a, subject: b}]\n",
		"two entries of one name":   "policies:\n- name: x\n  matchOIDCIdentity: [{issuer: a, subject: b}]\n- name: x\n  matchOIDCIdentity: [{issuer: a, subject: b}]\n",
		"a key that does not parse": "policies:\n- name: x\n  keys: [nonsense]\n",
	} {
		_, err := ParsePlatformPolicy([]byte(bad))
		g.Expect(err).To(HaveOccurred(), name)
	}
}
