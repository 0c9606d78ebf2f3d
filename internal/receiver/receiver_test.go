package receiver

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/immutable-release/operator/api/v1alpha1"
)

var secret = []byte("s3cret")

func sign(body []byte) string { return signWith(secret, body) }

func signWith(key, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// notified is one call of the notifier.
type notified struct {
	target Target
	push   Push
}

// recorder notifies as the reconciler does, answering matched as the number of releases.
type recorder struct {
	mu      sync.Mutex
	calls   []notified
	matched int
	err     error
}

func (r *recorder) Notify(_ context.Context, t Target, p Push) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, notified{t, p})
	return r.matched, r.err
}

func (r *recorder) pushes() []Push {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Push
	for _, c := range r.calls {
		out = append(out, c.push)
	}
	return out
}

const githubPush = `{"ref":"refs/heads/main","repository":{"clone_url":"https://github.com/acme/shop.git","ssh_url":"git@github.com:acme/shop.git"}}`
const gitlabPush = `{"ref":"refs/heads/main","project":{"git_http_url":"https://gitlab.com/acme/shop.git","git_ssh_url":"git@gitlab.com:acme/shop.git"}}`

// tenant is a Receiver of the handler tests: its namespace, type and token.
type tenant struct {
	ns, kind string
	token    []byte
}

func (t tenant) path() string { return WebhookPath(t.token, "hook", t.ns) }

// newHandler serves the tenants' Receivers, with limits and de-duplication as the manager
// sets them up.
func newHandler(rec *recorder, tenants ...tenant) *Handler {
	reg := NewRegistry()
	for _, t := range tenants {
		key := types.NamespacedName{Namespace: t.ns, Name: "hook"}
		if err := reg.Set(t.path(), Endpoint{Receiver: key, Type: t.kind, Token: t.token, Target: Target{Namespace: t.ns}}); err != nil {
			panic(err)
		}
	}
	return &Handler{Endpoints: reg, Notifier: rec, Log: logr.Discard(), Deliveries: NewDeliveries(DeliveryWindow),
		Sources: NewLimiter(1000, 1000), Receivers: NewLimiter(1000, 1000)}
}

// post serves one request and returns the whole reply.
func post(h http.Handler, path, body string, headers map[string]string, remote string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewBufferString(body))
	if remote != "" {
		req.RemoteAddr = remote
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// reply is what a caller sees: status, headers and body.
func reply(w *httptest.ResponseRecorder) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", w.Code)
	_ = w.Result().Header.Write(&b)
	b.WriteString(w.Body.String())
	return b.String()
}

func TestHandler(t *testing.T) {
	big := `{"ref":"` + strings.Repeat("x", MaxBodySize) + `"}`
	generic := `{"ref":"refs/heads/main","repository":{"url":"http://git.local/shop.git"}}`
	tests := []struct {
		name    string
		kind    string
		headers map[string]string
		body    string
		status  int
		urls    []string
	}{
		{name: "github", kind: "github", headers: map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": sign([]byte(githubPush))}, body: githubPush,
			status: http.StatusAccepted, urls: []string{"https://github.com/acme/shop.git", "git@github.com:acme/shop.git"}},
		{name: "gitea", kind: "gitea", headers: map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": strings.TrimPrefix(sign([]byte(githubPush)), "sha256=")}, body: githubPush,
			status: http.StatusAccepted, urls: []string{"https://github.com/acme/shop.git", "git@github.com:acme/shop.git"}},
		// Gitea 1.26 as it really sends a push: its own headers and GitHub's and Gogs', all "push".
		{name: "gitea as sent", kind: "gitea", headers: map[string]string{"X-Gitea-Event": "push", "X-Github-Event": "push", "X-Gogs-Event": "push",
			"X-Gitea-Signature": strings.TrimPrefix(sign([]byte(githubPush)), "sha256="), "X-Hub-Signature-256": sign([]byte(githubPush))}, body: githubPush,
			status: http.StatusAccepted, urls: []string{"https://github.com/acme/shop.git", "git@github.com:acme/shop.git"}},
		{name: "gitlab", kind: "gitlab", headers: map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "s3cret"}, body: gitlabPush,
			status: http.StatusAccepted, urls: []string{"https://gitlab.com/acme/shop.git", "git@gitlab.com:acme/shop.git"}},
		{name: "generic", kind: "generic", headers: map[string]string{"X-Signature-256": sign([]byte(generic))},
			body: generic, status: http.StatusAccepted, urls: []string{"http://git.local/shop.git"}},
		{name: "unsigned", kind: "github", headers: map[string]string{"X-GitHub-Event": "push"}, body: githubPush, status: http.StatusNotFound},
		{name: "wrong signature", kind: "github", headers: map[string]string{"X-Hub-Signature-256": "sha256=00"}, body: githubPush, status: http.StatusNotFound},
		{name: "wrong gitlab token", kind: "gitlab", headers: map[string]string{"X-Gitlab-Token": "nope"}, body: gitlabPush, status: http.StatusNotFound},
		{name: "signed for another body", kind: "github", headers: map[string]string{"X-Hub-Signature-256": sign([]byte(gitlabPush))}, body: githubPush, status: http.StatusNotFound},
		// The type decides the header: a GitLab token does not open a GitHub Receiver.
		{name: "another host's header", kind: "github", headers: map[string]string{"X-Gitlab-Token": "s3cret"}, body: gitlabPush, status: http.StatusNotFound},
		{name: "malformed JSON", kind: "github", headers: map[string]string{"X-Hub-Signature-256": sign([]byte("{nope"))}, body: "{nope", status: http.StatusBadRequest},
		{name: "no ref", kind: "github", headers: map[string]string{"X-Hub-Signature-256": sign([]byte(`{"repository":{"url":"x"}}`))}, body: `{"repository":{"url":"x"}}`, status: http.StatusBadRequest},
		{name: "ping", kind: "github", headers: map[string]string{"X-GitHub-Event": "ping", "X-Hub-Signature-256": sign([]byte(`{}`))}, body: `{}`, status: http.StatusAccepted},
		{name: "too large", kind: "github", headers: map[string]string{"X-Hub-Signature-256": "sha256=00"}, body: big, status: http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			rec := &recorder{}
			a := tenant{ns: "a", kind: tt.kind, token: secret}
			w := post(newHandler(rec, a), a.path(), tt.body, tt.headers, "")
			g.Expect(w.Code).To(Equal(tt.status), w.Body.String())
			if tt.urls == nil {
				g.Expect(rec.calls).To(BeEmpty())
				return
			}
			g.Expect(rec.calls).To(Equal([]notified{{Target{Namespace: "a"}, Push{URLs: tt.urls, Ref: "refs/heads/main"}}}))
		})
	}
}

// TestHandlerTenantsApart: a token opens only its own Receiver's path, and what it
// reaches is only its own namespace.
func TestHandlerTenantsApart(t *testing.T) {
	g := NewWithT(t)
	rec := &recorder{}
	a := tenant{ns: "team-a", kind: "github", token: []byte("token-of-a")}
	b := tenant{ns: "team-b", kind: "github", token: []byte("token-of-b")}
	h := newHandler(rec, a, b)
	payloadOfB := `{"ref":"refs/heads/main","repository":{"clone_url":"https://git.example/team-b/shop.git"}}`

	// To A's path, signed by A, naming B's repository: the only target is A's namespace.
	w := post(h, a.path(), payloadOfB, map[string]string{"X-Hub-Signature-256": signWith(a.token, []byte(payloadOfB))}, "")
	g.Expect(w.Code).To(Equal(http.StatusAccepted))
	g.Expect(rec.calls).To(HaveLen(1))
	g.Expect(rec.calls[0].target).To(Equal(Target{Namespace: "team-a"}))

	// To B's path, signed by A: refused, nothing notified.
	w = post(h, b.path(), payloadOfB, map[string]string{"X-Hub-Signature-256": signWith(a.token, []byte(payloadOfB))}, "")
	g.Expect(w.Code).To(Equal(http.StatusNotFound))
	g.Expect(rec.calls).To(HaveLen(1))

	// The old single path serves nothing.
	w = post(h, "/hook", payloadOfB, map[string]string{"X-Hub-Signature-256": signWith(a.token, []byte(payloadOfB))}, "")
	g.Expect(w.Code).To(Equal(http.StatusNotFound))
	g.Expect(rec.calls).To(HaveLen(1))
}

// TestHandlerSameReply: a caller learns nothing from the reply. Verified deliveries get
// the same bytes whether no release or many follow the repository, and whether the event
// was a push; an unknown path and a wrong signature on a known one get the same bytes.
func TestHandlerSameReply(t *testing.T) {
	g := NewWithT(t)
	a := tenant{ns: "a", kind: "github", token: secret}
	headers := map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": sign([]byte(githubPush))}

	none, many := &recorder{matched: 0}, &recorder{matched: 500}
	unmatched := post(newHandler(none, a), a.path(), githubPush, headers, "")
	matched := post(newHandler(many, a), a.path(), githubPush, headers, "")
	g.Expect(none.calls).To(HaveLen(1))
	g.Expect(many.calls).To(HaveLen(1))
	g.Expect(matched.Code).To(Equal(http.StatusAccepted))
	g.Expect(reply(matched)).To(Equal(reply(unmatched)))
	ping := post(newHandler(&recorder{}, a), a.path(), `{}`, map[string]string{"X-GitHub-Event": "ping", "X-Hub-Signature-256": sign([]byte(`{}`))}, "")
	g.Expect(reply(ping)).To(Equal(reply(matched)))

	unknown := post(newHandler(&recorder{}, a), WebhookPath([]byte("guess"), "hook", "a"), githubPush, headers, "")
	wrong := post(newHandler(&recorder{}, a), a.path(), githubPush, map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": signWith([]byte("guess"), []byte(githubPush))}, "")
	unsigned := post(newHandler(&recorder{}, a), a.path(), githubPush, map[string]string{"X-GitHub-Event": "push"}, "")
	g.Expect(unknown.Code).To(Equal(http.StatusNotFound))
	g.Expect(reply(wrong)).To(Equal(reply(unknown)))
	g.Expect(reply(unsigned)).To(Equal(reply(unknown)))
}

// TestHandlerReplay: a delivery ID seen before is acknowledged alike and does nothing;
// a new ID acts, and a delivery that failed may be sent again.
func TestHandlerReplay(t *testing.T) {
	a := tenant{ns: "a", kind: "github", token: secret}
	for _, header := range deliveryHeaders {
		t.Run(header, func(t *testing.T) {
			g := NewWithT(t)
			rec := &recorder{}
			h := newHandler(rec, a)
			headers := map[string]string{"X-Hub-Signature-256": sign([]byte(githubPush)), header: "7d1e0c1a-0000-4000-8000-000000000001"}
			first := post(h, a.path(), githubPush, headers, "")
			again := post(h, a.path(), githubPush, headers, "")
			g.Expect(first.Code).To(Equal(http.StatusAccepted))
			g.Expect(reply(again)).To(Equal(reply(first)))
			g.Expect(rec.pushes()).To(HaveLen(1))

			headers[header] = "7d1e0c1a-0000-4000-8000-000000000002"
			g.Expect(post(h, a.path(), githubPush, headers, "").Code).To(Equal(http.StatusAccepted))
			g.Expect(rec.pushes()).To(HaveLen(2))
		})
	}
	t.Run("failed delivery sent again", func(t *testing.T) {
		g := NewWithT(t)
		rec := &recorder{err: errors.New("the cache is not synced")}
		h := newHandler(rec, a)
		headers := map[string]string{"X-Hub-Signature-256": sign([]byte(githubPush)), "X-GitHub-Delivery": "retry-me"}
		g.Expect(post(h, a.path(), githubPush, headers, "").Code).To(Equal(http.StatusInternalServerError))
		rec.err = nil
		g.Expect(post(h, a.path(), githubPush, headers, "").Code).To(Equal(http.StatusAccepted))
		g.Expect(rec.pushes()).To(HaveLen(2))
	})
	t.Run("same ID, another receiver", func(t *testing.T) {
		g := NewWithT(t)
		rec := &recorder{}
		b := tenant{ns: "b", kind: "github", token: []byte("other")}
		h := newHandler(rec, a, b)
		g.Expect(post(h, a.path(), githubPush, map[string]string{"X-Hub-Signature-256": sign([]byte(githubPush)), "X-GitHub-Delivery": "same"}, "").Code).To(Equal(http.StatusAccepted))
		g.Expect(post(h, b.path(), githubPush, map[string]string{"X-Hub-Signature-256": signWith(b.token, []byte(githubPush)), "X-GitHub-Delivery": "same"}, "").Code).To(Equal(http.StatusAccepted))
		g.Expect(rec.calls).To(HaveLen(2))
	})
	t.Run("an unverified delivery does not burn its ID", func(t *testing.T) {
		g := NewWithT(t)
		rec := &recorder{}
		h := newHandler(rec, a)
		g.Expect(post(h, a.path(), githubPush, map[string]string{"X-Hub-Signature-256": "sha256=00", "X-GitHub-Delivery": "x"}, "").Code).To(Equal(http.StatusNotFound))
		g.Expect(post(h, a.path(), githubPush, map[string]string{"X-Hub-Signature-256": sign([]byte(githubPush)), "X-GitHub-Delivery": "x"}, "").Code).To(Equal(http.StatusAccepted))
		g.Expect(rec.calls).To(HaveLen(1))
	})
}

// TestDeliveriesWindow: an ID is forgotten after the window, and the memory is bounded.
func TestDeliveriesWindow(t *testing.T) {
	g := NewWithT(t)
	now := time.Now()
	d := NewDeliveries(10 * time.Minute)
	d.now = func() time.Time { return now }
	g.Expect(d.Claim("a")).To(BeTrue())
	g.Expect(d.Claim("a")).To(BeFalse())
	now = now.Add(11 * time.Minute)
	g.Expect(d.Claim("a")).To(BeTrue())
	for i := range 3 * MaxTracked {
		d.Claim(fmt.Sprint(i))
	}
	g.Expect(d.order.Len()).To(BeNumerically("<=", MaxTracked))
	g.Expect(d.seen).To(HaveLen(d.order.Len()))
}

// TestHandlerRateLimits: a flood from one address gets 429 while another address still
// gets through; a flood of verified deliveries to one Receiver gets 429 while another
// Receiver still gets through. Nothing of the refused requests is acted on.
func TestHandlerRateLimits(t *testing.T) {
	a := tenant{ns: "a", kind: "github", token: []byte("token-of-a")}
	b := tenant{ns: "b", kind: "github", token: []byte("token-of-b")}
	signedA := map[string]string{"X-Hub-Signature-256": signWith(a.token, []byte(githubPush))}
	signedB := map[string]string{"X-Hub-Signature-256": signWith(b.token, []byte(githubPush))}

	t.Run("per source", func(t *testing.T) {
		g := NewWithT(t)
		rec := &recorder{}
		h := newHandler(rec, a)
		h.Sources = NewLimiter(1, 10)
		codes := map[int]int{}
		for range 50 {
			codes[post(h, "/hook/"+strings.Repeat("0", 64), githubPush, nil, "203.0.113.7:4000").Code]++
		}
		g.Expect(codes).To(Equal(map[int]int{http.StatusNotFound: 10, http.StatusTooManyRequests: 40}))
		// The flooding address, even with the right token, waits; another one gets through.
		g.Expect(post(h, a.path(), githubPush, signedA, "203.0.113.7:4001").Code).To(Equal(http.StatusTooManyRequests))
		g.Expect(post(h, a.path(), githubPush, signedA, "198.51.100.1:4000").Code).To(Equal(http.StatusAccepted))
		g.Expect(rec.calls).To(HaveLen(1))
	})
	t.Run("per receiver", func(t *testing.T) {
		g := NewWithT(t)
		rec := &recorder{}
		h := newHandler(rec, a, b)
		h.Receivers = NewLimiter(1, 5)
		codes := map[int]int{}
		for i := range 20 {
			codes[post(h, a.path(), githubPush, signedA, fmt.Sprintf("192.0.2.%d:1", i)).Code]++
		}
		g.Expect(codes).To(Equal(map[int]int{http.StatusAccepted: 5, http.StatusTooManyRequests: 15}))
		g.Expect(post(h, b.path(), githubPush, signedB, "192.0.2.1:1").Code).To(Equal(http.StatusAccepted))
		g.Expect(rec.calls).To(HaveLen(6))
	})
	t.Run("bounded", func(t *testing.T) {
		g := NewWithT(t)
		l := NewLimiter(1, 1)
		for i := range 3 * MaxTracked {
			l.Allow(fmt.Sprint(i))
		}
		g.Expect(l.order.Len()).To(Equal(MaxTracked))
		g.Expect(l.keys).To(HaveLen(MaxTracked))
	})
}

// TestRegistry: one path per Receiver, a new token moves it, a taken path is refused.
func TestRegistry(t *testing.T) {
	g := NewWithT(t)
	r := NewRegistry()
	a := types.NamespacedName{Namespace: "a", Name: "hook"}
	b := types.NamespacedName{Namespace: "b", Name: "hook"}
	g.Expect(r.Set("/hook/1", Endpoint{Receiver: a, Token: []byte("1")})).To(Succeed())
	g.Expect(r.Set("/hook/1", Endpoint{Receiver: b, Token: []byte("1")})).To(MatchError(ErrPathTaken))
	g.Expect(r.Set("/hook/2", Endpoint{Receiver: a, Token: []byte("2")})).To(Succeed())
	_, ok := r.Lookup("/hook/1")
	g.Expect(ok).To(BeFalse())
	e, ok := r.Lookup("/hook/2")
	g.Expect(ok).To(BeTrue())
	g.Expect(e.Receiver).To(Equal(a))
	r.Forget(a)
	g.Expect(r.Len()).To(BeZero())
	// Flux's derivation, so that paths carry over from notification-controller.
	g.Expect(WebhookPath([]byte("token"), "name", "ns")).To(Equal("/hook/" + fmt.Sprintf("%x", sha256.Sum256([]byte("tokennamens")))))
}

// TestTargetSelects: only releases of the namespace, and of the names and labels given.
func TestTargetSelects(t *testing.T) {
	g := NewWithT(t)
	rel := func(ns, name string, l map[string]string) *v1alpha1.ImmutableRelease {
		r := &v1alpha1.ImmutableRelease{}
		r.Namespace, r.Name, r.Labels = ns, name, l
		return r
	}
	sel, err := labels.Parse("tier=web")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(Target{Namespace: "a"}.Selects(rel("a", "shop", nil))).To(BeTrue())
	g.Expect(Target{Namespace: "a"}.Selects(rel("b", "shop", nil))).To(BeFalse())
	g.Expect(Target{}.Selects(rel("", "shop", nil))).To(BeFalse())
	g.Expect(Target{Namespace: "a", Names: []string{"cart"}}.Selects(rel("a", "shop", nil))).To(BeFalse())
	g.Expect(Target{Namespace: "a", Names: []string{"cart", "shop"}}.Selects(rel("a", "shop", nil))).To(BeTrue())
	g.Expect(Target{Namespace: "a", Selector: sel}.Selects(rel("a", "shop", map[string]string{"tier": "db"}))).To(BeFalse())
	g.Expect(Target{Namespace: "a", Selector: sel}.Selects(rel("a", "shop", map[string]string{"tier": "web"}))).To(BeTrue())
}

func TestMatches(t *testing.T) {
	g := NewWithT(t)
	rel := func(url string, ref v1alpha1.GitReference) *v1alpha1.ImmutableRelease {
		r := &v1alpha1.ImmutableRelease{}
		r.Spec.Git.URL, r.Spec.Git.Ref = url, ref
		return r
	}
	main := v1alpha1.GitReference{Branch: "main"}
	push := Push{URLs: []string{"https://github.com/Acme/Shop.git", "git@github.com:acme/shop.git"}, Ref: "refs/heads/main"}
	g.Expect(Matches(rel("https://github.com/acme/shop", main), push)).To(BeTrue())
	g.Expect(Matches(rel("ssh://git@github.com/acme/shop.git", main), push)).To(BeTrue())
	g.Expect(Matches(rel("https://github.com/acme/shop.git", v1alpha1.GitReference{Branch: "dev"}), push)).To(BeFalse())
	g.Expect(Matches(rel("https://github.com/acme/other.git", main), push)).To(BeFalse())
	g.Expect(Matches(rel("https://github.com/acme/shop.git", v1alpha1.GitReference{Commit: strings.Repeat("a", 40)}), push)).To(BeFalse())
	g.Expect(Matches(rel("https://github.com/acme/shop.git", v1alpha1.GitReference{Tag: "v1"}), Push{URLs: push.URLs, Ref: "refs/tags/v1"})).To(BeTrue())
}

// FuzzParse: no payload makes the parser panic; whatever it accepts has a ref and a URL.
func FuzzParse(f *testing.F) {
	f.Add([]byte(githubPush))
	f.Add([]byte(gitlabPush))
	f.Add([]byte(`{"ref":1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := Parse(http.Header{}, body)
		if err != nil || p == nil {
			return
		}
		if p.Ref == "" || len(p.URLs) == 0 {
			t.Fatalf("accepted a push without ref or URL: %+v", p)
		}
		for _, u := range p.URLs {
			_ = SameRepository(u, u)
		}
	})
}

// FuzzVerify: no header or body makes verification panic, and nothing but the body's true
// HMAC is accepted.
func FuzzVerify(f *testing.F) {
	f.Add([]byte(githubPush), sign([]byte(githubPush)))
	f.Add([]byte("x"), "sha256=zz")
	f.Fuzz(func(t *testing.T, body []byte, sig string) {
		h := http.Header{}
		h.Set("X-Hub-Signature-256", sig)
		if Verify("github", h, body, secret) != nil {
			return
		}
		got, _ := hex.DecodeString(strings.TrimPrefix(sig, "sha256="))
		want, _ := hex.DecodeString(strings.TrimPrefix(sign(body), "sha256="))
		if !hmac.Equal(got, want) {
			t.Fatalf("accepted signature %q for %q", sig, body)
		}
	})
}

// The server is ready only while it listens with its Receivers registered: a replica whose
// readiness probe passes accepts the connection a push makes.
func TestServerReady(t *testing.T) {
	g := NewWithT(t)
	primed := make(chan struct{})
	listening := make(chan string, 1)
	s := &Server{Addr: "127.0.0.1:0", Handler: http.NotFoundHandler(),
		Prime:     func(context.Context) error { <-primed; return nil },
		Listening: func(addr string) { listening <- addr }}
	g.Expect(s.Ready(nil)).To(HaveOccurred())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	time.Sleep(50 * time.Millisecond)
	g.Expect(s.Ready(nil)).To(MatchError(ContainSubstring("not listening yet")), "still registering the Receivers")

	close(primed)
	addr := <-listening
	g.Expect(s.Ready(nil)).To(Succeed())
	resp, err := http.Post("http://"+addr+PathPrefix+"x", "application/json", strings.NewReader("{}"))
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()

	cancel()
	g.Expect(<-done).To(Succeed())
	g.Expect(s.Ready(nil)).To(HaveOccurred())
}
