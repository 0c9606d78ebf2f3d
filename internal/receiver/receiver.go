// Package receiver turns push events from Git hosts into immediate reconciles. It verifies
// each payload against a shared secret (GitHub's and Gitea's HMAC-SHA256 signatures,
// GitLab's token, or a generic HMAC-SHA256 header), reads which repository and reference
// moved, and asks the Notifier to reconcile the releases that follow them.
package receiver

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/go-logr/logr"
)

// MaxBodySize bounds a payload; push events of real forges are far smaller.
const MaxBodySize = 1 << 20

// Push is what a push event says moved.
type Push struct {
	// URLs are the repository's addresses as the host reports them (HTTP and SSH).
	URLs []string
	// Ref is the full reference name, such as refs/heads/main or refs/tags/v1.2.0.
	Ref string
}

// Notifier reconciles the releases that follow a pushed repository and reference, and
// returns how many it asked.
type Notifier interface {
	Notify(ctx context.Context, push Push) (int, error)
}

// Handler serves POST requests from Git hosts.
type Handler struct {
	// Secret returns the shared secret; read per request so that a rotated Secret applies
	// at once.
	Secret   func(ctx context.Context) ([]byte, error)
	Notifier Notifier
	Log      logr.Logger
}

// ErrUnauthorized is returned for payloads that are unsigned or wrongly signed.
var ErrUnauthorized = errors.New("the payload is not signed with the shared secret")

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodySize))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, fmt.Sprintf("payload over %d bytes", MaxBodySize), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading the payload failed", http.StatusBadRequest)
		return
	}
	secret, err := h.Secret(r.Context())
	if err != nil {
		h.Log.Error(err, "Failed to read the webhook secret")
		http.Error(w, "the receiver has no secret configured", http.StatusInternalServerError)
		return
	}
	if err := Verify(r.Header, body, secret); err != nil {
		h.Log.Info("Refused a webhook payload", "remote", r.RemoteAddr, "reason", err.Error())
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	push, err := Parse(r.Header, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if push == nil {
		// A verified event that is not a push (a ping, an issue comment): nothing to do.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	n, err := h.Notifier.Notify(r.Context(), *push)
	if err != nil {
		h.Log.Error(err, "Failed to request reconciles", "ref", push.Ref)
		http.Error(w, "requesting reconciles failed", http.StatusInternalServerError)
		return
	}
	h.Log.Info("Received a push", "urls", push.URLs, "ref", push.Ref, "releases", n)
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, "reconciling %d releases\n", n)
}

// Verify checks the payload's signature or token against secret, by the headers the hosts
// send: X-Hub-Signature-256 (GitHub), X-Gitea-Signature (Gitea), X-Gitlab-Token (GitLab),
// or X-Signature-256 (generic: sha256=<hex HMAC-SHA256 of the body>).
func Verify(h http.Header, body, secret []byte) error {
	if len(secret) == 0 {
		return fmt.Errorf("%w: the receiver's secret is empty", ErrUnauthorized)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	want := mac.Sum(nil)
	checkHex := func(got string) error {
		sig, err := hex.DecodeString(strings.TrimPrefix(got, "sha256="))
		if err != nil || !hmac.Equal(sig, want) {
			return ErrUnauthorized
		}
		return nil
	}
	switch {
	case h.Get("X-Hub-Signature-256") != "":
		return checkHex(h.Get("X-Hub-Signature-256"))
	case h.Get("X-Gitea-Signature") != "":
		return checkHex(h.Get("X-Gitea-Signature"))
	case h.Get("X-Signature-256") != "":
		return checkHex(h.Get("X-Signature-256"))
	case h.Get("X-Gitlab-Token") != "":
		if subtle.ConstantTimeCompare([]byte(h.Get("X-Gitlab-Token")), secret) != 1 {
			return ErrUnauthorized
		}
		return nil
	default:
		return fmt.Errorf("%w: no X-Hub-Signature-256, X-Gitea-Signature, X-Gitlab-Token or X-Signature-256 header", ErrUnauthorized)
	}
}

// payload holds the fields of GitHub, Gitea, GitLab and generic push events that matter.
type payload struct {
	Ref        string `json:"ref"`
	Repository struct {
		CloneURL string `json:"clone_url"`
		SSHURL   string `json:"ssh_url"`
		HTMLURL  string `json:"html_url"`
		// GitLab.
		GitHTTPURL string `json:"git_http_url"`
		GitSSHURL  string `json:"git_ssh_url"`
		// Generic.
		URL string `json:"url"`
	} `json:"repository"`
	Project struct {
		GitHTTPURL string `json:"git_http_url"`
		GitSSHURL  string `json:"git_ssh_url"`
	} `json:"project"`
}

// Parse reads a verified payload. It returns nil for events that are not pushes.
func Parse(h http.Header, body []byte) (*Push, error) {
	// Gitea (and Forgejo, Gogs) send their own event header and GitHub's, both "push".
	event := ""
	for _, name := range []string{"X-GitHub-Event", "X-Gitea-Event", "X-Gogs-Event", "X-Gitlab-Event"} {
		if event = h.Get(name); event != "" {
			break
		}
	}
	if event != "" && event != "push" && event != "Push Hook" && event != "Tag Push Hook" {
		return nil, nil
	}
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fmt.Errorf("the payload is not valid JSON: %v", err)
	}
	push := &Push{Ref: p.Ref}
	for _, u := range []string{p.Repository.CloneURL, p.Repository.SSHURL, p.Repository.HTMLURL,
		p.Repository.GitHTTPURL, p.Repository.GitSSHURL, p.Repository.URL, p.Project.GitHTTPURL, p.Project.GitSSHURL} {
		if u != "" {
			push.URLs = append(push.URLs, u)
		}
	}
	if push.Ref == "" || len(push.URLs) == 0 {
		return nil, fmt.Errorf("the payload names no ref or no repository URL")
	}
	return push, nil
}

// SameRepository says whether two repository addresses name the same repository: host and
// path compared without scheme, user, port, case or a trailing .git or slash.
func SameRepository(a, b string) bool {
	na, nb := normalize(a), normalize(b)
	return na != "" && na == nb
}

func normalize(s string) string {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		// scp-like git@host:org/repo.git
		if at := strings.Index(s, "@"); at >= 0 && strings.Contains(s[at:], ":") {
			s = "ssh://" + s[:at+1] + strings.Replace(s[at+1:], ":", "/", 1)
		}
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return ""
	}
	p := strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), ".git")
	return strings.ToLower(u.Hostname() + p)
}
