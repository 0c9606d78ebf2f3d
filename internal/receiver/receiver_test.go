package receiver

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/api/v1alpha1"
)

var secret = []byte("s3cret")

func sign(body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

type recorder struct{ pushes []Push }

func (r *recorder) Notify(_ context.Context, p Push) (int, error) {
	r.pushes = append(r.pushes, p)
	return 1, nil
}

const githubPush = `{"ref":"refs/heads/main","repository":{"clone_url":"https://github.com/acme/shop.git","ssh_url":"git@github.com:acme/shop.git"}}`
const gitlabPush = `{"ref":"refs/heads/main","project":{"git_http_url":"https://gitlab.com/acme/shop.git","git_ssh_url":"git@gitlab.com:acme/shop.git"}}`

func TestHandler(t *testing.T) {
	big := `{"ref":"` + strings.Repeat("x", MaxBodySize) + `"}`
	tests := []struct {
		name    string
		headers map[string]string
		body    string
		status  int
		urls    []string
	}{
		{name: "github", headers: map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": sign([]byte(githubPush))}, body: githubPush,
			status: http.StatusAccepted, urls: []string{"https://github.com/acme/shop.git", "git@github.com:acme/shop.git"}},
		{name: "gitea", headers: map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": strings.TrimPrefix(sign([]byte(githubPush)), "sha256=")}, body: githubPush,
			status: http.StatusAccepted, urls: []string{"https://github.com/acme/shop.git", "git@github.com:acme/shop.git"}},
		// Gitea 1.26 as it really sends a push: its own headers and GitHub's and Gogs', all "push".
		{name: "gitea as sent", headers: map[string]string{"X-Gitea-Event": "push", "X-Github-Event": "push", "X-Gogs-Event": "push",
			"X-Gitea-Signature": strings.TrimPrefix(sign([]byte(githubPush)), "sha256="), "X-Hub-Signature-256": sign([]byte(githubPush))}, body: githubPush,
			status: http.StatusAccepted, urls: []string{"https://github.com/acme/shop.git", "git@github.com:acme/shop.git"}},
		{name: "gitlab", headers: map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "s3cret"}, body: gitlabPush,
			status: http.StatusAccepted, urls: []string{"https://gitlab.com/acme/shop.git", "git@gitlab.com:acme/shop.git"}},
		{name: "generic", headers: map[string]string{"X-Signature-256": sign([]byte(`{"ref":"refs/heads/main","repository":{"url":"http://git.local/shop.git"}}`))},
			body: `{"ref":"refs/heads/main","repository":{"url":"http://git.local/shop.git"}}`, status: http.StatusAccepted, urls: []string{"http://git.local/shop.git"}},
		{name: "unsigned", headers: map[string]string{"X-GitHub-Event": "push"}, body: githubPush, status: http.StatusUnauthorized},
		{name: "wrong signature", headers: map[string]string{"X-Hub-Signature-256": "sha256=00"}, body: githubPush, status: http.StatusUnauthorized},
		{name: "wrong gitlab token", headers: map[string]string{"X-Gitlab-Token": "nope"}, body: gitlabPush, status: http.StatusUnauthorized},
		{name: "signed for another body", headers: map[string]string{"X-Hub-Signature-256": sign([]byte(gitlabPush))}, body: githubPush, status: http.StatusUnauthorized},
		{name: "malformed JSON", headers: map[string]string{"X-Hub-Signature-256": sign([]byte("{nope"))}, body: "{nope", status: http.StatusBadRequest},
		{name: "no ref", headers: map[string]string{"X-Hub-Signature-256": sign([]byte(`{"repository":{"url":"x"}}`))}, body: `{"repository":{"url":"x"}}`, status: http.StatusBadRequest},
		{name: "ping", headers: map[string]string{"X-GitHub-Event": "ping", "X-Hub-Signature-256": sign([]byte(`{}`))}, body: `{}`, status: http.StatusNoContent},
		{name: "too large", headers: map[string]string{"X-Hub-Signature-256": "sha256=00"}, body: big, status: http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			rec := &recorder{}
			h := &Handler{Secret: func(context.Context) ([]byte, error) { return secret, nil }, Notifier: rec, Log: logr.Discard()}
			req := httptest.NewRequest(http.MethodPost, "/hook", bytes.NewBufferString(tt.body))
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			g.Expect(w.Code).To(Equal(tt.status), w.Body.String())
			if tt.status != http.StatusAccepted {
				g.Expect(rec.pushes).To(BeEmpty())
				return
			}
			g.Expect(rec.pushes).To(Equal([]Push{{URLs: tt.urls, Ref: "refs/heads/main"}}))
		})
	}
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
		if Verify(h, body, secret) != nil {
			return
		}
		got, _ := hex.DecodeString(strings.TrimPrefix(sig, "sha256="))
		want, _ := hex.DecodeString(strings.TrimPrefix(sign(body), "sha256="))
		if !hmac.Equal(got, want) {
			t.Fatalf("accepted signature %q for %q", sig, body)
		}
	})
}
