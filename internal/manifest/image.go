package manifest

import (
	"fmt"
	"regexp"
	"strings"
)

// ImageReference is a container image reference split into its parts, as the container
// runtime reads it: [registry/]repository[:tag][@algorithm:digest].
type ImageReference struct {
	// Name is the registry and repository, without tag or digest.
	Name string
	// Tag is empty when the reference has none.
	Tag string
	// Digest is algorithm:hex, empty when the reference has none.
	Digest string
}

// The grammar of github.com/distribution/reference, written out so that every part of a
// reference can be checked and named in an error message.
var (
	domainComponent = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	domain          = `(?:` + domainComponent + `(?:\.` + domainComponent + `)*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?`
	pathComponent   = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
	name            = `(?:` + domain + `/)?` + pathComponent + `(?:/` + pathComponent + `)*`
	tag             = `[\w][\w.-]{0,127}`
	digest          = `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Za-z=_-]+`

	referenceRegexp = regexp.MustCompile(`^(` + name + `)(?::(` + tag + `))?(?:@(` + digest + `))?$`)
	sha256Regexp    = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// maxNameLength is the longest repository name the distribution spec allows.
const maxNameLength = 255

// ParseImageReference splits ref into its parts. It fails when ref is not a valid reference
// at all; whether it is pinned is PinnedImage's question.
func ParseImageReference(ref string) (ImageReference, error) {
	if ref == "" {
		return ImageReference{}, fmt.Errorf("image is empty")
	}
	if strings.TrimSpace(ref) != ref {
		return ImageReference{}, fmt.Errorf("image %q has leading or trailing spaces", ref)
	}
	m := referenceRegexp.FindStringSubmatch(ref)
	if m == nil {
		return ImageReference{}, fmt.Errorf("image %q is not a valid image reference", ref)
	}
	if len(m[1]) > maxNameLength {
		return ImageReference{}, fmt.Errorf("image %q has a repository name longer than %d characters", ref, maxNameLength)
	}
	return ImageReference{Name: m[1], Tag: m[2], Digest: m[3]}, nil
}

// String returns the reference in its canonical written form.
func (r ImageReference) String() string {
	s := r.Name
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// PinnedImage checks that ref names its image by a sha256 digest: name@sha256:<64 lowercase
// hex>, optionally name:tag@sha256:<64 lowercase hex>. The error says what is wrong and how
// to write the reference instead.
func PinnedImage(ref string) (ImageReference, error) {
	r, err := ParseImageReference(ref)
	if err != nil {
		return r, err
	}
	if r.Digest == "" {
		switch r.Tag {
		case "":
			return r, fmt.Errorf("image %q has no digest (it means :latest); name it as %s@sha256:<digest>", ref, r.Name)
		case "latest":
			return r, fmt.Errorf("image %q uses the tag latest and no digest; name it as %s@sha256:<digest>", ref, r.Name)
		default:
			return r, fmt.Errorf("image %q has a tag but no digest; name it as %s:%s@sha256:<digest>", ref, r.Name, r.Tag)
		}
	}
	algorithm, hex, _ := strings.Cut(r.Digest, ":")
	if algorithm != "sha256" {
		return r, fmt.Errorf("image %q uses a %s digest; only sha256 digests are accepted", ref, algorithm)
	}
	if !sha256Regexp.MatchString(r.Digest) {
		return r, fmt.Errorf("image %q has a malformed digest: sha256 needs 64 lowercase hex characters, got %d characters %q", ref, len(hex), hex)
	}
	return r, nil
}
