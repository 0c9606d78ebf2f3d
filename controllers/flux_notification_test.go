package controllers

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	eventv1 "github.com/fluxcd/pkg/apis/event/v1"
	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/immutable-release/operator/api/v1alpha1"
)

// notificationControllerEnv names a checkout of github.com/fluxcd/notification-controller
// built in place (go build -o notification-controller .): its binary and its CRDs.
const notificationControllerEnv = "NOTIFICATION_CONTROLLER_DIR"

// TestRealNotificationController: a real Flux notification-controller takes the payloads
// the manager posts, matches them to an Alert on kind ImmutableRelease (its Alert CRD
// patched for a third-party kind, as Flux documents), and hands them to its providers: a
// generic webhook gets each with the revision under Flux's key, and its Gitea provider
// sets commit statuses from them on the real Gitea.
func TestRealNotificationController(t *testing.T) {
	dir := os.Getenv(notificationControllerEnv)
	if dir == "" {
		t.Skipf("%s is not set: build github.com/fluxcd/notification-controller (go build -o notification-controller .) and name its directory", notificationControllerEnv)
	}
	g := NewWithT(t)
	installNotificationCRDs(t, dir)
	eventsAddr := startNotificationController(t, dir)
	fluxEvents.forwardTo("http://" + eventsAddr + "/")
	t.Cleanup(func() { fluxEvents.forwardTo("") })

	// The generic provider's webhook.
	var mu sync.Mutex
	var routed []eventv1.Event
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e eventv1.Event
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
			t.Errorf("the generic provider posted what is not an event: %v", err)
		}
		mu.Lock()
		routed = append(routed, e)
		mu.Unlock()
	}))
	defer sink.Close()

	gt := startGitea(t)
	ns := newNamespace(t)
	repo, fullName := giteaRepo(t, gt, ns, gt.Token, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	for _, o := range []string{
		`{"apiVersion":"notification.toolkit.fluxcd.io/v1beta3","kind":"Provider","metadata":{"name":"webhook"},"spec":{"type":"generic","address":"` + sink.URL + `"}}`,
		`{"apiVersion":"notification.toolkit.fluxcd.io/v1beta3","kind":"Provider","metadata":{"name":"gitea"},"spec":{"type":"gitea","address":"` + gt.URL + "/" + fullName + `","secretRef":{"name":"pr-token"}}}`,
		`{"apiVersion":"notification.toolkit.fluxcd.io/v1beta3","kind":"Alert","metadata":{"name":"releases"},"spec":{"providerRef":{"name":"webhook"},"eventSeverity":"info","eventSources":[{"kind":"ImmutableRelease","name":"*"}]}}`,
		`{"apiVersion":"notification.toolkit.fluxcd.io/v1beta3","kind":"Alert","metadata":{"name":"commit-status"},"spec":{"providerRef":{"name":"gitea"},"eventSeverity":"info","eventSources":[{"kind":"ImmutableRelease","name":"*"}]}}`,
	} {
		u := &unstructured.Unstructured{}
		g.Expect(u.UnmarshalJSON([]byte(o))).To(Succeed())
		u.SetNamespace(ns)
		g.Eventually(func() error { return k8s.Create(ctx, u) }, 20*time.Second, 200*time.Millisecond).Should(Succeed())
	}

	obj := newRelease(t, ns, repo, "app", func(o *v1alpha1.ImmutableRelease) { o.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Second} })
	cur := waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	first := cur.Status.LastAppliedRevision
	g.Eventually(func(g Gomega) {
		mu.Lock()
		defer mu.Unlock()
		g.Expect(routed).To(ContainElement(And(
			HaveField("Reason", "Applied"),
			HaveField("InvolvedObject.Kind", "ImmutableRelease"),
			HaveField("InvolvedObject.Name", "shop"),
			HaveField("Severity", eventv1.EventSeverityInfo),
			HaveField("Message", "Applied revision "+first+": 3 created"),
			HaveField("ReportingController", "immutable-release-controller"),
			// The notification-controller strips the release's group from the keys.
			HaveField("Metadata", And(HaveKeyWithValue(eventv1.MetaRevisionKey, first), HaveKeyWithValue("commitSubject", "Initial release"))),
		)))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())

	// Flux's own Gitea provider set a commit status from the healthy event's revision.
	hash := first[len("main@sha1:"):]
	g.Eventually(func(g Gomega) {
		g.Expect(states(commitStatuses(g, gt, fullName, hash))).To(ContainElement("success"))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())

	// A failed rollout: an error event, which Flux's provider posts as a failure.
	bad := commit(t, repo, "Release a broken build", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+deadDigest)})
	reconcileNow(t, obj)
	waitFor(t, obj, v1alpha1.RolledBackCondition, metav1.ConditionTrue, v1alpha1.RevertPushedReason, time.Minute)
	g.Eventually(func(g Gomega) {
		mu.Lock()
		defer mu.Unlock()
		g.Expect(routed).To(ContainElement(And(
			HaveField("Reason", v1alpha1.HealthCheckFailedReason),
			HaveField("Severity", eventv1.EventSeverityError),
			HaveField("Metadata", HaveKeyWithValue(eventv1.MetaRevisionKey, "main@sha1:"+bad)),
		)))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(states(commitStatuses(g, gt, fullName, bad))).To(ContainElement("failure"))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
}

// installNotificationCRDs installs the Alert, Provider and Receiver CRDs of the checkout, the Alert's
// eventSources kinds extended with ImmutableRelease as Flux's guide for third-party
// controllers does.
func installNotificationCRDs(t *testing.T, dir string) {
	g := NewWithT(t)
	for _, name := range []string{"alerts", "providers", "receivers"} {
		data, err := os.ReadFile(filepath.Join(dir, "config", "crd", "bases", "notification.toolkit.fluxcd.io_"+name+".yaml"))
		g.Expect(err).NotTo(HaveOccurred())
		u := &unstructured.Unstructured{}
		g.Expect(yaml.Unmarshal(data, &u.Object)).To(Succeed())
		versions, _, _ := unstructured.NestedSlice(u.Object, "spec", "versions")
		for _, v := range versions {
			path := []string{"schema", "openAPIV3Schema", "properties", "spec", "properties", "eventSources", "items", "properties", "kind", "enum"}
			if kinds, ok, _ := unstructured.NestedSlice(v.(map[string]any), path...); ok {
				g.Expect(unstructured.SetNestedSlice(v.(map[string]any), append(kinds, "ImmutableRelease"), path...)).To(Succeed())
			}
		}
		g.Expect(unstructured.SetNestedSlice(u.Object, versions, "spec", "versions")).To(Succeed())
		g.Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, u))).To(Succeed())
	}
}

// startNotificationController runs the checkout's binary against the suite's API server
// and returns the address of its event server once it listens.
func startNotificationController(t *testing.T, dir string) string {
	g := NewWithT(t)
	var addrs []string
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		g.Expect(err).NotTo(HaveOccurred())
		addrs = append(addrs, l.Addr().String())
		l.Close()
	}
	cmd := exec.Command(filepath.Join(dir, "notification-controller"), "--events-addr="+addrs[0],
		"--receiverAddr="+addrs[1], "--health-addr="+addrs[2], "--metrics-addr=0", "--log-level=debug")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfigPath, "RUNTIME_NAMESPACE=default")
	logs, err := os.Create(filepath.Join(t.TempDir(), "notification-controller.log"))
	g.Expect(err).NotTo(HaveOccurred())
	cmd.Stdout, cmd.Stderr = logs, logs
	g.Expect(cmd.Start()).To(Succeed())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			data, _ := os.ReadFile(logs.Name())
			lines := strings.Split(string(data), "\n")
			t.Logf("notification-controller:\n%s", strings.Join(lines[max(0, len(lines)-80):], "\n"))
		}
	})
	g.Eventually(func() error {
		c, err := net.DialTimeout("tcp", addrs[0], time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}, time.Minute, 200*time.Millisecond).Should(Succeed(), "the notification-controller's event server never listened")
	return addrs[0]
}
