package controllers

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/receiver"
	"github.com/immutable-release/operator/internal/testgit"
)

var webhookSecret = []byte("webhook-shared-secret")

// newReceiver serves the webhook receiver as the manager wires it.
func newReceiver(t testing.TB) *httptest.Server {
	h := &receiver.Handler{
		Secret:   func(context.Context) ([]byte, error) { return webhookSecret, nil },
		Notifier: operator,
		Log:      logr.Discard(),
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// pushEvent posts a GitHub push event for repo's main branch.
func pushEvent(srv *httptest.Server, repo *testgit.Repo, secret []byte) (*http.Response, error) {
	body := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","repository":{"clone_url":%q}}`, repo.URL()))
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	req, err := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	return http.DefaultClient.Do(req)
}

// TestWebhookAppliesPush: a signed push event applies the new commit at once (the
// interval is an hour); a wrongly signed one is refused and reconciles nothing.
func TestWebhookAppliesPush(t *testing.T) {
	g := NewWithT(t)
	ns, repo, _ := readyRelease(t, "ghcr.io/acme/web@"+digestV1)
	srv := newReceiver(t)

	commit(t, repo, "Release 2", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})
	resp, err := pushEvent(srv, repo, []byte("wrong"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
	g.Consistently(func(g Gomega) {
		g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV1))
	}, time.Second, 100*time.Millisecond).Should(Succeed())

	resp, err = pushEvent(srv, repo, webhookSecret)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(resp.StatusCode).To(Equal(http.StatusAccepted))
	g.Eventually(func(g Gomega) {
		g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV2))
	}, 10*time.Second, 20*time.Millisecond).Should(Succeed())
}

// BenchmarkWebhookToApplied times a push: from the webhook call to the Deployment naming
// the new digest (make bench).
func BenchmarkWebhookToApplied(b *testing.B) {
	t := &testing.T{}
	ns, repo, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1)
	srv := newReceiver(b)
	var latencies []time.Duration
	for i := 0; i < b.N; i++ {
		image := fmt.Sprintf("ghcr.io/acme/web@sha256:%064x", i+100)
		commit(t, repo, fmt.Sprintf("Release %d", i), map[string]string{"app/deployment.yaml": deploymentYAML("web", image)})
		start := time.Now()
		if _, err := pushEvent(srv, repo, webhookSecret); err != nil {
			b.Fatal(err)
		}
		for deploymentImageOrEmpty(ns) != image {
			if time.Since(start) > 30*time.Second {
				b.Fatalf("push %d was not applied within 30s", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
		latencies = append(latencies, time.Since(start))
		waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	p50, max := latencies[len(latencies)/2], latencies[len(latencies)-1]
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(max.Microseconds())/1000, "max-ms")
	fmt.Fprintf(os.Stderr, "webhook to applied over %d pushes: p50 %s, max %s\n", len(latencies), p50.Round(time.Millisecond), max.Round(time.Millisecond))
}

func deploymentImageOrEmpty(ns string) (image string) {
	defer func() { _ = recover() }()
	g := NewGomega(func(string, ...int) { panic("not found") })
	return deploymentImage(g, ns, "web")
}
