package verify

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/immutable-release/operator/internal/verify/verifytest"
)

// BenchmarkFleetVerification: N releases (default 1000) sharing 10 signed images start at
// once, each verifying its image through one Cache, as the reconciler's workers do.
// It reports the verifications made (10: one per image), the registry requests, the time the
// whole fleet's verifications add to its cold start, and the registry requests per release
// at steady state (none).
//
//	go test ./internal/verify -run '^$' -bench Fleet -benchtime 1x
func BenchmarkFleetVerification(b *testing.B) {
	const releases, images, workers = 1000, 10, 4
	var requests atomic.Int64
	reg := verifytest.NewRegistry(b, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			h.ServeHTTP(w, r)
		})
	})
	key := verifytest.NewKey(b)
	var refs []name.Digest
	for i := range images {
		img := reg.Push(fmt.Sprintf("acme/app%d", i))
		key.SignImage(reg, img)
		refs = append(refs, img)
	}
	policy := Policy{Requirements: []Requirement{{Source: "spec.verify", Keys: [][]byte{key.PublicPEM}}}}
	b.ResetTimer()
	for range b.N {
		c := &Cache{Verifier: &Verifier{Registry: Registry{Timeout: 10 * time.Second}}}
		requests.Store(0)
		start := time.Now()
		fleet(b, c, refs, policy, releases, workers)
		cold := time.Since(start)
		coldRequests := requests.Load()
		start = time.Now()
		fleet(b, c, refs, policy, releases, workers)
		steady := time.Since(start)
		b.ReportMetric(float64(c.Verifications()), "verifications")
		b.ReportMetric(float64(coldRequests), "registry-requests-cold")
		b.ReportMetric(float64(cold.Milliseconds()), "ms-cold-fleet")
		b.ReportMetric(float64(requests.Load()-coldRequests)/releases, "registry-requests/release-steady")
		b.ReportMetric(float64(steady.Nanoseconds())/releases, "ns/release-steady")
	}
}

// fleet verifies each release's image with workers at a time, as MaxConcurrentReconciles
// workers would.
func fleet(b *testing.B, c *Cache, refs []name.Digest, p Policy, releases, workers int) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if _, err := c.Verify(context.Background(), refs[i%len(refs)].String(), p, Credentials{}); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range releases {
		next <- i
	}
	close(next)
	wg.Wait()
}
