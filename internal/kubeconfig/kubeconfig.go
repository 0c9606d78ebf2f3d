// Package kubeconfig checks a kubeconfig a tenant gave for a remote cluster
// (spec.kubeConfig) and turns it into a client configuration. A kubeconfig is hostile input:
// it can name an exec plugin to run on the operator's machine, a file of the operator's to
// send as a credential (its own ServiceAccount token, say), or switch TLS verification off.
// Each is refused with a message that names it, unless the manager allows exec plugins or
// insecure TLS (Flux's --insecure-kubeconfig-exec and --insecure-kubeconfig-tls); nothing
// is silently dropped, so a user never wonders why a kubeconfig that works with kubectl
// acts differently here.
package kubeconfig

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	runtimeclient "github.com/fluxcd/pkg/runtime/client"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// MaxSize is the largest kubeconfig accepted: a real one with embedded certificates is a few
// kilobytes.
const MaxSize = 256 << 10

// DefaultTimeout bounds every request to a remote cluster: one that stops answering holds a
// worker that long, not forever.
const DefaultTimeout = 15 * time.Second

// Options say what the manager allows in a kubeconfig.
type Options struct {
	// AllowExec lets a kubeconfig run an exec credential plugin (--insecure-kubeconfig-exec).
	AllowExec bool
	// AllowInsecureTLS lets a kubeconfig switch TLS verification off
	// (--insecure-kubeconfig-tls).
	AllowInsecureTLS bool
	// Timeout bounds each request (DefaultTimeout when zero).
	Timeout time.Duration
	// UserAgent names the operator to the remote API server.
	UserAgent string
}

// Config is a checked kubeconfig.
type Config struct {
	// REST connects to the cluster as the kubeconfig's user.
	REST *rest.Config
	// Server is the API server's URL, as the kubeconfig's current context names it.
	Server string
	// Hash identifies the kubeconfig's content: the same cluster and credentials share one
	// cache and one set of watches.
	Hash string
}

// Parse checks data and builds the configuration of its current context.
func Parse(data []byte, opts Options) (*Config, error) {
	if len(data) == 0 {
		return nil, errors.New("the kubeconfig is empty")
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("the kubeconfig is %d bytes, more than the %d allowed", len(data), MaxSize)
	}
	raw, err := clientcmd.Load(data)
	if err != nil {
		return nil, fmt.Errorf("the kubeconfig does not parse: %w", err)
	}
	if err := check(raw, opts); err != nil {
		return nil, err
	}
	// Flux's loader refuses the file references check refuses too, and builds the config.
	cfg, err := runtimeclient.KubeConfigFromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("the kubeconfig cannot be used: %w", err)
	}
	if cfg.Host == "" {
		return nil, errors.New("the kubeconfig's current context names no server")
	}
	u, err := url.Parse(cfg.Host)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("the kubeconfig's server %q is not an http(s) URL", cfg.Host)
	}
	// Only what check allowed is kept: impersonation ("as:") and anything else a
	// kubeconfig may carry are left behind. The manager's own proxy (HTTPS_PROXY of its
	// environment) is not lent to a tenant's server: only a proxy-url of the kubeconfig is
	// used.
	proxy := cfg.Proxy
	if proxy == nil {
		proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	}
	out := &rest.Config{
		Host:      cfg.Host,
		APIPath:   cfg.APIPath,
		UserAgent: opts.UserAgent,
		Timeout:   opts.Timeout,
		TLSClientConfig: rest.TLSClientConfig{
			ServerName: cfg.TLSClientConfig.ServerName,
			CAData:     cfg.TLSClientConfig.CAData,
			CertData:   cfg.TLSClientConfig.CertData,
			KeyData:    cfg.TLSClientConfig.KeyData,
			Insecure:   opts.AllowInsecureTLS && cfg.TLSClientConfig.Insecure,
		},
		Username:    cfg.Username,
		Password:    cfg.Password,
		BearerToken: cfg.BearerToken,
		Proxy:       proxy,
		QPS:         50,
		Burst:       100,
	}
	if opts.AllowExec {
		out.ExecProvider = cfg.ExecProvider
	}
	if out.Timeout == 0 {
		out.Timeout = DefaultTimeout
	}
	out.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return boundedTransport{next: rt, server: cfg.Host} }
	return &Config{REST: out, Server: cfg.Host, Hash: identity(out, raw)}, nil
}

// identity hashes what the configuration connects to and as whom, not the kubeconfig's
// bytes: the same cluster and credentials under another context name, or with comments,
// share one cache instead of making another.
func identity(cfg *rest.Config, raw *clientcmdapi.Config) string {
	h := sha256.New()
	proxyURL := ""
	if ctx := raw.Contexts[raw.CurrentContext]; ctx != nil {
		if c := raw.Clusters[ctx.Cluster]; c != nil {
			proxyURL = c.ProxyURL
		}
	}
	exec := ""
	if cfg.ExecProvider != nil {
		exec = fmt.Sprintf("%q %q %v", cfg.ExecProvider.Command, cfg.ExecProvider.Args, cfg.ExecProvider.Env)
	}
	for _, part := range []string{cfg.Host, cfg.APIPath, cfg.ServerName, string(cfg.CAData), string(cfg.CertData), string(cfg.KeyData),
		cfg.Username, cfg.Password, cfg.BearerToken, proxyURL, strconv.FormatBool(cfg.Insecure), exec} {
		fmt.Fprintf(h, "%d:%s;", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// MaxResponseBytes bounds one answer of a remote API server (a list is paged by the
// informers; a watch is a stream of events and is not bounded as a whole).
const MaxResponseBytes = 128 << 20

// UnreachableError: a remote API server did not answer, or the connection to it broke.
// Only errors of the remote cluster's own transport are, so that a Git host or a registry
// that does not answer is never taken for the cluster.
type UnreachableError struct {
	Server string
	Err    error
}

func (e *UnreachableError) Error() string { return e.Err.Error() }
func (e *UnreachableError) Unwrap() error { return e.Err }

// boundedTransport marks the failures of the connection to a remote API server
// (UnreachableError), except certificate errors, which retrying does not fix, and bounds
// the size of each answer but watches.
type boundedTransport struct {
	next   http.RoundTripper
	server string
}

func (t boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		var unknownAuthority x509.UnknownAuthorityError
		var hostname x509.HostnameError
		var invalid x509.CertificateInvalidError
		var verify *tls.CertificateVerificationError
		if errors.As(err, &unknownAuthority) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verify) {
			return nil, err
		}
		return nil, &UnreachableError{Server: t.server, Err: err}
	}
	if req.URL.Query().Get("watch") != "true" {
		resp.Body = &limitedBody{ReadCloser: resp.Body, left: MaxResponseBytes}
	}
	return resp, nil
}

// limitedBody fails a read past its limit instead of reading on.
type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("the API server's answer is larger than %d bytes", MaxResponseBytes)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// check refuses, in every cluster and user of the kubeconfig (not only the current
// context's: the context is the tenant's to change), what could run code or read files on
// the operator's machine, or weaken TLS, unless opts allow it.
func check(raw *clientcmdapi.Config, opts Options) error {
	if raw.CurrentContext == "" {
		return errors.New("the kubeconfig has no current-context")
	}
	if _, ok := raw.Contexts[raw.CurrentContext]; !ok {
		return fmt.Errorf("the kubeconfig's current-context %q is not among its contexts", raw.CurrentContext)
	}
	for _, name := range sortedKeys(raw.Clusters) {
		c := raw.Clusters[name]
		switch {
		case c == nil:
			return fmt.Errorf("cluster %q of the kubeconfig is empty", name)
		case c.CertificateAuthority != "":
			return fmt.Errorf("cluster %q names a certificate-authority file; only certificate-authority-data is accepted, files of the operator's are never read", name)
		case c.InsecureSkipTLSVerify && !opts.AllowInsecureTLS:
			return fmt.Errorf("cluster %q sets insecure-skip-tls-verify; refused unless the manager runs with --insecure-kubeconfig-tls: give certificate-authority-data instead", name)
		}
	}
	for _, name := range sortedKeys(raw.AuthInfos) {
		u := raw.AuthInfos[name]
		switch {
		case u == nil:
			return fmt.Errorf("user %q of the kubeconfig is empty", name)
		case u.Exec != nil && !opts.AllowExec:
			return fmt.Errorf("user %q runs the exec credential plugin %q; refused unless the manager runs with --insecure-kubeconfig-exec: give a token or client certificate instead", name, u.Exec.Command)
		case u.AuthProvider != nil:
			return fmt.Errorf("user %q uses the auth-provider %q, which is not supported: give a token or client certificate instead", name, u.AuthProvider.Name)
		case u.TokenFile != "" || u.ClientCertificate != "" || u.ClientKey != "":
			return fmt.Errorf("user %q names a file (tokenFile, client-certificate or client-key); only inline data is accepted, files of the operator's are never read", name)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// SecretKeys are the keys a kubeconfig is read from when no key is named, as Flux reads
// them: value, else value.yaml.
var SecretKeys = []string{"value", "value.yaml"}

// FromSecret checks the kubeconfig held in data (a Secret's data) under key, or under the
// first of SecretKeys present when key is empty.
func FromSecret(data map[string][]byte, key string, opts Options) (*Config, error) {
	keys := SecretKeys
	if key != "" {
		keys = []string{key}
	}
	for _, k := range keys {
		if v, ok := data[k]; ok {
			cfg, err := Parse(v, opts)
			if err != nil {
				return nil, fmt.Errorf("the kubeconfig in key %q: %w", k, err)
			}
			return cfg, nil
		}
	}
	quoted := make([]string, len(keys))
	for i, k := range keys {
		quoted[i] = strconv.Quote(k)
	}
	return nil, &MissingKeyError{Keys: quoted}
}

// MissingKeyError: the Secret has none of the keys a kubeconfig is read from.
type MissingKeyError struct{ Keys []string }

func (e *MissingKeyError) Error() string {
	return "no key " + strings.Join(e.Keys, " or ")
}
