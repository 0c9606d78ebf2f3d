package controllers

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/receiver"
	"github.com/immutable-release/operator/internal/testgit"
)

// countingReader counts the Secrets read through it.
type countingReader struct {
	client.Reader
	secrets atomic.Int64
}

func (c *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		c.secrets.Add(1)
	}
	return c.Reader.Get(ctx, key, obj, opts...)
}

// newReceiver serves the webhook receiver as the manager wires it, from the Registry the
// suite's Receiver reconciler keeps.
func newReceiver(t testing.TB) *httptest.Server {
	h := &receiver.Handler{
		Endpoints:  receivers,
		Notifier:   operator,
		Sources:    receiver.NewLimiter(1000, 1000),
		Receivers:  receiver.NewLimiter(1000, 1000),
		Deliveries: receiver.NewDeliveries(receiver.DeliveryWindow),
		Log:        logr.Discard(),
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// hook is a Receiver of a namespace, Ready, and its token.
type hook struct {
	obj   *v1alpha1.Receiver
	token []byte
	path  string
}

// newHook creates a Secret and a github Receiver in namespace, and waits until it serves.
func newHook(t testing.TB, namespace, token string) hook {
	g := NewWithT(t)
	g.Expect(k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "webhook", Namespace: namespace},
		StringData: map[string]string{"token": token},
	})).To(Succeed())
	obj := &v1alpha1.Receiver{
		ObjectMeta: metav1.ObjectMeta{Name: "github", Namespace: namespace},
		Spec:       v1alpha1.ReceiverSpec{Type: v1alpha1.GitHubReceiver, SecretRef: meta.LocalObjectReference{Name: "webhook"}},
	}
	g.Expect(k8s.Create(ctx, obj)).To(Succeed())
	h := hook{obj: obj, token: []byte(token), path: receiver.WebhookPath([]byte(token), obj.Name, namespace)}
	waitForReceiver(t, obj, metav1.ConditionTrue, v1alpha1.ReceiverReadyReason)
	g.Expect(getReceiver(g, obj).Status.WebhookPath).To(Equal(h.path))
	return h
}

// waitForReceiver waits until the Receiver's Ready condition has status and reason, and
// until the handler serves its path (or not).
func waitForReceiver(t testing.TB, obj *v1alpha1.Receiver, st metav1.ConditionStatus, reason string) *v1alpha1.Receiver {
	g := NewWithT(t)
	out := &v1alpha1.Receiver{}
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(obj), out)).To(Succeed())
		c := apimeta.FindStatusCondition(out.Status.Conditions, meta.ReadyCondition)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(st), c.Message)
		g.Expect(c.Reason).To(Equal(reason), c.Message)
		g.Expect(c.ObservedGeneration).To(Equal(out.Generation))
		_, served := receivers.Lookup(out.Status.WebhookPath)
		g.Expect(served).To(Equal(st == metav1.ConditionTrue))
	}, 30*time.Second, 50*time.Millisecond).Should(Succeed())
	return out
}

// webhookDelivery is a push event posted to a receiver path.
type webhookDelivery struct {
	repoURL  string
	path     string
	token    []byte
	delivery string
}

// post sends the delivery as GitHub does, and returns the reply's status and body.
func (d webhookDelivery) post(srv *httptest.Server) (int, string, error) {
	body := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","repository":{"clone_url":%q}}`, d.repoURL))
	mac := hmac.New(sha256.New, d.token)
	mac.Write(body)
	req, err := http.NewRequest(http.MethodPost, srv.URL+d.path, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	if d.delivery != "" {
		req.Header.Set("X-GitHub-Delivery", d.delivery)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type") + "\n" + string(b), err
}

// pushEvent posts a GitHub push event for repo's main branch to the hook's path.
func pushEvent(srv *httptest.Server, h hook, repo *testgit.Repo, token []byte) (*http.Response, error) {
	code, _, err := webhookDelivery{repoURL: repo.URL(), path: h.path, token: token}.post(srv)
	return &http.Response{StatusCode: code}, err
}

// reconcileCount is how many reconciles the release has had in this process.
func reconcileCount(g Gomega, obj *v1alpha1.ImmutableRelease) float64 {
	m := &dto.Metric{}
	g.Expect(reconciles.WithLabelValues(obj.Namespace, obj.Name).Write(m)).To(Succeed())
	return m.GetCounter().GetValue()
}

// TestWebhookAppliesPush: a signed push event applies the new commit at once (the
// interval is an hour); a wrongly signed one is refused and reconciles nothing.
func TestWebhookAppliesPush(t *testing.T) {
	g := NewWithT(t)
	ns, repo, _ := readyRelease(t, "ghcr.io/acme/web@"+digestV1)
	h := newHook(t, ns, "webhook-shared-secret")
	srv := newReceiver(t)

	commit(t, repo, "Release 2", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})
	resp, err := pushEvent(srv, h, repo, []byte("wrong"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(resp.StatusCode).To(Equal(http.StatusNotFound))
	g.Consistently(func(g Gomega) {
		g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV1))
	}, time.Second, 100*time.Millisecond).Should(Succeed())

	resp, err = pushEvent(srv, h, repo, h.token)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(resp.StatusCode).To(Equal(http.StatusAccepted))
	g.Eventually(func(g Gomega) {
		g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV2))
	}, 10*time.Second, 20*time.Millisecond).Should(Succeed())
}

// TestReceiverTenantsApart: tenant A's token cannot reconcile tenant B's release. A push
// to A's path, signed by A, naming B's repository, is accepted but reconciles nothing of
// B; a push to B's path signed by A is refused. B's own token does reach B.
func TestReceiverTenantsApart(t *testing.T) {
	g := NewWithT(t)
	nsA, _, _ := readyRelease(t, "ghcr.io/acme/web@"+digestV1)
	nsB, repoB, relB := readyRelease(t, "ghcr.io/acme/web@"+digestV1)
	a := newHook(t, nsA, "token-of-a")
	b := newHook(t, nsB, "token-of-b")
	srv := newReceiver(t)
	commit(t, repoB, "Release 2", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})
	settled := func() float64 {
		// B's last rollout may still be polled: wait until its count stops moving.
		var n float64
		g.Eventually(func() bool {
			before := reconcileCount(g, relB)
			time.Sleep(time.Second)
			n = reconcileCount(g, relB)
			return n == before
		}, 30*time.Second).Should(BeTrue())
		return n
	}
	before := settled()

	code, _, err := webhookDelivery{repoURL: repoB.URL(), path: a.path, token: a.token}.post(srv)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(code).To(Equal(http.StatusAccepted))
	code, _, err = webhookDelivery{repoURL: repoB.URL(), path: b.path, token: a.token}.post(srv)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(code).To(Equal(http.StatusNotFound))
	g.Consistently(func(g Gomega) {
		g.Expect(reconcileCount(g, relB)).To(Equal(before))
		g.Expect(deploymentImage(g, nsB, "web")).To(Equal("ghcr.io/acme/web@" + digestV1))
	}, 2*time.Second, 100*time.Millisecond).Should(Succeed())

	code, _, err = webhookDelivery{repoURL: repoB.URL(), path: b.path, token: b.token}.post(srv)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(code).To(Equal(http.StatusAccepted))
	g.Eventually(func(g Gomega) {
		g.Expect(deploymentImage(g, nsB, "web")).To(Equal("ghcr.io/acme/web@" + digestV2))
	}, 10*time.Second, 20*time.Millisecond).Should(Succeed())
}

// TestReceiverSameReply: a verified push gets the same reply whether a release follows the
// repository or none does; an unknown path and a wrong token get the same refusal.
func TestReceiverSameReply(t *testing.T) {
	g := NewWithT(t)
	ns, repo, _ := readyRelease(t, "ghcr.io/acme/web@"+digestV1)
	h := newHook(t, ns, "same-reply-token")
	srv := newReceiver(t)

	matchedCode, matched, err := webhookDelivery{repoURL: repo.URL(), path: h.path, token: h.token}.post(srv)
	g.Expect(err).NotTo(HaveOccurred())
	unmatchedCode, unmatched, err := webhookDelivery{repoURL: "https://git.example/nobody/follows.git", path: h.path, token: h.token}.post(srv)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(matchedCode).To(Equal(http.StatusAccepted))
	g.Expect(unmatchedCode).To(Equal(matchedCode))
	g.Expect(unmatched).To(Equal(matched))

	wrongCode, wrong, err := webhookDelivery{repoURL: repo.URL(), path: h.path, token: []byte("guess")}.post(srv)
	g.Expect(err).NotTo(HaveOccurred())
	unknownCode, unknown, err := webhookDelivery{repoURL: repo.URL(), path: receiver.WebhookPath([]byte("guess"), "github", ns), token: []byte("guess")}.post(srv)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(wrongCode).To(Equal(http.StatusNotFound))
	g.Expect(unknownCode).To(Equal(wrongCode))
	g.Expect(unknown).To(Equal(wrong))
}

// TestReceiverNoSecretReadPerRequest: a flood of unauthenticated requests, to unknown
// paths and to a known one with a wrong signature, reads no Secret; the Secret is read
// by the Receiver's reconcile, and a rotated token moves the path once reconciled.
func TestReceiverNoSecretReadPerRequest(t *testing.T) {
	g := NewWithT(t)
	ns, repo, _ := readyRelease(t, "ghcr.io/acme/web@"+digestV1)
	h := newHook(t, ns, "first-token")
	srv := newReceiver(t)

	reads := secretReads.secrets.Load()
	for i := range 200 {
		path := h.path
		if i%2 == 0 {
			path = receiver.WebhookPath([]byte(fmt.Sprint(i)), "github", ns)
		}
		code, _, err := webhookDelivery{repoURL: repo.URL(), path: path, token: []byte("wrong")}.post(srv)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(code).To(Equal(http.StatusNotFound))
	}
	code, _, err := webhookDelivery{repoURL: repo.URL(), path: h.path, token: h.token}.post(srv)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(code).To(Equal(http.StatusAccepted))
	g.Expect(secretReads.secrets.Load()).To(Equal(reads), "requests read Secrets")

	// Rotation: a new token, and a reconcile request, as after editing the Git host.
	secret := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "webhook"}, secret)).To(Succeed())
	secret.Data = map[string][]byte{"token": []byte("second-token")}
	g.Expect(k8s.Update(ctx, secret)).To(Succeed())
	reconcileNow(t, h.obj)
	newPath := receiver.WebhookPath([]byte("second-token"), "github", ns)
	g.Eventually(func() string { return getReceiver(g, h.obj).Status.WebhookPath }, 30*time.Second, 50*time.Millisecond).Should(Equal(newPath))
	g.Expect(secretReads.secrets.Load()).To(BeNumerically(">", reads))
	code, _, err = webhookDelivery{repoURL: repo.URL(), path: h.path, token: h.token}.post(srv)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(code).To(Equal(http.StatusNotFound), "the old path and token still serve")
	code, _, err = webhookDelivery{repoURL: repo.URL(), path: newPath, token: []byte("second-token")}.post(srv)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(code).To(Equal(http.StatusAccepted))
}

// TestReceiverReplayedDelivery: a delivery sent again with the same ID after a new commit
// does nothing; a new ID applies the commit.
func TestReceiverReplayedDelivery(t *testing.T) {
	g := NewWithT(t)
	ns, repo, _ := readyRelease(t, "ghcr.io/acme/web@"+digestV1)
	h := newHook(t, ns, "replay-token")
	srv := newReceiver(t)
	first := webhookDelivery{repoURL: repo.URL(), path: h.path, token: h.token, delivery: "0f6b2b6e-1c1e-11f0-8000-000000000001"}

	commit(t, repo, "Release 2", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})
	code, reply, err := first.post(srv)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(code).To(Equal(http.StatusAccepted))
	g.Eventually(func(g Gomega) {
		g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV2))
	}, 10*time.Second, 20*time.Millisecond).Should(Succeed())

	const v3 = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
	commit(t, repo, "Release 3", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+v3)})
	againCode, againReply, err := first.post(srv)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(againCode).To(Equal(code))
	g.Expect(againReply).To(Equal(reply))
	g.Consistently(func(g Gomega) {
		g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV2))
	}, 2*time.Second, 100*time.Millisecond).Should(Succeed())

	next := first
	next.delivery = "0f6b2b6e-1c1e-11f0-8000-000000000002"
	code, _, err = next.post(srv)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(code).To(Equal(http.StatusAccepted))
	g.Eventually(func(g Gomega) {
		g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + v3))
	}, 10*time.Second, 20*time.Millisecond).Should(Succeed())
}

// TestReceiverStatus: a Receiver without its Secret is not Ready and serves nothing; the
// Secret appearing makes it Ready; deleting the Receiver stops its path.
func TestReceiverStatus(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	obj := &v1alpha1.Receiver{
		ObjectMeta: metav1.ObjectMeta{Name: "gitlab", Namespace: ns},
		Spec:       v1alpha1.ReceiverSpec{Type: v1alpha1.GitLabReceiver, SecretRef: meta.LocalObjectReference{Name: "later"}},
	}
	g.Expect(k8s.Create(ctx, obj)).To(Succeed())
	out := waitForReceiver(t, obj, metav1.ConditionFalse, v1alpha1.InvalidSecretReason)
	g.Expect(out.Status.WebhookPath).To(BeEmpty())
	g.Expect(apimeta.FindStatusCondition(out.Status.Conditions, meta.ReadyCondition).Message).To(ContainSubstring("later"))

	g.Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "later", Namespace: ns}, StringData: map[string]string{"token": "t0ken-value"}})).To(Succeed())
	out = waitForReceiver(t, obj, metav1.ConditionTrue, v1alpha1.ReceiverReadyReason)
	path := receiver.WebhookPath([]byte("t0ken-value"), "gitlab", ns)
	g.Expect(out.Status.WebhookPath).To(Equal(path))
	for _, c := range out.Status.Conditions {
		g.Expect(c.Message).NotTo(ContainSubstring("t0ken-value"))
	}

	g.Expect(k8s.Delete(ctx, obj)).To(Succeed())
	g.Eventually(func() bool { _, ok := receivers.Lookup(path); return ok }, 10*time.Second, 50*time.Millisecond).Should(BeFalse())
}

func getReceiver(g Gomega, obj *v1alpha1.Receiver) *v1alpha1.Receiver {
	out := &v1alpha1.Receiver{}
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(obj), out)).To(Succeed())
	return out
}

// BenchmarkWebhookToApplied times a push: from the webhook call to the Deployment naming
// the new digest (make bench).
func BenchmarkWebhookToApplied(b *testing.B) {
	t := &testing.T{}
	ns, repo, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1)
	h := newHook(b, ns, "bench-token")
	srv := newReceiver(b)
	var latencies []time.Duration
	for i := 0; i < b.N; i++ {
		image := fmt.Sprintf("ghcr.io/acme/web@sha256:%064x", i+100)
		commit(t, repo, fmt.Sprintf("Release %d", i), map[string]string{"app/deployment.yaml": deploymentYAML("web", image)})
		start := time.Now()
		if _, err := pushEvent(srv, h, repo, h.token); err != nil {
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
