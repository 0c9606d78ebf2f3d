// Package notify announces what happens to releases: each event is a Kubernetes event and,
// when the manager has an events address (--events-addr, Flux's flag), also Flux's event
// payload (fluxcd/pkg/apis/event) posted to it, so that a Flux notification-controller
// routes it with its own Alerts and Providers. The posting is Flux's own recorder
// (fluxcd/pkg/runtime/events), run off the reconcile: a receiver that is slow or down
// delays no release.
package notify

import (
	"context"
	"fmt"
	"sync/atomic"

	fluxevents "github.com/fluxcd/pkg/runtime/events"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// QueueSize bounds the events waiting to be posted; beyond it they are dropped (and
// counted), the Kubernetes event still recorded.
const QueueSize = 1024

// retries is how many times a post is retried (connection errors and 5xx answers), with
// Flux's backoff from 1s; each attempt is bounded by Flux's 5s client timeout.
const retries = 2

// Recorder records Kubernetes events and posts them to the events address.
type Recorder struct {
	kube   events.EventRecorder
	flux   fluxevents.Recorder
	scheme *runtime.Scheme
	log    logr.Logger
	queue  chan posting
	// Dropped counts the events not posted because the queue was full.
	Dropped atomic.Int64
}

var _ events.EventRecorder = &Recorder{}

// posting is one event waiting to be posted.
type posting struct {
	obj                          *metav1.PartialObjectMetadata
	metadata                     map[string]string
	eventType, reason, action, m string
}

// NewRecorder records Kubernetes events with kube and, when address is not empty, posts
// each event to it as reportingController. Start must run (it is a manager Runnable) for
// anything to be posted.
func NewRecorder(kube events.EventRecorder, scheme *runtime.Scheme, address, reportingController string, log logr.Logger) (*Recorder, error) {
	if log.GetSink() == nil {
		// Flux's recorder asks its logger's sink for the trace level.
		log = funcr.New(func(string, string) {}, funcr.Options{})
	}
	r := &Recorder{kube: kube, scheme: scheme, log: log}
	if address == "" {
		return r, nil
	}
	// Only the scheme: Flux's recorder posts, the Kubernetes event is kube's.
	flux, err := fluxevents.NewRecorder(log, address, reportingController, fluxevents.WithScheme(scheme), fluxevents.WithRetryMax(retries))
	if err != nil {
		return nil, fmt.Errorf("the events address %q: %w", address, err)
	}
	r.flux, r.queue = flux, make(chan posting, QueueSize)
	return r, nil
}

// Eventf records an event without metadata.
func (r *Recorder) Eventf(obj, related runtime.Object, eventType, reason, action, note string, args ...any) {
	r.AnnotatedEventf(obj, related, nil, eventType, reason, action, note, args...)
}

// AnnotatedEventf records a Kubernetes event, and queues the payload with metadata (Flux's
// keys, prefixed with the object's API group) for posting. It never waits.
func (r *Recorder) AnnotatedEventf(obj, related runtime.Object, metadata map[string]string, eventType, reason, action, note string, args ...any) {
	if r.kube != nil {
		r.kube.Eventf(obj, related, eventType, reason, action, note, args...)
	}
	if r.queue == nil {
		return
	}
	p, err := r.posting(obj)
	if err != nil {
		r.log.Error(err, "Could not post an event", "reason", reason)
		return
	}
	p.metadata, p.eventType, p.reason, p.action, p.m = metadata, eventType, reason, action, fmt.Sprintf(note, args...)
	select {
	case r.queue <- p:
	default:
		r.Dropped.Add(1)
		r.log.Info("Dropped an event: the events address does not keep up", "name", p.obj.Name, "namespace", p.obj.Namespace, "reason", reason)
	}
}

// posting keeps of obj what the payload names (its reference and annotations), not the
// object itself, which the reconcile goes on changing.
func (r *Recorder) posting(obj runtime.Object) (posting, error) {
	o, ok := obj.(client.Object)
	if !ok {
		return posting{}, fmt.Errorf("%T has no object metadata", obj)
	}
	gvk, err := apiutil.GVKForObject(o, r.scheme)
	if err != nil {
		return posting{}, err
	}
	p := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Name: o.GetName(), Namespace: o.GetNamespace(), UID: o.GetUID(), ResourceVersion: o.GetResourceVersion(),
		Annotations: o.GetAnnotations(),
	}}
	p.SetGroupVersionKind(gvk)
	return posting{obj: p}, nil
}

// NeedLeaderElection is false: only a leader reconciles, and so records events, but what
// it queued before losing the lease is still posted.
func (r *Recorder) NeedLeaderElection() bool { return false }

// Start posts the queued events in order, one at a time, until ctx ends.
func (r *Recorder) Start(ctx context.Context) error {
	if r.queue == nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case p := <-r.queue:
			r.flux.AnnotatedEventf(p.obj, nil, p.metadata, p.eventType, p.reason, p.action, "%s", p.m)
		}
	}
}
