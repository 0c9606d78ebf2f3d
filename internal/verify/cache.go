package verify

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/sync/singleflight"
)

// Defaults of a Cache.
const (
	// DefaultCacheSize bounds the verdicts kept.
	DefaultCacheSize = 4096
	// DefaultSuccessTTL is how long a passed verification is trusted: a digest never
	// changes and neither does a policy of the same hash, so this only bounds how long a
	// trusted-root update or a signature deleted from the registry takes to be noticed.
	DefaultSuccessTTL = 24 * time.Hour
	// DefaultFailureTTL is how long a refusal is kept: a signature pushed after the image
	// is found within it.
	DefaultFailureTTL = 30 * time.Second
	// DefaultUnavailableTTL is how long a registry that could not be read is remembered:
	// long enough for the releases waiting on the verification to be told, short enough
	// that a registry back up is read again at the next retry.
	DefaultUnavailableTTL = 5 * time.Second
)

// Credentials are the registry credentials of one release: ID names them (a hash of the
// Secret's data), so that verifications with other credentials are not merged.
type Credentials struct {
	ID       string
	Keychain authn.Keychain
}

// Cache holds verdicts per (digest, policy, credentials), and runs one verification per key at a time:
// a thousand releases sharing an image verify it once. It is safe for concurrent use and
// bounded in size; losing an entry only costs a verification.
type Cache struct {
	// Verifier makes the verifications.
	Verifier *Verifier
	// Size bounds the entries (DefaultCacheSize).
	Size int
	// SuccessTTL, FailureTTL and UnavailableTTL are how long verdicts are kept
	// (DefaultSuccessTTL, DefaultFailureTTL, DefaultUnavailableTTL).
	SuccessTTL, FailureTTL, UnavailableTTL time.Duration

	mu      sync.Mutex
	entries map[string]*list.Element
	lru     list.List
	flights singleflight.Group
	made    atomic.Int64
}

type cacheEntry struct {
	key     string
	verdict Verdict
	err     error
	expires time.Time
}

// Verifications is how many verifications the cache made (not served from its entries).
func (c *Cache) Verifications() int64 { return c.made.Load() }

// Verify returns the verdict of image under policy: kept, or verified now. When ctx ends
// first, it returns ctx's error and the verification goes on, its verdict kept for the next
// call: a slow registry holds a goroutine, not the caller. A verdict that
// passed is kept per (digest, policy, credentials), whatever repository the digest was
// named in; a refusal per repository too, as another repository may hold signatures.
func (c *Cache) Verify(ctx context.Context, image string, p Policy, creds Credentials) (Verdict, error) {
	return c.verify(ctx, image, p, creds, false)
}

// Recheck is Verify without the refusals (and unreadable registries) kept: for a person who
// asked for a reconcile, perhaps right after signing the image. Passed verdicts are used.
func (c *Cache) Recheck(ctx context.Context, image string, p Policy, creds Credentials) (Verdict, error) {
	return c.verify(ctx, image, p, creds, true)
}

func (c *Cache) verify(ctx context.Context, image string, p Policy, creds Credentials, recheck bool) (Verdict, error) {
	ref, err := digestOf(image)
	if err != nil {
		return Verdict{}, err
	}
	// Keyed by credentials too: a release without access to a private repository is not
	// shown what verifying it with another tenant's credentials found.
	passed := ref.DigestStr() + "|" + p.Hash() + "|" + creds.ID
	refused := ref.Context().Name() + "|" + passed
	if e, ok := c.get(passed); ok {
		return e.verdict, nil
	}
	if e, ok := c.get(refused); ok && !recheck {
		return Verdict{}, e.err
	}
	ch := c.flights.DoChan(refused, func() (any, error) {
		compiled, err := compile(p)
		if err != nil {
			return Verdict{}, err
		}
		c.made.Add(1)
		// The verification is shared: it outlives any one caller's cancellation, and is
		// bounded by the registry timeout.
		v, err := c.Verifier.verify(context.WithoutCancel(ctx), image, ref, compiled, creds.Keychain)
		var refusal *Error
		var unavailable *UnavailableError
		switch {
		case err == nil:
			c.put(passed, cacheEntry{verdict: v}, c.successTTL())
		case errors.As(err, &refusal):
			c.put(refused, cacheEntry{err: err}, c.failureTTL())
		case errors.As(err, &unavailable):
			c.put(refused, cacheEntry{err: err}, c.unavailableTTL())
		}
		return v, err
	})
	select {
	case res := <-ch:
		return res.Val.(Verdict), res.Err
	case <-ctx.Done():
		return Verdict{}, ctx.Err()
	}
}

func (c *Cache) successTTL() time.Duration {
	if c.SuccessTTL > 0 {
		return c.SuccessTTL
	}
	return DefaultSuccessTTL
}

func (c *Cache) unavailableTTL() time.Duration {
	if c.UnavailableTTL > 0 {
		return c.UnavailableTTL
	}
	return DefaultUnavailableTTL
}

func (c *Cache) failureTTL() time.Duration {
	if c.FailureTTL > 0 {
		return c.FailureTTL
	}
	return DefaultFailureTTL
}

func (c *Cache) get(key string) (*cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if time.Now().After(e.expires) {
		c.lru.Remove(el)
		delete(c.entries, key)
		return nil, false
	}
	c.lru.MoveToFront(el)
	return e, true
}

func (c *Cache) put(key string, e cacheEntry, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]*list.Element{}
	}
	e.key, e.expires = key, time.Now().Add(ttl)
	if el, ok := c.entries[key]; ok {
		el.Value = &e
		c.lru.MoveToFront(el)
		return
	}
	c.entries[key] = c.lru.PushFront(&e)
	size := c.Size
	if size <= 0 {
		size = DefaultCacheSize
	}
	for c.lru.Len() > size {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*cacheEntry).key)
	}
}

// Len is how many verdicts are kept.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
