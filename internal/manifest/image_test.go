package manifest

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

const goodDigest = "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

func TestPinnedImage(t *testing.T) {
	tests := []struct {
		ref     string
		wantErr string // empty: pinned
		name    string
	}{
		{ref: "nginx@" + goodDigest, name: "nginx"},
		{ref: "nginx:1.27@" + goodDigest, name: "nginx"},
		{ref: "ghcr.io/acme/shop/web:v1.2.3@" + goodDigest, name: "ghcr.io/acme/shop/web"},
		{ref: "localhost:5000/web@" + goodDigest, name: "localhost:5000/web"},
		{ref: "[::1]:5000/web@" + goodDigest, name: "[::1]:5000/web"},
		{ref: "nginx", wantErr: "has no digest"},
		{ref: "nginx:latest", wantErr: "uses the tag latest"},
		{ref: "nginx:1.27", wantErr: "has a tag but no digest; name it as nginx:1.27@sha256:<digest>"},
		{ref: "nginx@sha256:abc", wantErr: "malformed digest"},
		{ref: "nginx@" + strings.ToUpper(goodDigest[7:]), wantErr: "not a valid image reference"},
		{ref: "nginx@sha256:" + strings.ToUpper(goodDigest[7:]), wantErr: "malformed digest"},
		{ref: "nginx@sha512:" + strings.Repeat("a", 128), wantErr: "uses a sha512 digest"},
		{ref: "", wantErr: "image is empty"},
		{ref: " nginx@" + goodDigest, wantErr: "spaces"},
		{ref: "Nginx@" + goodDigest, wantErr: "not a valid image reference"},
		{ref: "nginx@@" + goodDigest, wantErr: "not a valid image reference"},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			g := NewWithT(t)
			r, err := PinnedImage(tt.ref)
			if tt.wantErr == "" {
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(r.Name).To(Equal(tt.name))
				g.Expect(r.String()).To(Equal(tt.ref))
				return
			}
			g.Expect(err).To(MatchError(ContainSubstring(tt.wantErr)))
		})
	}
}

// FuzzPinnedImage checks that the parser never panics and that whatever it accepts as
// pinned round-trips and really carries a sha256 digest.
func FuzzPinnedImage(f *testing.F) {
	for _, s := range []string{"nginx", "nginx:1.27", "nginx@" + goodDigest, "a.b:5000/c/d:e@" + goodDigest, "x@sha512:00", "[::1]/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		r, err := PinnedImage(ref)
		if err != nil {
			return
		}
		if r.String() != ref {
			t.Fatalf("accepted %q but it reads back as %q", ref, r.String())
		}
		if !sha256Regexp.MatchString(r.Digest) {
			t.Fatalf("accepted %q with digest %q", ref, r.Digest)
		}
	})
}
