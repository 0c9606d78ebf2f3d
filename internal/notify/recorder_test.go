package notify

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	eventv1 "github.com/fluxcd/pkg/apis/event/v1"
	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"

	"github.com/immutable-release/operator/api/v1alpha1"
)

func testScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func testRelease() *v1alpha1.ImmutableRelease {
	return &v1alpha1.ImmutableRelease{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "team-a", UID: "0a1b", ResourceVersion: "7",
		Annotations: map[string]string{eventv1.Group + "/token": "t1", "other": "kept out"}}}
}

// TestRecorderNeverWaits: a receiver that does not answer holds back no caller; the
// Kubernetes event is recorded at once, the payloads are posted in order once the receiver
// answers, and beyond the queue they are dropped and counted.
func TestRecorderNeverWaits(t *testing.T) {
	g := NewWithT(t)
	release := make(chan struct{})
	var mu sync.Mutex
	var got []eventv1.Event
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		var e eventv1.Event
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
			t.Error(err)
		}
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	const n = QueueSize + 10
	kube := events.NewFakeRecorder(n)
	r, err := NewRecorder(kube, testScheme(t), srv.URL, "immutable-release-controller", logr.Discard())
	g.Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Start(ctx)

	obj := testRelease()
	start := time.Now()
	for i := range n {
		r.AnnotatedEventf(obj, nil, map[string]string{"release.immutable.dev/revision": "main@sha1:abc"}, "Warning", "HealthCheckFailed", "Reconcile", "event %d", i)
		if i == 0 {
			// The worker takes the first and waits on the receiver with it.
			g.Eventually(func() int { return len(r.queue) }).Should(BeZero())
		}
	}
	g.Expect(time.Since(start)).To(BeNumerically("<", time.Second), "a caller waited for the receiver")
	g.Expect(kube.Events).To(HaveLen(n))
	g.Expect(r.Dropped.Load()).To(Equal(int64(n - QueueSize - 1)))
	close(release)

	g.Eventually(func() int { mu.Lock(); defer mu.Unlock(); return len(got) }, 10*time.Second).Should(Equal(QueueSize + 1))
	mu.Lock()
	defer mu.Unlock()
	g.Expect(got[0].Message).To(Equal("event 0"))
	g.Expect(got[QueueSize].Message).To(Equal("event 1024"))
	e := got[0]
	g.Expect(e.InvolvedObject.Kind).To(Equal("ImmutableRelease"))
	g.Expect(e.InvolvedObject.APIVersion).To(Equal("release.immutable.dev/v1alpha1"))
	g.Expect(string(e.InvolvedObject.UID)).To(Equal("0a1b"))
	g.Expect(e.Severity).To(Equal(eventv1.EventSeverityError))
	g.Expect(e.Reason).To(Equal("HealthCheckFailed"))
	g.Expect(e.Action).To(Equal("Reconcile"))
	g.Expect(e.ReportingController).To(Equal("immutable-release-controller"))
	// Flux's recorder adds the object's own event.toolkit.fluxcd.io annotations, nothing else.
	g.Expect(e.Metadata).To(Equal(map[string]string{"release.immutable.dev/revision": "main@sha1:abc", eventv1.Group + "/token": "t1"}))
}

// TestRecorderRetriesBounded: a receiver that fails is tried again a bounded number of
// times, then the event is given up.
func TestRecorderRetriesBounded(t *testing.T) {
	g := NewWithT(t)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	r, err := NewRecorder(nil, testScheme(t), srv.URL, "immutable-release-controller", logr.Discard())
	g.Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Start(ctx)
	r.Eventf(testRelease(), nil, "Normal", "Applied", "Apply", "Applied revision %s", "main@sha1:abc")
	g.Eventually(calls.Load, 10*time.Second).Should(Equal(int32(1 + retries)))
	g.Consistently(calls.Load, 3*time.Second).Should(Equal(int32(1 + retries)))
}

// TestRecorderWithoutAddress records Kubernetes events only.
func TestRecorderWithoutAddress(t *testing.T) {
	g := NewWithT(t)
	kube := events.NewFakeRecorder(1)
	r, err := NewRecorder(kube, testScheme(t), "", "immutable-release-controller", logr.Discard())
	g.Expect(err).NotTo(HaveOccurred())
	r.Eventf(testRelease(), nil, "Normal", "Applied", "Apply", "Applied revision %s", "main@sha1:abc")
	g.Expect(<-kube.Events).To(Equal("Normal Applied Applied revision main@sha1:abc"))
	g.Expect(r.Start(context.Background())).To(Succeed())
}
