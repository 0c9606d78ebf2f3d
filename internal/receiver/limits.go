package receiver

import (
	"container/list"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// MaxTracked bounds how many sources, receivers and delivery IDs the receiver remembers.
// Beyond it the oldest are forgotten: a forgotten source starts with a full bucket again, a
// forgotten delivery ID is no longer recognised as a replay.
const MaxTracked = 10000

// Limiter holds a token bucket per key (a client address, a receiver path) in a bounded
// map, the least recently used forgotten first.
type Limiter struct {
	limit rate.Limit
	burst int

	mu    sync.Mutex
	keys  map[string]*list.Element
	order *list.List // of *bucket, most recently used at the front
}

type bucket struct {
	key     string
	limiter *rate.Limiter
}

// NewLimiter allows each key perSecond requests sustained and burst at once. perSecond <= 0
// allows everything.
func NewLimiter(perSecond float64, burst int) *Limiter {
	if perSecond <= 0 {
		return &Limiter{limit: rate.Inf}
	}
	return &Limiter{limit: rate.Limit(perSecond), burst: max(burst, 1), keys: map[string]*list.Element{}, order: list.New()}
}

// Allow takes a token from key's bucket, and says whether there was one.
func (l *Limiter) Allow(key string) bool {
	if l == nil || l.limit == rate.Inf {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.keys[key]; ok {
		l.order.MoveToFront(el)
		return el.Value.(*bucket).limiter.Allow()
	}
	if l.order.Len() >= MaxTracked {
		oldest := l.order.Back()
		l.order.Remove(oldest)
		delete(l.keys, oldest.Value.(*bucket).key)
	}
	b := &bucket{key: key, limiter: rate.NewLimiter(l.limit, l.burst)}
	l.keys[key] = l.order.PushFront(b)
	return b.limiter.Allow()
}

// source is the address a request came from: the peer's IP, without its port. Headers such
// as X-Forwarded-For are not trusted: any caller can write them.
func source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// DeliveryWindow is how long a delivery ID is remembered.
const DeliveryWindow = 10 * time.Minute

// Deliveries remembers the delivery IDs seen in the last DeliveryWindow, at most
// MaxTracked of them, so that a delivery sent again (a host retrying, a replay) is
// acknowledged without reconciling anything twice.
type Deliveries struct {
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	seen  map[string]*list.Element
	order *list.List // of *delivery, oldest at the front
}

type delivery struct {
	id string
	at time.Time
}

// NewDeliveries remembers delivery IDs for window.
func NewDeliveries(window time.Duration) *Deliveries {
	return &Deliveries{window: window, now: time.Now, seen: map[string]*list.Element{}, order: list.New()}
}

// Claim records id and says whether it is new; false means it was seen within the window.
func (d *Deliveries) Claim(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	for front := d.order.Front(); front != nil; front = d.order.Front() {
		del := front.Value.(*delivery)
		if now.Sub(del.at) < d.window && d.order.Len() < MaxTracked {
			break
		}
		d.order.Remove(front)
		delete(d.seen, del.id)
	}
	if _, ok := d.seen[id]; ok {
		return false
	}
	d.seen[id] = d.order.PushBack(&delivery{id: id, at: now})
	return true
}

// Release forgets id, so that the host's retry of a delivery that failed is acted on.
func (d *Deliveries) Release(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if el, ok := d.seen[id]; ok {
		d.order.Remove(el)
		delete(d.seen, id)
	}
}

// deliveryHeaders name a delivery's ID, per host: GitHub, Gitea (and Forgejo), Gogs, GitLab
// (older and newer), and the generic Idempotency-Key.
var deliveryHeaders = []string{"X-GitHub-Delivery", "X-Gitea-Delivery", "X-Gogs-Delivery", "X-Gitlab-Event-UUID", "Idempotency-Key"}

// maxDeliveryID bounds the ID kept; real ones are UUIDs.
const maxDeliveryID = 128

// deliveryID is the request's delivery ID, or "" when it has none.
func deliveryID(h http.Header) string {
	for _, name := range deliveryHeaders {
		if id := h.Get(name); id != "" {
			if len(id) > maxDeliveryID {
				id = id[:maxDeliveryID]
			}
			return id
		}
	}
	return ""
}
