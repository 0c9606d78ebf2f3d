package kubeconfig

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/client-go/rest"
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

// TestIdentity: the same cluster and credentials under another context name are one
// cache; another token is another.
func TestIdentity(t *testing.T) {
	g := NewWithT(t)
	a, err := Parse([]byte(kubeconfig("", token)), Options{})
	g.Expect(err).NotTo(HaveOccurred())
	renamed := strings.ReplaceAll(kubeconfig("", token), "name: remote\n  context:", "name: other\n  context:")
	renamed = strings.Replace(renamed, "current-context: remote", "current-context: other", 1)
	b, err := Parse([]byte("# a comment\n"+renamed), Options{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(b.Hash).To(Equal(a.Hash))
	c, err := Parse([]byte(kubeconfig("", "    token: another")), Options{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c.Hash).NotTo(Equal(a.Hash))
}

// TestBoundedTransport: a server that does not answer is an UnreachableError naming it; one
// whose certificate is not trusted is not (retrying does not fix it); an answer larger than
// MaxResponseBytes fails instead of being read whole; the manager's own proxy is not used.
func TestBoundedTransport(t *testing.T) {
	g := NewWithT(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	closed := "https://" + ln.Addr().String()
	ln.Close()
	get := func(server string, opts Options) (*http.Response, error) {
		cfg, err := Parse([]byte(strings.Replace(kubeconfig("", token), "https://203.0.113.7:6443", server, 1)), opts)
		g.Expect(err).NotTo(HaveOccurred())
		hc, err := rest.HTTPClientFor(cfg.REST)
		g.Expect(err).NotTo(HaveOccurred())
		return hc.Get(server + "/api")
	}
	_, err = get(closed, Options{})
	var unreachable *UnreachableError
	g.Expect(errors.As(err, &unreachable)).To(BeTrue(), "%v", err)
	g.Expect(unreachable.Server).To(Equal(closed))

	untrusted := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer untrusted.Close()
	_, err = get(untrusted.URL, Options{})
	g.Expect(err).To(HaveOccurred())
	g.Expect(errors.As(err, &unreachable)).To(BeFalse(), "a certificate error is not unreachable: %v", err)

	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		chunk := make([]byte, 1<<20)
		for range MaxResponseBytes>>20 + 2 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer huge.Close()
	resp, err := get(huge.URL, Options{})
	g.Expect(err).NotTo(HaveOccurred())
	_, err = io.Copy(io.Discard, resp.Body)
	g.Expect(err).To(MatchError(ContainSubstring("larger than")))
	resp.Body.Close()

	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("{}")) }))
	defer ok.Close()
	resp, err = get(ok.URL, Options{})
	g.Expect(err).NotTo(HaveOccurred(), "the environment's proxy is not used")
	resp.Body.Close()
}
