package controllers

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	eventv1 "github.com/fluxcd/pkg/apis/event/v1"
	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/notify"
	"github.com/immutable-release/operator/internal/testgitea"
)

// fluxEvents receives, as a Flux notification-controller's event server would, every event
// the suite's manager posts (its --events-addr).
var fluxEvents *fluxReceiver

// fluxReceiver decodes each request into Flux's event type, refusing fields the type does
// not have, and keeps the events; a request that is not Flux's schema fails the test that
// looks.
type fluxReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	events []eventv1.Event
	errs   []string
	// forward, when set, is where each payload is posted on, as received: a real
	// notification-controller's event server (TestRealNotificationController).
	forward string
}

// forwardTo has every payload from now on posted on to address too.
func (f *fluxReceiver) forwardTo(address string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forward = address
}

func newFluxReceiver() *fluxReceiver {
	f := &fluxReceiver{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		var e eventv1.Event
		err := dec.Decode(&e)
		f.mu.Lock()
		defer f.mu.Unlock()
		switch {
		case r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json":
			f.errs = append(f.errs, r.Method+" "+r.Header.Get("Content-Type"))
		case err != nil:
			f.errs = append(f.errs, err.Error()+": "+string(body))
		default:
			f.events = append(f.events, e)
		}
		if f.forward != "" {
			c := &http.Client{Timeout: 5 * time.Second}
			resp, err := c.Post(f.forward, "application/json", bytes.NewReader(body))
			if err == nil {
				resp.Body.Close()
			}
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	return f
}

// of returns the events about releases of namespace, in the order they were posted.
func (f *fluxReceiver) of(g Gomega, namespace string) []eventv1.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	g.Expect(f.errs).To(BeEmpty(), "requests that are not Flux's event payload")
	var out []eventv1.Event
	for _, e := range f.events {
		if e.InvolvedObject.Namespace == namespace {
			out = append(out, e)
		}
	}
	return out
}

// routed is the event as a notification-controller hands it to its providers: only the
// metadata under the involved object's API group, the prefix stripped (its cleanupMetadata
// and combineEventMetadata).
func routed(e eventv1.Event) eventv1.Event {
	prefix := e.InvolvedObject.GroupVersionKind().Group + "/"
	out := e
	out.Metadata = map[string]string{}
	for k, v := range e.Metadata {
		if key, ok := strings.CutPrefix(k, prefix); ok {
			out.Metadata[key] = v
		}
	}
	return out
}

// TestFluxEventPayloads: with an events address, an applied revision, its health, and a
// failed rollout with its revert reach the receiver as Flux's payload, each naming the
// revision it concerns where a notification-controller reads it.
func TestFluxEventPayloads(t *testing.T) {
	g := NewWithT(t)
	ns, repo, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1, func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Second}
	})
	cur := get(g, obj)
	first := cur.Status.LastAppliedRevision
	hostname, err := os.Hostname()
	g.Expect(err).NotTo(HaveOccurred())

	find := func(g Gomega, reason, revision string) eventv1.Event {
		for _, e := range fluxEvents.of(g, ns) {
			if e.Reason == reason && routed(e).Metadata[eventv1.MetaRevisionKey] == revision {
				return e
			}
		}
		g.Expect(fluxEvents.of(g, ns)).To(ContainElement(HaveField("Reason", reason)), "no %s event for %s", reason, revision)
		g.Expect(false).To(BeTrue(), "the %s event does not name revision %s", reason, revision)
		return eventv1.Event{}
	}

	var applied, healthy eventv1.Event
	g.Eventually(func(g Gomega) {
		applied = find(g, "Applied", first)
		healthy = find(g, v1alpha1.HealthySucceededReason, first)
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Expect(applied.InvolvedObject).To(Equal(corev1.ObjectReference{Kind: "ImmutableRelease", APIVersion: v1alpha1.GroupVersion.String(),
		Namespace: ns, Name: "shop", UID: cur.UID, ResourceVersion: applied.InvolvedObject.ResourceVersion}))
	g.Expect(applied.InvolvedObject.ResourceVersion).NotTo(BeEmpty())
	g.Expect(applied.Severity).To(Equal(eventv1.EventSeverityInfo))
	g.Expect(applied.Action).To(Equal("Apply"))
	g.Expect(applied.Message).To(Equal("Applied revision " + first + ": 3 created"))
	g.Expect(applied.ReportingController).To(Equal("immutable-release-controller"))
	g.Expect(applied.ReportingInstance).To(Equal(hostname))
	g.Expect(applied.Timestamp.IsZero()).To(BeFalse())
	g.Expect(applied.RelatedObject).To(BeNil())
	g.Expect(applied.Metadata).To(Equal(map[string]string{
		"release.immutable.dev/revision":      first,
		"release.immutable.dev/commitSubject": "Initial release",
		"release.immutable.dev/commitAuthor":  cur.Status.History[0].Author,
	}))
	// What a notification-controller's commit status providers read: the revision, and
	// for this info event no commit status update; the healthy one is.
	r := routed(applied)
	rev, ok := r.GetRevision()
	g.Expect(ok).To(BeTrue())
	g.Expect(rev).To(Equal(first))
	g.Expect(r.HasMetadata(eventv1.MetaCommitStatusKey, eventv1.MetaCommitStatusUpdateValue)).To(BeFalse())
	g.Expect(healthy.Severity).To(Equal(eventv1.EventSeverityInfo))
	g.Expect(healthy.Action).To(Equal("HealthCheck"))
	g.Expect(healthy.Message).To(Equal("Revision " + first + " is healthy"))
	rh := routed(healthy)
	g.Expect(rh.HasMetadata(eventv1.MetaCommitStatusKey, eventv1.MetaCommitStatusUpdateValue)).To(BeTrue())

	// A failed rollout: its verdict and its revert, errors naming the failed revision.
	badHash := commit(t, repo, "Release a broken build", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+deadDigest)})
	bad := "main@sha1:" + badHash
	reconcileNow(t, obj)
	cur = waitFor(t, obj, v1alpha1.RolledBackCondition, metav1.ConditionTrue, v1alpha1.RevertPushedReason, time.Minute)
	revert := cur.Status.LastRollback.RevertCommit
	var failed, rolledBack eventv1.Event
	g.Eventually(func(g Gomega) {
		find(g, "Applied", bad)
		failed = find(g, v1alpha1.HealthCheckFailedReason, bad)
		rolledBack = find(g, "RolledBack", bad)
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Expect(failed.Severity).To(Equal(eventv1.EventSeverityError))
	g.Expect(failed.Message).To(ContainSubstring("revision " + bad + " did not become healthy within 5s"))
	g.Expect(failed.Metadata).To(HaveKeyWithValue("release.immutable.dev/commitSubject", "Release a broken build"))
	g.Expect(rolledBack.Severity).To(Equal(eventv1.EventSeverityError))
	g.Expect(rolledBack.Action).To(Equal("Rollback"))
	g.Expect(rolledBack.Message).To(HavePrefix("Pushed revert commit " + revert + " to main"))
	g.Expect(rolledBack.Metadata).To(HaveKeyWithValue("release.immutable.dev/"+notify.RevertCommitKey, revert))
	rr := routed(rolledBack)
	rev, _ = rr.GetRevision()
	g.Expect(rev).To(Equal(bad))

	// The revert is applied, and its own revision announced.
	cur = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Eventually(func(g Gomega) {
		find(g, v1alpha1.HealthySucceededReason, cur.Status.LastAppliedRevision)
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Expect(cur.Status.LastAppliedRevision).To(Equal("main@sha1:" + revert))
}

// commitStatus is one of Gitea's commit statuses.
type commitStatus struct {
	State       string `json:"status"`
	Context     string `json:"context"`
	Description string `json:"description"`
	TargetURL   string `json:"target_url"`
}

func commitStatuses(g Gomega, gt *testgitea.Server, repo, sha string) []commitStatus {
	var out []commitStatus
	g.Expect(gt.API(ctx, http.MethodGet, "/repos/"+repo+"/commits/"+sha+"/statuses?sort=oldest", nil, &out)).To(Succeed())
	return out
}

func states(statuses []commitStatus) []string {
	var out []string
	for _, s := range statuses {
		out = append(out, s.State)
	}
	return out
}

// TestCommitStatusesOnGitea: with spec.commitStatus, a good revision gets pending then
// success on Gitea, a failed one pending then failure linking its revert commit, and the
// revert pending then success; reconciling again posts nothing more.
func TestCommitStatusesOnGitea(t *testing.T) {
	g := NewWithT(t)
	gt := startGitea(t)
	ns := newNamespace(t)
	repo, fullName := giteaRepo(t, gt, ns, gt.Token, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	obj := newRelease(t, ns, repo, "app", func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Second}
		o.Spec.CommitStatus = &v1alpha1.CommitStatusSpec{Provider: v1alpha1.GitProviderGitea, SecretRef: meta.LocalObjectReference{Name: "pr-token"}}
	})
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	first, err := repo.Head()
	g.Expect(err).NotTo(HaveOccurred())
	name := "immutable-release/" + ns + "/shop"
	g.Eventually(func(g Gomega) {
		got := commitStatuses(g, gt, fullName, first)
		g.Expect(states(got)).To(Equal([]string{"pending", "success"}))
		g.Expect(got).To(HaveEach(HaveField("Context", name)))
		g.Expect(got[0].Description).To(Equal("Rolling out"))
		g.Expect(got[1].TargetURL).To(BeEmpty())
	}, 20*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(get(g, obj).Status.History[0].CommitStatus).To(Equal(v1alpha1.CommitStateSuccess))

	bad := commit(t, repo, "Release a broken build", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+deadDigest)})
	reconcileNow(t, obj)
	cur := waitFor(t, obj, v1alpha1.RolledBackCondition, metav1.ConditionTrue, v1alpha1.RevertPushedReason, time.Minute)
	revert := cur.Status.LastRollback.RevertCommit
	g.Eventually(func(g Gomega) {
		got := commitStatuses(g, gt, fullName, bad)
		g.Expect(states(got)).To(Equal([]string{"pending", "failure"}))
		g.Expect(got[1].Description).To(HavePrefix("revision main@sha1:" + bad + " did not become healthy within 5s"))
		g.Expect(got[1].TargetURL).To(Equal(gt.URL + "/" + fullName + "/commit/" + revert))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(states(commitStatuses(g, gt, fullName, revert))).To(Equal([]string{"pending", "success"}))
	}, time.Minute, 200*time.Millisecond).Should(Succeed())

	// Each state once: reconciling again posts nothing.
	reconcileNow(t, obj)
	g.Consistently(func(g Gomega) {
		g.Expect(commitStatuses(g, gt, fullName, first)).To(HaveLen(2))
		g.Expect(commitStatuses(g, gt, fullName, bad)).To(HaveLen(2))
		g.Expect(commitStatuses(g, gt, fullName, revert)).To(HaveLen(2))
	}, 3*time.Second, 500*time.Millisecond).Should(Succeed())
}

// TestCommitStatusNeverHoldsTheReleaseBack: without the token's Secret, and with a forge
// that never answers, the release is applied and Ready all the same and nothing is
// recorded as posted; once the forge answers, a reconcile request posts what is due.
func TestCommitStatusNeverHoldsTheReleaseBack(t *testing.T) {
	g := NewWithT(t)
	gt := startGitea(t)
	ns := newNamespace(t)
	repo, fullName := giteaRepo(t, gt, ns, "", sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	// It reads the request, so that it sees the client hang up, and never answers.
	var asked atomic.Int32
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	defer hanging.Close()
	obj := newRelease(t, ns, repo, "app", func(o *v1alpha1.ImmutableRelease) {
		o.Spec.CommitStatus = &v1alpha1.CommitStatusSpec{Provider: v1alpha1.GitProviderGitea, SecretRef: meta.LocalObjectReference{Name: "pr-token"}}
	})
	cur := waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(cur.Status.History[0].CommitStatus).To(BeEmpty())
	head, err := repo.Head()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(commitStatuses(g, gt, fullName, head)).To(BeEmpty())

	// The token is there, but the API does not answer: the reconcile request is handled
	// within the post's deadline, and the release stays Ready.
	g.Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pr-token", Namespace: ns},
		StringData: map[string]string{"token": gt.Token}})).To(Succeed())
	patchSpec(t, obj, func(o *v1alpha1.ImmutableRelease) { o.Spec.CommitStatus.APIURL = hanging.URL + "/api/v1" })
	start := time.Now()
	g.Eventually(func(g Gomega) {
		cur := get(NewWithT(t), obj)
		g.Expect(cur.Status.ObservedGeneration).To(Equal(cur.Generation))
		g.Expect(condition(cur, meta.ReadyCondition).Status).To(Equal(metav1.ConditionTrue))
		g.Expect(cur.Status.History[0].CommitStatus).To(BeEmpty())
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Expect(time.Since(start)).To(BeNumerically("<", 20*time.Second))
	g.Expect(asked.Load()).To(BeNumerically(">", 0), "the status was never tried")

	// The forge answers again: asked, the release posts the state due, success.
	patchSpec(t, obj, func(o *v1alpha1.ImmutableRelease) { o.Spec.CommitStatus.APIURL = "" })
	g.Eventually(func(g Gomega) {
		g.Expect(states(commitStatuses(g, gt, fullName, head))).To(Equal([]string{"success"}))
		g.Expect(get(NewWithT(t), obj).Status.History[0].CommitStatus).To(Equal(v1alpha1.CommitStateSuccess))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
}

// patchSpec changes the release's spec.
func patchSpec(t *testing.T, obj *v1alpha1.ImmutableRelease, mutate func(*v1alpha1.ImmutableRelease)) {
	t.Helper()
	NewWithT(t).Eventually(func() error {
		cur := &v1alpha1.ImmutableRelease{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
			return err
		}
		base := cur.DeepCopy()
		mutate(cur)
		return k8s.Patch(ctx, cur, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
}
