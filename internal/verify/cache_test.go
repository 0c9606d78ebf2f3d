package verify

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/verify/verifytest"
)

// swappable serves the registry, or hangs up, or answers what a test makes it answer.
type swappable struct {
	mu      sync.Mutex
	handler http.Handler
	calls   int
}

func (s *swappable) set(h http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = h
}

func (s *swappable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	h := s.handler
	s.calls++
	s.mu.Unlock()
	h.ServeHTTP(w, r)
}

// hangUp closes the connection without an answer: a registry that cannot be reached.
var hangUp = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
})

func newSwappableRegistry(t *testing.T) (*verifytest.Registry, *swappable) {
	sw := &swappable{}
	reg := verifytest.NewRegistry(t, func(h http.Handler) http.Handler {
		sw.handler = h
		return sw
	})
	return reg, sw
}

func TestRegistryDownThenUp(t *testing.T) {
	g := NewWithT(t)
	reg, sw := newSwappableRegistry(t)
	key := verifytest.NewKey(t)
	img := reg.Push("acme/shop")
	reg.Attach(img, key.Bundle(verifytest.Statement(img.DigestStr(), CosignSignPredicateType, map[string]any{})), false)
	good := sw.handler
	c := &Cache{Verifier: &Verifier{Registry: Registry{Timeout: 2 * time.Second}}, UnavailableTTL: time.Nanosecond}

	for _, down := range []http.Handler{hangUp, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	})} {
		sw.set(down)
		_, err := c.Verify(context.Background(), img.String(), keyPolicy(key), Credentials{})
		var unavailable *UnavailableError
		g.Expect(errors.As(err, &unavailable)).To(BeTrue(), "a registry that cannot be read is retriable, never a pass: %v", err)
		g.Expect(err.Error()).To(ContainSubstring(img.DigestStr()))
	}
	time.Sleep(time.Millisecond)

	sw.set(good)
	v, err := c.Verify(context.Background(), img.String(), keyPolicy(key), Credentials{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(v.KeyFingerprint).NotTo(BeEmpty())

	// Now the verdict is kept: the registry going away again changes nothing.
	sw.set(hangUp)
	_, err = c.Verify(context.Background(), img.String(), keyPolicy(key), Credentials{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c.Verifications()).To(Equal(int64(3)))
}

func TestCacheVerifiesOnceForManyReleases(t *testing.T) {
	g := NewWithT(t)
	reg, sw := newSwappableRegistry(t)
	key := verifytest.NewKey(t)
	var images []name.Digest
	for i := range 3 {
		img := reg.Push(fmt.Sprintf("acme/app%d", i))
		reg.Attach(img, key.Bundle(verifytest.Statement(img.DigestStr(), CosignSignPredicateType, map[string]any{})), false)
		images = append(images, img)
	}
	c := &Cache{Verifier: &Verifier{Registry: Registry{Timeout: 5 * time.Second}}}
	sw.mu.Lock()
	sw.calls = 0
	sw.mu.Unlock()

	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for i := range 300 {
		wg.Go(func() {
			_, err := c.Verify(context.Background(), images[i%3].String(), keyPolicy(key), Credentials{})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Expect(c.Verifications()).To(Equal(int64(3)), "one verification per image, however many releases ask at once")
	sw.mu.Lock()
	calls := sw.calls
	sw.mu.Unlock()

	// Steady state: no registry round trip.
	for i := range 30 {
		_, err := c.Verify(context.Background(), images[i%3].String(), keyPolicy(key), Credentials{})
		g.Expect(err).NotTo(HaveOccurred())
	}
	sw.mu.Lock()
	g.Expect(sw.calls).To(Equal(calls))
	sw.mu.Unlock()

	// Another policy (a rotated key) is another verification.
	rotated := verifytest.NewKey(t)
	_, err := c.Verify(context.Background(), images[0].String(), keyPolicy(rotated), Credentials{})
	g.Expect(reasonOf(err)).To(Equal(WrongKey))
	g.Expect(c.Verifications()).To(Equal(int64(4)))
}

func TestCacheRefusalIsShortLived(t *testing.T) {
	g := NewWithT(t)
	reg, _ := newSwappableRegistry(t)
	key := verifytest.NewKey(t)
	img := reg.Push("acme/shop")
	c := &Cache{Verifier: &Verifier{Registry: Registry{Timeout: 5 * time.Second}}, FailureTTL: 50 * time.Millisecond}
	_, err := c.Verify(context.Background(), img.String(), keyPolicy(key), Credentials{})
	g.Expect(reasonOf(err)).To(Equal(NoSignature))
	_, err = c.Verify(context.Background(), img.String(), keyPolicy(key), Credentials{})
	g.Expect(reasonOf(err)).To(Equal(NoSignature))
	g.Expect(c.Verifications()).To(Equal(int64(1)), "a refusal is kept a moment")

	// CI signs it afterwards.
	key.SignImage(reg, img)
	g.Eventually(func() error {
		_, err := c.Verify(context.Background(), img.String(), keyPolicy(key), Credentials{})
		return err
	}).WithTimeout(2 * time.Second).Should(Succeed())

	// A person who asks at once after signing is not served the kept refusal.
	later := reg.Push("acme/later")
	c = &Cache{Verifier: c.Verifier, FailureTTL: time.Hour}
	_, err = c.Verify(context.Background(), later.String(), keyPolicy(key), Credentials{})
	g.Expect(reasonOf(err)).To(Equal(NoSignature))
	key.SignImage(reg, later)
	_, err = c.Verify(context.Background(), later.String(), keyPolicy(key), Credentials{})
	g.Expect(reasonOf(err)).To(Equal(NoSignature), "kept")
	_, err = c.Recheck(context.Background(), later.String(), keyPolicy(key), Credentials{})
	g.Expect(err).NotTo(HaveOccurred())
}

func TestCacheIsBounded(t *testing.T) {
	g := NewWithT(t)
	c := &Cache{Size: 3}
	for i := range 10 {
		c.put(fmt.Sprint(i), cacheEntry{}, time.Minute)
	}
	g.Expect(c.Len()).To(Equal(3))
	_, ok := c.get("9")
	g.Expect(ok).To(BeTrue(), "the newest are kept")
	_, ok = c.get("0")
	g.Expect(ok).To(BeFalse())
}

// TestHostileRegistry: a registry that answers too much, or never stops answering, or lists
// thousands of referrers, costs its image a bounded verification and a refusal.
func TestHostileRegistry(t *testing.T) {
	key := verifytest.NewKey(t)
	huge := strings.Repeat("x", 8<<20)
	cases := []struct {
		name string
		// serve answers in place of the registry for paths containing match.
		match  string
		serve  http.HandlerFunc
		reason Reason
	}{{
		name:  "a huge referrers index",
		match: "/referrers/",
		serve: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
			io.WriteString(w, `{"schemaVersion":2,"manifests":[],"annotations":{"x":"`+huge+`"}}`)
		},
		reason: RegistryAnswerTooLarge,
	}, {
		name:  "a huge signature tag manifest with a lying length",
		match: ".sig",
		serve: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Content-Length", fmt.Sprint(16<<20))
			io.WriteString(w, huge)
		},
		reason: RegistryAnswerTooLarge,
	}, {
		name:  "an answer that never ends",
		match: "/referrers/",
		serve: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
			io.WriteString(w, `{"schemaVersion":2,"manifests":[`)
			for r.Context().Err() == nil {
				if _, err := io.WriteString(w, `{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},`); err != nil {
					return
				}
			}
		},
		reason: RegistryAnswerTooLarge,
	}, {
		name:  "thousands of referrers that are not there",
		match: "/referrers/",
		serve: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
			var b strings.Builder
			b.WriteString(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`)
			for i := range 5000 {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, `{"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":%q,"digest":"sha256:%064x","size":100}`, BundleMediaType, i)
			}
			b.WriteString("]}")
			io.WriteString(w, b.String())
		},
		reason: NoSignature,
	}, {
		name:  "an answer that never comes",
		match: "/referrers/",
		serve: func(_ http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			reg, sw := newSwappableRegistry(t)
			img := reg.Push("acme/shop")
			good := sw.handler
			var manifestGets int
			var mu sync.Mutex
			sw.set(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.Contains(r.URL.Path, tc.match) {
					tc.serve(w, r)
					return
				}
				if strings.Contains(r.URL.Path, "/manifests/sha256:") {
					mu.Lock()
					manifestGets++
					mu.Unlock()
				}
				good.ServeHTTP(w, r)
			}))
			v := &Verifier{Registry: Registry{Timeout: time.Second}}
			start := time.Now()
			_, err := v.Verify(context.Background(), img.String(), keyPolicy(key), nil)
			g.Expect(err).To(HaveOccurred())
			g.Expect(time.Since(start)).To(BeNumerically("<", 5*time.Second))
			if tc.reason == "" {
				var unavailable *UnavailableError
				g.Expect(errors.As(err, &unavailable)).To(BeTrue(), err.Error())
				return
			}
			g.Expect(reasonOf(err)).To(Equal(tc.reason), err.Error())
			mu.Lock()
			g.Expect(manifestGets).To(BeNumerically("<=", MaxReferrers))
			mu.Unlock()
		})
	}
}

// TestRegistryCredentials: the docker config JSON of spec.registrySecretRef is sent to its
// registry only; without it, the registry's refusal is retriable, never a pass.
func TestRegistryCredentials(t *testing.T) {
	g := NewWithT(t)
	reg, sw := newSwappableRegistry(t)
	key := verifytest.NewKey(t)
	img := reg.Push("acme/private")
	reg.Attach(img, key.Bundle(verifytest.Statement(img.DigestStr(), CosignSignPredicateType, map[string]any{})), false)
	good := sw.handler
	sw.set(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); !ok || user != "ci" || pass != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		good.ServeHTTP(w, r)
	}))
	v := &Verifier{Registry: Registry{Timeout: 5 * time.Second}}

	_, err := v.Verify(context.Background(), img.String(), keyPolicy(key), nil)
	var unavailable *UnavailableError
	g.Expect(errors.As(err, &unavailable)).To(BeTrue(), "%v", err)

	host, _, _ := net.SplitHostPort(reg.Host)
	other, err := Keychain([]byte(`{"auths":{"` + host + `:1":{"username":"ci","password":"s3cret"}}}`))
	g.Expect(err).NotTo(HaveOccurred())
	_, err = v.Verify(context.Background(), img.String(), keyPolicy(key), other)
	g.Expect(errors.As(err, &unavailable)).To(BeTrue(), "another registry's credentials are not sent: %v", err)

	auth := base64.StdEncoding.EncodeToString([]byte("ci:s3cret"))
	kc, err := Keychain([]byte(`{"auths":{"http://` + reg.Host + `/":{"auth":"` + auth + `"}}}`))
	g.Expect(err).NotTo(HaveOccurred())
	_, err = v.Verify(context.Background(), img.String(), keyPolicy(key), kc)
	g.Expect(err).NotTo(HaveOccurred())

	// A verdict made with a tenant's credentials is not served to a release without them.
	c := &Cache{Verifier: v}
	_, err = c.Verify(context.Background(), img.String(), keyPolicy(key), Credentials{ID: "tenant-a", Keychain: kc})
	g.Expect(err).NotTo(HaveOccurred())
	_, err = c.Verify(context.Background(), img.String(), keyPolicy(key), Credentials{})
	g.Expect(errors.As(err, &unavailable)).To(BeTrue(), "%v", err)

	_, err = Keychain([]byte(`{"auths":{"x":{"auth":"s3cret-not-base64!"}}}`))
	g.Expect(err).To(HaveOccurred())
	g.Expect(err.Error()).NotTo(ContainSubstring("s3cret"), "an error never shows the credentials")
}

func TestCheckPolicy(t *testing.T) {
	key := verifytest.NewKey(t)
	cases := []struct {
		name string
		req  Requirement
		ok   bool
	}{
		{"a key", Requirement{Keys: [][]byte{key.PublicPEM}}, true},
		{"an identity", Requirement{Identities: []Identity{{Issuer: "x", Subject: "y"}}}, true},
		{"nothing to verify with", Requirement{Attestations: []Attestation{{PredicateType: "x"}}}, false},
		{"not a key", Requirement{Keys: [][]byte{[]byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")}}, false},
		{"a bad expression", Requirement{Identities: []Identity{{Issuer: "(", Subject: "y"}}}, false},
		{"no subject", Requirement{Identities: []Identity{{Issuer: "x"}}}, false},
		{"too many keys", Requirement{Keys: make([][]byte, MaxKeys+1)}, false},
		{"a huge expression", Requirement{Identities: []Identity{{Issuer: strings.Repeat("a", MaxPatternLength+1), Subject: "y"}}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPolicy(Policy{Requirements: []Requirement{tc.req}})
			if tc.ok {
				NewWithT(t).Expect(err).NotTo(HaveOccurred())
			} else {
				NewWithT(t).Expect(errors.Is(err, ErrInvalidPolicy)).To(BeTrue(), "%v", err)
			}
		})
	}
}

// TestCacheLeavesSlowRegistriesToTheBackground: a caller that stops waiting leaves the
// verification running; its verdict, here the registry's silence, is there for the next one.
func TestCacheLeavesSlowRegistriesToTheBackground(t *testing.T) {
	g := NewWithT(t)
	reg, sw := newSwappableRegistry(t)
	key := verifytest.NewKey(t)
	img := reg.Push("acme/shop")
	sw.set(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	c := &Cache{Verifier: &Verifier{Registry: Registry{Timeout: 500 * time.Millisecond}}, UnavailableTTL: time.Minute}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Verify(ctx, img.String(), keyPolicy(key), Credentials{})
	g.Expect(errors.Is(err, context.DeadlineExceeded)).To(BeTrue(), "%v", err)
	g.Expect(time.Since(start)).To(BeNumerically("<", 400*time.Millisecond))

	g.Eventually(func() bool {
		_, err := c.Verify(context.Background(), img.String(), keyPolicy(key), Credentials{})
		var unavailable *UnavailableError
		return errors.As(err, &unavailable)
	}).WithTimeout(3 * time.Second).Should(BeTrue())
	g.Expect(c.Verifications()).To(Equal(int64(1)), "one verification, finished in the background")
}
