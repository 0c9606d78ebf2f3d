package receiver

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// PathPrefix starts every receiver's path.
const PathPrefix = "/hook/"

// WebhookPath is the path a Receiver serves: PathPrefix and the hex SHA-256 of its token,
// name and namespace, as Flux's notification-controller derives it. Without the token it
// cannot be guessed, and a new token gives a new path.
func WebhookPath(token []byte, name, namespace string) string {
	sum := sha256.Sum256([]byte(string(token) + name + namespace))
	return PathPrefix + hex.EncodeToString(sum[:])
}

// Target is what a verified push may reconcile: releases of one namespace, optionally
// narrowed to some names and a label selector.
type Target struct {
	// Namespace is the Receiver's namespace; no release of another namespace is reconciled.
	Namespace string
	// Names, when not empty, are the only releases that may be reconciled.
	Names []string
	// Selector, when not nil, must match a release's labels.
	Selector labels.Selector
}

// Endpoint is what one receiver path serves.
type Endpoint struct {
	// Receiver is the Receiver that serves the path.
	Receiver types.NamespacedName
	// Type is the Receiver's spec.type, which decides the signature checked.
	Type string
	// Token is the shared secret. It is never logged.
	Token []byte
	// Target is what a verified push reconciles.
	Target Target
}

// ErrPathTaken is returned when another Receiver already serves a path.
var ErrPathTaken = errors.New("another Receiver serves this webhook path")

// Registry is the receiver's memory of every Receiver's path and token: written by the
// Receiver reconciler only (Set after reading the Secret, Forget when the Receiver goes or
// fails), read by the handler for every request. It is the only copy of tokens in the
// process, so the handler never reads a Secret; losing it (a restart) costs one reconcile of
// each Receiver.
type Registry struct {
	mu     sync.RWMutex
	byPath map[string]Endpoint
	paths  map[types.NamespacedName]string
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byPath: map[string]Endpoint{}, paths: map[types.NamespacedName]string{}}
}

// Set makes path serve e, replacing the path e.Receiver served before. It returns
// ErrPathTaken, and changes nothing, when another Receiver serves path.
func (r *Registry) Set(path string, e Endpoint) error {
	return r.set(path, e, true)
}

// Add is Set for a Receiver not registered yet: it leaves a registration alone, which a
// reconcile made with a Secret read later than the caller's.
func (r *Registry) Add(path string, e Endpoint) error {
	return r.set(path, e, false)
}

func (r *Registry) set(path string, e Endpoint, replace bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.paths[e.Receiver]; ok && !replace {
		return nil
	}
	if cur, ok := r.byPath[path]; ok && cur.Receiver != e.Receiver {
		return ErrPathTaken
	}
	if old, ok := r.paths[e.Receiver]; ok && old != path {
		delete(r.byPath, old)
	}
	r.byPath[path] = e
	r.paths[e.Receiver] = path
	return nil
}

// Forget stops serving the Receiver's path.
func (r *Registry) Forget(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if path, ok := r.paths[key]; ok {
		delete(r.byPath, path)
		delete(r.paths, key)
	}
}

// Lookup returns the endpoint path serves.
func (r *Registry) Lookup(path string) (Endpoint, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.byPath[path]
	return e, ok
}

// Len is how many paths are served.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byPath)
}
