// Package receiver turns push events from Git hosts into immediate reconciles. Each
// Receiver of a namespace serves its own unguessable path (WebhookPath) with its own token:
// a payload posted to it is verified against that token (GitHub's and Gitea's HMAC-SHA256
// signatures, GitLab's token, or a generic HMAC-SHA256 header), and may only reconcile the
// releases of that Receiver's namespace that follow the repository and reference it names.
package receiver

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
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

	"github.com/immutable-release/operator/api/v1alpha1"
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

// Notifier reconciles the releases of target that follow a pushed repository and
// reference, and returns how many it asked (for the log only: the reply never says).
type Notifier interface {
	Notify(ctx context.Context, target Target, push Push) (int, error)
}

// Endpoints finds what a path serves; *Registry is one.
type Endpoints interface {
	Lookup(path string) (Endpoint, bool)
}

// Handler serves POST requests from Git hosts. It holds no API client: paths and tokens
// come from Endpoints, kept by the Receiver reconciler.
type Handler struct {
	Endpoints Endpoints
	Notifier  Notifier
	// Sources limits requests per client address, before anything is read; Receivers
	// limits verified deliveries per Receiver. Nil limits nothing.
	Sources, Receivers *Limiter
	// Deliveries, when set, acknowledges a delivery ID seen before without acting on it.
	Deliveries *Deliveries
	Log        logr.Logger
}

// ErrUnauthorized is returned for payloads that are unsigned or wrongly signed.
var ErrUnauthorized = errors.New("the payload is not signed with the receiver's token")

// The replies. Every verified delivery is accepted alike, whether it matched releases or
// not, was a replay or not a push at all; every unknown path and every failed verification
// is not found alike, so that without the token a path that exists and one that does not
// look the same.
func accepted(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, "accepted\n")
}

func notFound(w http.ResponseWriter) { http.Error(w, "not found", http.StatusNotFound) }

// decoy keys the HMAC computed for unknown paths, so that they take as long as a wrong
// signature on a known one.
var decoy = func() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}()

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	if !h.Sources.Allow(source(r)) {
		http.Error(w, "too many requests", http.StatusTooManyRequests)
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
	endpoint, known := h.Endpoints.Lookup(r.URL.Path)
	if !known {
		_ = Verify(v1alpha1.GenericReceiver, r.Header, body, decoy)
		h.Log.V(1).Info("Refused a webhook payload", "remote", r.RemoteAddr, "reason", "no receiver serves the path")
		notFound(w)
		return
	}
	log := h.Log.WithValues("receiver", endpoint.Receiver.String())
	if err := Verify(endpoint.Type, r.Header, body, endpoint.Token); err != nil {
		log.Info("Refused a webhook payload", "remote", r.RemoteAddr, "reason", err.Error())
		notFound(w)
		return
	}
	if !h.Receivers.Allow(r.URL.Path) {
		log.Info("Refused a webhook payload", "remote", r.RemoteAddr, "reason", "over the receiver's rate limit")
		http.Error(w, "too many requests", http.StatusTooManyRequests)
		return
	}
	// A delivery that fails is forgotten, so that the host's retry of it is acted on.
	id := deliveryID(r.Header)
	claimed := ""
	if id != "" && h.Deliveries != nil {
		claimed = r.URL.Path + " " + id
		if !h.Deliveries.Claim(claimed) {
			log.Info("Ignored a delivery seen before", "delivery", id)
			accepted(w)
			return
		}
	}
	push, err := Parse(r.Header, body)
	if err != nil {
		h.release(claimed)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if push == nil {
		// A verified event that is not a push (a ping, an issue comment): nothing to do.
		accepted(w)
		return
	}
	n, err := h.Notifier.Notify(r.Context(), endpoint.Target, *push)
	if err != nil {
		h.release(claimed)
		log.Error(err, "Failed to request reconciles", "ref", push.Ref)
		http.Error(w, "requesting reconciles failed", http.StatusInternalServerError)
		return
	}
	log.Info("Received a push", "urls", push.URLs, "ref", push.Ref, "delivery", id, "releases", n)
	accepted(w)
}

func (h *Handler) release(claimed string) {
	if claimed != "" {
		h.Deliveries.Release(claimed)
	}
}

// Verify checks the payload against secret by the header the receiver's type names:
// X-Hub-Signature-256 (github), X-Gitea-Signature (gitea), X-Gitlab-Token (gitlab), or
// X-Signature-256 (generic: sha256=<hex HMAC-SHA256 of the body>). Any other header is
// ignored: a GitHub Receiver does not take a GitLab token.
func Verify(kind string, h http.Header, body, secret []byte) error {
	if len(secret) == 0 {
		return fmt.Errorf("%w: the receiver's secret is empty", ErrUnauthorized)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	want := mac.Sum(nil)
	checkHex := func(header string) error {
		got := h.Get(header)
		if got == "" {
			return fmt.Errorf("%w: no %s header", ErrUnauthorized, header)
		}
		sig, err := hex.DecodeString(strings.TrimPrefix(got, "sha256="))
		if err != nil || !hmac.Equal(sig, want) {
			return fmt.Errorf("%w: %s does not match", ErrUnauthorized, header)
		}
		return nil
	}
	switch kind {
	case v1alpha1.GitHubReceiver:
		return checkHex("X-Hub-Signature-256")
	case v1alpha1.GiteaReceiver:
		return checkHex("X-Gitea-Signature")
	case v1alpha1.GenericReceiver:
		return checkHex("X-Signature-256")
	case v1alpha1.GitLabReceiver:
		got := h.Get("X-Gitlab-Token")
		if got == "" {
			return fmt.Errorf("%w: no X-Gitlab-Token header", ErrUnauthorized)
		}
		// Compare digests: ConstantTimeCompare returns at once on a length mismatch.
		gotSum, wantSum := sha256.Sum256([]byte(got)), sha256.Sum256(secret)
		if subtle.ConstantTimeCompare(gotSum[:], wantSum[:]) != 1 {
			return fmt.Errorf("%w: X-Gitlab-Token does not match", ErrUnauthorized)
		}
		return nil
	default:
		return fmt.Errorf("%w: unknown receiver type %q", ErrUnauthorized, kind)
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
