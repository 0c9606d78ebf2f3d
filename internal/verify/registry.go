package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sigstore/sigstore-go/pkg/bundle"
)

// Bounds on what one image's registry may answer: a hostile registry may serve huge
// manifests and blobs, answers that never end, or thousands of referrers.
const (
	// DefaultTimeout bounds all the registry calls of one image's verification.
	DefaultTimeout = 30 * time.Second
	// DefaultMaxResponseBytes bounds every response body the registry sends.
	DefaultMaxResponseBytes = 4 << 20
	// MaxReferrers is how many Sigstore bundles attached to one digest are looked at.
	MaxReferrers = 32
	// MaxLegacyLayers is how many signatures of one cosign .sig tag are looked at.
	MaxLegacyLayers = 16
	// maxPayloadBytes bounds a legacy simple-signing payload.
	maxPayloadBytes = 64 << 10
)

// Media types of the signatures looked for.
const (
	// BundleMediaType is a Sigstore bundle v0.3, as cosign v3 attaches it as a referrer.
	BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// bundleMediaTypeAlt is the same bundle under its parameterised name.
	bundleMediaTypeAlt = "application/vnd.dev.sigstore.bundle+json;version=0.3"
	// SimpleSigningMediaType is the payload of a cosign legacy .sig tag's layers.
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// DSSEMediaType is a layer of a cosign legacy .att tag: a DSSE envelope.
	DSSEMediaType = "application/vnd.dsse.envelope.v1+json"

	// Annotations of a legacy signature layer.
	annotationSignature   = "dev.cosignproject.cosign/signature"
	annotationCertificate = "dev.sigstore.cosign/certificate"
	annotationBundle      = "dev.sigstore.cosign/bundle"
	annotationTimestamp   = "dev.sigstore.cosign/rfc3161timestamp"
)

// Registry reads the signatures attached to images.
type Registry struct {
	// Transport carries the requests (nil: http.DefaultTransport). Tests and the CLI may
	// give their own; every response through it is bounded by MaxResponseBytes.
	Transport http.RoundTripper
	// Timeout bounds all the registry calls of one image's verification (DefaultTimeout).
	Timeout time.Duration
	// MaxResponseBytes bounds each response body (DefaultMaxResponseBytes).
	MaxResponseBytes int64
}

// errTooLarge is a registry answer over the bound.
var errTooLarge = errors.New("registry answer too large")

// limitedTransport cuts every response body at max bytes, with an error.
type limitedTransport struct {
	base http.RoundTripper
	max  int64
}

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.max {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %s answered %d bytes, more than %d", errTooLarge, req.URL.Path, resp.ContentLength, t.max)
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: t.max, path: req.URL.Path, max: t.max}
	return resp, nil
}

type limitedBody struct {
	io.ReadCloser
	left, max int64
	path      string
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly max bytes from a longer one.
		var one [1]byte
		if n, _ := b.ReadCloser.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("%w: %s answered more than %d bytes", errTooLarge, b.path, b.max)
		}
		return b.ReadCloser.Read(p)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// options are the remote options of one image's reads.
func (r Registry) options(ctx context.Context, keychain authn.Keychain) []remote.Option {
	base := r.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	limit := r.MaxResponseBytes
	if limit <= 0 {
		limit = DefaultMaxResponseBytes
	}
	if keychain == nil {
		keychain = authn.NewMultiKeychain()
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(limitedTransport{base: base, max: limit}),
		remote.WithAuthFromKeychain(keychain),
		// The reconcile is retried with backoff; retrying inside it only holds a worker.
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
		remote.WithUserAgent("immutable-release-operator"),
	}
}

func (r Registry) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultTimeout
}

// candidate is one signature or attestation found for an image.
type candidate struct {
	// where says where it was found, for messages.
	where string
	// bundle is a Sigstore bundle attached as a referrer, or built from a legacy tag.
	entity signedEntity
	// payload is the simple-signing payload a legacy signature signs; nil for a bundle.
	payload []byte
}

// notFound says whether err is the registry's 404.
func notFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound
}

// find lists the signatures of the image: the Sigstore bundles attached to its digest as
// referrers (through the referrers API or its tag-schema fallback), then the layers of
// cosign's legacy sha256-<hex>.sig tag. Broken entries are skipped and counted: they are
// not signatures. A registry that cannot be reached, or that refuses the credentials, is
// an error; a registry that answers too much is a hostileError.
func (r Registry) find(ctx context.Context, ref name.Digest, keychain authn.Keychain) (found []candidate, skipped []string, err error) {
	opts := r.options(ctx, keychain)
	idx, err := remote.Referrers(ref, opts...)
	if err != nil {
		return nil, nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, err
	}
	looked := 0
	for _, d := range im.Manifests {
		if d.ArtifactType != BundleMediaType && d.ArtifactType != bundleMediaTypeAlt {
			continue
		}
		if looked++; looked > MaxReferrers {
			skipped = append(skipped, fmt.Sprintf("%d more referrers beyond the first %d", countBundles(im.Manifests)-MaxReferrers, MaxReferrers))
			break
		}
		where := "referrer " + d.Digest.String()
		e, err := r.referrerBundle(ref, d.Digest, opts)
		switch {
		case errors.Is(err, errTooLarge), err != nil && !isMalformed(err):
			return nil, nil, err
		case err != nil:
			skipped = append(skipped, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		found = append(found, candidate{where: where, entity: e})
	}
	for _, suffix := range []string{".sig", ".att"} {
		legacy, skippedLegacy, err := r.legacyLayers(ref, suffix, opts)
		if err != nil {
			return nil, nil, err
		}
		found, skipped = append(found, legacy...), append(skipped, skippedLegacy...)
	}
	return found, skipped, nil
}

func countBundles(ds []v1.Descriptor) int {
	n := 0
	for _, d := range ds {
		if d.ArtifactType == BundleMediaType || d.ArtifactType == bundleMediaTypeAlt {
			n++
		}
	}
	return n
}

// malformed is a registry entry that is not a usable signature: skipped, not fatal.
type malformed struct{ err error }

func (m malformed) Error() string { return m.err.Error() }
func (m malformed) Unwrap() error { return m.err }

func isMalformed(err error) bool {
	var m malformed
	return errors.As(err, &m)
}

func malformedf(format string, args ...any) error { return malformed{fmt.Errorf(format, args...)} }

// referrerBundle reads the Sigstore bundle of the referrer manifest at digest.
func (r Registry) referrerBundle(ref name.Digest, digest v1.Hash, opts []remote.Option) (signedEntity, error) {
	desc, err := remote.Get(ref.Context().Digest(digest.String()), opts...)
	if err != nil {
		if notFound(err) {
			return nil, malformedf("listed but not found")
		}
		return nil, err
	}
	var m v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		return nil, malformedf("manifest: %v", err)
	}
	if m.Subject == nil || m.Subject.Digest.String() != ref.DigestStr() {
		// Listed for this digest, but attached to another: not this image's.
		return nil, malformedf("its subject is not %s", ref.DigestStr())
	}
	for _, l := range m.Layers {
		if string(l.MediaType) != BundleMediaType && string(l.MediaType) != bundleMediaTypeAlt {
			continue
		}
		data, err := r.blob(ref, l, opts)
		if err != nil {
			return nil, err
		}
		b := &bundle.Bundle{}
		if err := b.UnmarshalJSON(data); err != nil {
			return nil, malformedf("bundle: %v", err)
		}
		return bundleEntity{b}, nil
	}
	return nil, malformedf("no bundle layer")
}

// blob reads a layer, bounded by its descriptor's size and checked against its digest.
func (r Registry) blob(ref name.Digest, l v1.Descriptor, opts []remote.Option) ([]byte, error) {
	limit := r.MaxResponseBytes
	if limit <= 0 {
		limit = DefaultMaxResponseBytes
	}
	if l.Size > limit || l.Size < 0 {
		return nil, fmt.Errorf("%w: layer %s is %d bytes, more than %d", errTooLarge, l.Digest, l.Size, limit)
	}
	if l.Digest.Algorithm != "sha256" {
		return nil, malformedf("layer %s: not a sha256 digest", l.Digest)
	}
	layer, err := remote.Layer(ref.Context().Digest(l.Digest.String()), opts...)
	if err != nil {
		return nil, err
	}
	rc, err := layer.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, l.Size+1))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	if int64(len(data)) != l.Size || hex.EncodeToString(sum[:]) != l.Digest.Hex {
		return nil, malformedf("layer %s does not match its digest and size", l.Digest)
	}
	return data, nil
}

// legacyLayers reads the layers of cosign's sha256-<hex>.sig tag (simple-signing
// signatures) or sha256-<hex>.att tag (DSSE attestations).
func (r Registry) legacyLayers(ref name.Digest, suffix string, opts []remote.Option) ([]candidate, []string, error) {
	tag := ref.Context().Tag(strings.Replace(ref.DigestStr(), ":", "-", 1) + suffix)
	desc, err := remote.Get(tag, opts...)
	if notFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var m v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		return nil, []string{fmt.Sprintf("tag %s: manifest: %v", tag.TagStr(), err)}, nil
	}
	mediaType, maxSize := SimpleSigningMediaType, int64(maxPayloadBytes)
	if suffix == ".att" {
		mediaType, maxSize = DSSEMediaType, 0 // bounded by MaxResponseBytes
	}
	var found []candidate
	var skipped []string
	for i, l := range m.Layers {
		if i >= MaxLegacyLayers {
			skipped = append(skipped, fmt.Sprintf("tag %s: %d more layers beyond the first %d", tag.TagStr(), len(m.Layers)-MaxLegacyLayers, MaxLegacyLayers))
			break
		}
		where := fmt.Sprintf("tag %s layer %d", tag.TagStr(), i+1)
		if string(l.MediaType) != mediaType {
			continue
		}
		if maxSize > 0 && l.Size > maxSize {
			skipped = append(skipped, fmt.Sprintf("%s: payload of %d bytes, more than %d", where, l.Size, maxSize))
			continue
		}
		data, err := r.blob(ref, l, opts)
		if isMalformed(err) {
			skipped = append(skipped, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		c := candidate{where: where}
		if suffix == ".sig" {
			c.entity, err = legacyEntity(l.Annotations, data)
			c.payload = data
		} else {
			c.entity, err = legacyAttestation(l.Annotations, data)
		}
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		found = append(found, c)
	}
	return found, skipped, nil
}

// dockerConfig is the part of a docker config JSON that holds credentials.
type dockerConfig struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
		RegistryToken string `json:"registrytoken"`
	} `json:"auths"`
}

// dockerKeychain holds the credentials of a docker config JSON, by registry host.
type dockerKeychain map[string]authn.AuthConfig

// Resolve returns the credentials for the registry of the resource, or anonymous.
func (k dockerKeychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	host := res.RegistryStr()
	if c, ok := k[host]; ok {
		return authn.FromConfig(c), nil
	}
	if host == name.DefaultRegistry {
		for _, alias := range []string{"https://index.docker.io/v1/", "index.docker.io", "docker.io"} {
			if c, ok := k[alias]; ok {
				return authn.FromConfig(c), nil
			}
		}
	}
	return authn.Anonymous, nil
}

// Keychain reads the registry credentials of a docker config JSON (a Secret of type
// kubernetes.io/dockerconfigjson). The error never holds the credentials.
func Keychain(configJSON []byte) (authn.Keychain, error) {
	var c dockerConfig
	if err := json.Unmarshal(configJSON, &c); err != nil {
		return nil, errors.New("not a docker config JSON (.dockerconfigjson): it does not parse")
	}
	k := dockerKeychain{}
	for host, a := range c.Auths {
		ac := authn.AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("the auth of registry %q is not base64", host)
			}
			user, pass, ok := bytes.Cut(raw, []byte(":"))
			if !ok {
				return nil, fmt.Errorf("the auth of registry %q is not user:password", host)
			}
			ac.Username, ac.Password = string(user), string(pass)
		}
		host = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://"), "/")
		if host == "index.docker.io/v1" {
			host = name.DefaultRegistry
		}
		k[host] = ac
	}
	return k, nil
}
