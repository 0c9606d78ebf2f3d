package controllers

import (
	"slices"
	"sync"
	"time"

	"github.com/fluxcd/pkg/apis/kustomize"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/health"
)

// memory is what this process remembers of one release between reconciles, to save
// requests: when it last looked at Git and what it found there (git.Source, lastCheck), the
// live objects it last found equal to Git (snapshot), its own last write to the release
// (outdated), drift corrections not yet in a written status, and a Git operation left
// running in the background. Nothing in it decides correctness: what was applied, at which
// generation, and the revert that conflicted are in the release's status, and the live
// objects and Git are read again whenever the memory is missing. Losing it costs time only.
//
// A memory has one owner, memories, and one lifecycle: it is created by the reconcile that
// first finds its release, and forgotten on every path by which the release leaves this
// manager: deleted, its finalizer removed, or no longer in the cache (deleted without the
// finalizer, or relabelled out of this shard).
type memory struct {
	mu sync.Mutex
	// source decides when Git is looked at again.
	source git.Source
	// check is what the last look at Git gave.
	check lastCheck
	// snapshot is the live objects last found equal to Git, nil when none.
	snapshot *snapshot
	// outdated is the resourceVersion of the release this process last wrote over.
	outdated overwritten
	// corrections are drift corrections not yet in a written status.
	corrections int64
	// fetch is a Git operation left running in the background (immutablerelease_source.go).
	fetch *fetch
	// identity is the user the release's client acts as ("" for the operator itself): the
	// clients nobody's memory names are dropped.
	identity string
	// exprs is spec.healthCheckExprs as last compiled.
	exprs compiledExprs
	// commitStatusRetry is when commit statuses are posted again after a post failed.
	commitStatusRetry time.Time
	// clusterRef names the cluster the release's objects live in (clusterOf): a remote one
	// is closed when no memory names it.
	clusterRef clusterRef
	// attestRetry is when deployment records are written again after a write failed.
	attestRetry time.Time
}

// compiledExprs is spec.healthCheckExprs and what compiling them gave.
type compiledExprs struct {
	specs []kustomize.CustomHealthCheck
	exprs *health.Exprs
	err   error
}

// lastCheck is what the last look at Git gave: the prepared objects, or the failure.
type lastCheck struct {
	// url and authID name the Git store the check read (authID empty when it read none):
	// the stores no release names are evicted (sweepStores).
	url, authID string
	// revision, commit and objects are what the check fetched and prepared; err is its
	// failure, if any.
	revision string
	commit   git.Commit
	objects  []*unstructured.Unstructured
	err      error
}

// overwritten is a resourceVersion of a release that this process wrote over, and when.
type overwritten struct {
	resourceVersion string
	at              time.Time
}

// memories holds the memory of every release this manager reconciles.
type memories struct {
	mu sync.Mutex
	m  map[types.NamespacedName]*memory
}

// of returns the release's memory, created empty the first time: the one place a memory is
// made. Only a reconcile that found the release calls it.
func (ms *memories) of(key types.NamespacedName) *memory {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.m == nil {
		ms.m = map[types.NamespacedName]*memory{}
	}
	m, ok := ms.m[key]
	if !ok {
		m = &memory{}
		ms.m[key] = m
	}
	return m
}

// peek returns the release's memory, or nil when there is none (every method of *memory
// takes nil as the empty memory): for event handlers and webhooks, which must not create
// one for a release that this manager may never reconcile.
func (ms *memories) peek(key types.NamespacedName) *memory {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.m[key]
}

// forget drops the release's memory: the one place a memory ends. A Git operation still
// running for it is let go once it is done.
func (ms *memories) forget(key types.NamespacedName) {
	ms.mu.Lock()
	m, ok := ms.m[key]
	delete(ms.m, key)
	ms.mu.Unlock()
	if !ok {
		return
	}
	m.mu.Lock()
	f := m.fetch
	m.fetch = nil
	m.mu.Unlock()
	if f != nil {
		go f.drop()
	}
}

// len is how many releases are remembered.
func (ms *memories) len() int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return len(ms.m)
}

// each calls f with every memory; f must not call back into ms.
func (ms *memories) each(f func(*memory)) {
	ms.mu.Lock()
	all := make([]*memory, 0, len(ms.m))
	for _, m := range ms.m {
		all = append(all, m)
	}
	ms.mu.Unlock()
	for _, m := range all {
		f(m)
	}
}

// eachKey calls f with every release's name and memory; f must not call back into ms.
func (ms *memories) eachKey(f func(types.NamespacedName, *memory)) {
	ms.mu.Lock()
	all := make(map[types.NamespacedName]*memory, len(ms.m))
	for k, m := range ms.m {
		all[k] = m
	}
	ms.mu.Unlock()
	for k, m := range all {
		f(k, m)
	}
}

// gitSource returns a copy of the release's git.Source.
func (m *memory) gitSource() git.Source {
	if m == nil {
		return git.Source{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.source
}

// updateSource changes the release's git.Source under the memory's lock.
func (m *memory) updateSource(f func(*git.Source)) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	f(&m.source)
}

// recordCheck keeps what a look at Git gave; the objects are copied.
func (m *memory) recordCheck(c lastCheck) {
	objects := make([]*unstructured.Unstructured, len(c.objects))
	for i, o := range c.objects {
		objects[i] = o.DeepCopy()
	}
	c.objects = objects
	m.mu.Lock()
	defer m.mu.Unlock()
	m.check = c
}

// lastCheck returns a copy of what the last look at Git gave.
func (m *memory) lastCheck() lastCheck {
	if m == nil {
		return lastCheck{}
	}
	m.mu.Lock()
	c := m.check
	m.mu.Unlock()
	objects := make([]*unstructured.Unstructured, len(c.objects))
	for i, o := range c.objects {
		objects[i] = o.DeepCopy()
	}
	c.objects = objects
	return c
}

// cluster returns the cluster the release was last found to target.
func (m *memory) cluster() clusterRef {
	if m == nil {
		return clusterRef{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.clusterRef
}

// setCluster records the cluster the release targets, and returns the key of the one before.
func (m *memory) setCluster(ref clusterRef) (was string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	was = m.clusterRef.key
	m.clusterRef = ref
	return was
}

// storeIdentity returns the store and identity the memory names, for eviction.
func (m *memory) uses() (store [2]string, identity string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return [2]string{m.check.url, m.check.authID}, m.identity
}

func (m *memory) setIdentity(user string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.identity = user
}

// healthExprs returns specs compiled: compiling costs about a millisecond an expression, so
// the last compiled are reused while the spec holds the same.
func (m *memory) healthExprs(specs []kustomize.CustomHealthCheck) (*health.Exprs, error) {
	if m == nil {
		return health.CompileExprs(specs)
	}
	m.mu.Lock()
	c := m.exprs
	m.mu.Unlock()
	if c.specs != nil && slices.Equal(c.specs, specs) {
		return c.exprs, c.err
	}
	exprs, err := health.CompileExprs(specs)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.exprs = compiledExprs{specs: slices.Clone(specs), exprs: exprs, err: err}
	return exprs, err
}

// lastSnapshot returns the snapshot, or nil. Snapshots are never changed once stored: the
// caller may read it without the lock.
func (m *memory) lastSnapshot() *snapshot {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snapshot
}

// setSnapshot replaces the snapshot (nil forgets it).
func (m *memory) setSnapshot(s *snapshot) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snapshot = s
}

func (m *memory) lastWrite() overwritten {
	if m == nil {
		return overwritten{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.outdated
}

func (m *memory) wrote(o overwritten) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.outdated = o
}

// addCorrections counts drift corrections until a written status holds them.
func (m *memory) addCorrections(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.corrections += n
}

func (m *memory) pendingCorrections() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.corrections
}

// correctionsWritten takes off n corrections once the status that holds them is written.
func (m *memory) correctionsWritten(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.corrections = max(m.corrections-n, 0)
}

// commitStatusWait is how long from now commit statuses wait after a post that failed.
func (m *memory) commitStatusWait(now time.Time) time.Duration {
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(m.commitStatusRetry.Sub(now), 0)
}

// commitStatusFailed defers the next commit status post to at.
func (m *memory) commitStatusFailed(at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.commitStatusRetry = at
}

// attestWait is how long from now deployment records wait after a write that failed.
func (m *memory) attestWait(now time.Time) time.Duration {
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(m.attestRetry.Sub(now), 0)
}

// deferAttest defers the next deployment record write to at (zero: no longer).
func (m *memory) deferAttest(at time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attestRetry = at
}
