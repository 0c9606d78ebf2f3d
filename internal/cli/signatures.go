package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/spf13/cobra"

	"github.com/immutable-release/operator/internal/manifest"
	imgverify "github.com/immutable-release/operator/internal/verify"
)

// signatureFlags are verify's --signatures options: the policy of spec.verify, given on
// the command line, and the trust material the operator's admin gives it.
type signatureFlags struct {
	enabled          bool
	keys             []string
	issuer, identity string
	attestationType  string
	builderID        string
	sourceRepository string
	trustedRoot      string
	dockerConfig     string
}

func (f *signatureFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.enabled, "signatures", false, "Also verify every image's Sigstore signature in its registry, as spec.verify does.")
	fl.StringArrayVar(&f.keys, "key", nil, "A PEM public key file (cosign.pub) whose signatures are accepted; repeatable.")
	fl.StringVar(&f.issuer, "certificate-oidc-issuer", "", "Keyless: a regular expression on the OIDC issuer accepted (with --certificate-identity).")
	fl.StringVar(&f.identity, "certificate-identity", "", "Keyless: a regular expression on the certificate subject accepted (with --certificate-oidc-issuer).")
	fl.StringVar(&f.attestationType, "attestation-type", "", "An attestation every image must carry, such as https://slsa.dev/provenance/v1.")
	fl.StringVar(&f.builderID, "attestation-builder-id", "", "A regular expression the provenance's builder ID must match.")
	fl.StringVar(&f.sourceRepository, "attestation-source-repository", "", "A regular expression the provenance's source repository must match.")
	fl.StringVar(&f.trustedRoot, "trusted-root", "", "A Sigstore trusted_root.json for keyless signatures (a private Sigstore); without it, the public Sigstore's, from its TUF repository.")
	fl.StringVar(&f.dockerConfig, "registry-config", "", "A docker config JSON with registry credentials (default: $DOCKER_CONFIG/config.json or ~/.docker/config.json, when it exists).")
}

// signatureResult is one image's verification, for -o json.
type signatureResult struct {
	Image          string `json:"image"`
	Reason         string `json:"reason,omitempty"`
	Message        string `json:"message,omitempty"`
	Issuer         string `json:"issuer,omitempty"`
	Subject        string `json:"subject,omitempty"`
	KeyFingerprint string `json:"keyFingerprint,omitempty"`
	LogIndex       *int64 `json:"logIndex,omitempty"`
	SourceCommit   string `json:"sourceCommit,omitempty"`
}

// policy is the requirement the flags describe.
func (f *signatureFlags) policy() (imgverify.Policy, error) {
	req := imgverify.Requirement{Source: "the command line"}
	for _, path := range f.keys {
		b, err := os.ReadFile(path)
		if err != nil {
			return imgverify.Policy{}, usageError{fmt.Errorf("--key: %w", err)}
		}
		req.Keys = append(req.Keys, b)
	}
	if (f.issuer == "") != (f.identity == "") {
		return imgverify.Policy{}, usageError{errors.New("--certificate-oidc-issuer and --certificate-identity go together")}
	}
	if f.issuer != "" {
		req.Identities = []imgverify.Identity{{Issuer: f.issuer, Subject: f.identity}}
	}
	if f.attestationType != "" {
		req.Attestations = []imgverify.Attestation{{PredicateType: f.attestationType, BuilderID: f.builderID, SourceRepository: f.sourceRepository}}
	} else if f.builderID != "" || f.sourceRepository != "" {
		return imgverify.Policy{}, usageError{errors.New("--attestation-builder-id and --attestation-source-repository need --attestation-type")}
	}
	p := imgverify.Policy{Requirements: []imgverify.Requirement{req}}
	if err := imgverify.CheckPolicy(p); err != nil {
		return p, usageError{fmt.Errorf("%w (give --key, or --certificate-oidc-issuer and --certificate-identity)", err)}
	}
	return p, nil
}

// keychain reads the registry credentials, if any.
func (f *signatureFlags) keychain() (authn.Keychain, error) {
	path := f.dockerConfig
	if path == "" {
		dir := os.Getenv("DOCKER_CONFIG")
		if dir == "" {
			home, _ := os.UserHomeDir()
			dir = filepath.Join(home, ".docker")
		}
		path = filepath.Join(dir, "config.json")
		if _, err := os.Stat(path); err != nil {
			return nil, nil
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--registry-config: %w", err)
	}
	return imgverify.Keychain(b)
}

// check verifies the distinct images of the objects.
func (f *signatureFlags) check(ctx context.Context, objects []manifest.Object) ([]signatureResult, error) {
	p, err := f.policy()
	if err != nil {
		return nil, err
	}
	kc, err := f.keychain()
	if err != nil {
		return nil, err
	}
	v := &imgverify.Verifier{}
	if len(p.Requirements[0].Identities) > 0 {
		if f.trustedRoot != "" {
			if v.Trusted, err = imgverify.LoadTrustedRoot(f.trustedRoot); err != nil {
				return nil, err
			}
		} else {
			v.RequireSCT = true
			if v.Trusted, err = imgverify.PublicTrustedRoot(""); err != nil {
				return nil, err
			}
		}
	}
	seen := map[string]bool{}
	var images []string
	for _, obj := range objects {
		for _, c := range manifest.Containers(obj.Unstructured) {
			if !seen[c.Image] {
				seen[c.Image] = true
				images = append(images, c.Image)
			}
		}
	}
	sort.Strings(images)
	var out []signatureResult
	for _, image := range images {
		res := signatureResult{Image: image}
		verdict, err := v.Verify(ctx, image, p, kc)
		var refused *imgverify.Error
		var unavailable *imgverify.UnavailableError
		switch {
		case errors.As(err, &refused):
			res.Reason, res.Message = string(refused.Reason), refused.Error()
		case errors.As(err, &unavailable):
			res.Reason, res.Message = "VerificationUnavailable", unavailable.Error()
		case err != nil:
			return nil, err
		default:
			res.Issuer, res.Subject, res.KeyFingerprint = verdict.Issuer, verdict.Subject, verdict.KeyFingerprint
			res.LogIndex, res.SourceCommit = verdict.LogIndex, verdict.SourceCommit
		}
		out = append(out, res)
	}
	return out, nil
}

// printSignatures prints each image's verification.
func (o *options) printSignatures(results []signatureResult) {
	for _, r := range results {
		if r.Reason != "" {
			fmt.Fprintf(o.out, "%s %s: %s\n", o.paint(red, "✘"), r.Reason, r.Message)
			continue
		}
		fmt.Fprintf(o.out, "%s %s: %s\n", o.paint(green, "✔"), r.Image, describeSigner(r.Issuer, r.Subject, r.KeyFingerprint, r.LogIndex, r.SourceCommit))
	}
}

// describeSigner says who signed an image: "signed by <subject> (<issuer>), log index N,
// built from commit C" or "signed with key sha256:...".
func describeSigner(issuer, subject, fingerprint string, logIndex *int64, commit string) string {
	var parts []string
	switch {
	case subject != "":
		parts = append(parts, fmt.Sprintf("signed by %s (%s)", subject, issuer))
	case fingerprint != "":
		parts = append(parts, "signed with key "+fingerprint)
	}
	if logIndex != nil {
		parts = append(parts, fmt.Sprintf("log index %d", *logIndex))
	}
	if commit != "" {
		parts = append(parts, "built from commit "+commit)
	}
	return strings.Join(parts, ", ")
}
