package kubeconfig

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// kubeconfig is a kubeconfig of one cluster and user; cluster and user are indented YAML
// lines added to each.
func kubeconfig(cluster, user string) string {
	return `apiVersion: v1
kind: Config
current-context: remote
contexts:
- name: remote
  context: {cluster: remote, user: remote}
clusters:
- name: remote
  cluster:
    server: https://203.0.113.7:6443
` + cluster + `
users:
- name: remote
  user:
` + user + "\n"
}

const token = "    token: abc"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		opts Options
		// refused is a part of the error; empty: accepted.
		refused string
	}{
		{name: "token", data: kubeconfig("    certificate-authority-data: "+testCA, token)},
		{name: "exec plugin", data: kubeconfig("", "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, 'cat /var/run/secrets/kubernetes.io/serviceaccount/token']}"),
			refused: `runs the exec credential plugin "/bin/sh"; refused unless the manager runs with --insecure-kubeconfig-exec`},
		{name: "exec plugin allowed", data: kubeconfig("", "    exec: {apiVersion: client.authentication.k8s.io/v1, command: aws-iam-authenticator, interactiveMode: Never}"), opts: Options{AllowExec: true}},
		{name: "insecure TLS", data: kubeconfig("    insecure-skip-tls-verify: true", token),
			refused: "insecure-skip-tls-verify; refused unless the manager runs with --insecure-kubeconfig-tls"},
		{name: "insecure TLS allowed", data: kubeconfig("    insecure-skip-tls-verify: true", token), opts: Options{AllowInsecureTLS: true}},
		{name: "the operator's token file", data: kubeconfig("", "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token"),
			refused: "names a file (tokenFile, client-certificate or client-key)"},
		{name: "client certificate file", data: kubeconfig("", "    client-certificate: /etc/ssl/private/operator.crt\n    client-key: /etc/ssl/private/operator.key"),
			refused: "names a file"},
		{name: "CA file", data: kubeconfig("    certificate-authority: /etc/passwd", token), refused: "names a certificate-authority file"},
		{name: "auth provider", data: kubeconfig("", "    auth-provider: {name: gcp}"), refused: `auth-provider "gcp"`},
		{name: "an unused user with an exec plugin", data: kubeconfig("", token) + `- name: other
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}
`, refused: `user "other" runs the exec credential plugin`},
		{name: "no current context", data: strings.Replace(kubeconfig("", token), "current-context: remote", "", 1), refused: "has no current-context"},
		{name: "a current context that does not exist", data: strings.Replace(kubeconfig("", token), "current-context: remote", "current-context: elsewhere", 1), refused: `"elsewhere" is not among its contexts`},
		{name: "garbage", data: "\x00\x01{{{", refused: "does not parse"},
		{name: "empty", data: "", refused: "is empty"},
		{name: "too large", data: kubeconfig("", token) + "# " + strings.Repeat("x", MaxSize), refused: "more than the"},
		{name: "not an http URL", data: strings.Replace(kubeconfig("", token), "https://203.0.113.7:6443", "unix:///var/run/docker.sock", 1), refused: "is not an http(s) URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			cfg, err := Parse([]byte(tc.data), tc.opts)
			if tc.refused != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tc.refused)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(cfg.Server).To(Equal("https://203.0.113.7:6443"))
			g.Expect(cfg.REST.Timeout).To(Equal(DefaultTimeout))
			g.Expect(cfg.Hash).To(HaveLen(64))
		})
	}
}

// TestParseKeepsOnlyWhatWasChecked: impersonation named in the kubeconfig is not carried
// over (the operator sets its own), and the exec plugin is not kept when it is not allowed.
func TestParseKeepsOnlyWhatWasChecked(t *testing.T) {
	g := NewWithT(t)
	cfg, err := Parse([]byte(kubeconfig("", token+"\n    as: system:admin\n    as-groups: [system:masters]")), Options{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(cfg.REST.Impersonate.UserName).To(BeEmpty())
	g.Expect(cfg.REST.Impersonate.Groups).To(BeEmpty())
	g.Expect(cfg.REST.BearerToken).To(Equal("abc"))
	g.Expect(cfg.REST.ExecProvider).To(BeNil())

	other, err := Parse([]byte(kubeconfig("", "    token: rotated")), Options{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(other.Hash).NotTo(Equal(cfg.Hash), "a rotated credential is another kubeconfig")
}

// FuzzParse: no kubeconfig makes Parse panic, and none it accepts names a file or a plugin.
func FuzzParse(f *testing.F) {
	f.Add([]byte(kubeconfig("", token)))
	f.Add([]byte(kubeconfig("", "    tokenFile: /etc/passwd")))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, Options{})
		if err != nil {
			return
		}
		if cfg.REST.ExecProvider != nil || cfg.REST.BearerTokenFile != "" || cfg.REST.CAFile != "" || cfg.REST.CertFile != "" || cfg.REST.KeyFile != "" || cfg.REST.Insecure {
			t.Fatalf("accepted a kubeconfig that reads files, runs a plugin or skips TLS: %+v", cfg.REST)
		}
	})
}

// testCA is a base64 PEM certificate authority; its content is not checked by Parse.
const testCA = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJkekNDQVIyZ0F3SUJBZ0lCQURBS0JnZ3Foa2pPUFFRREFqQWpNU0V3SHdZRFZRUUREQmhyTTNNdGMyVnkKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
