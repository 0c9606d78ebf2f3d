package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/verify"
)

// VerificationOptions say how images are verified before they are applied.
type VerificationOptions struct {
	// Cache verifies images and keeps the verdicts, for every release of the manager
	// (nil: one that trusts keys only, without a Sigstore trusted root).
	Cache *verify.Cache
	// Platform is the admin's policy (--image-policy): what every release of the
	// namespaces it selects must meet, whatever its own spec.verify says.
	Platform *verify.PlatformPolicy
	// Patience is how long a worker waits for one image's verification before it leaves it
	// to the background (defaultVerifyPatience when zero): a registry that never answers
	// costs its own releases a moment of a worker per attempt, not the registry timeout.
	Patience time.Duration
}

// defaultVerifyPatience is Patience's default, as defaultGitPatience is Git's.
const defaultVerifyPatience = 2 * time.Second

// verifyPoll is how soon a release left waiting for a verification looks again.
const verifyPoll = 2 * time.Second

// verifyWaiting is the outcome of a reconcile whose image verification has not ended yet:
// the release is Reconciling, not failed, and looks again shortly.
type verifyWaiting struct {
	image string
}

func (w *verifyWaiting) Error() string {
	return fmt.Sprintf("verifying %s: its registry has not answered yet; the verification goes on in the background", w.image)
}

// isVerifying says whether err is a reconcile left waiting for a verification.
func isVerifying(err error) bool {
	var w *verifyWaiting
	return errors.As(err, &w)
}

// verifyImages verifies every pinned image of the revision before anything of it is
// applied, when the release's policy (spec.verify and the platform's) asks for any. One
// image refused refuses the revision; what ran before stays. Nothing is verified when
// nothing is to be applied: the running revision was verified when it was.
func (r *ImmutableReleaseReconciler) verifyImages(ctx context.Context, s *scope) error {
	obj := s.obj
	if settled(obj) && obj.Status.LastAppliedRevision == s.revision {
		return nil
	}
	policy, creds, err := r.imagePolicy(ctx, obj)
	if err != nil || policy.Empty() {
		return err
	}
	verdicts := map[string]verify.Verdict{}
	for _, im := range workloadImages(s.objects) {
		if _, ok := verdicts[im.Image]; ok {
			continue
		}
		verifyImage := r.Options.Verification.Cache.Verify
		if s.asked {
			// A person asked (perhaps right after signing the image): no kept refusal.
			verifyImage = r.Options.Verification.Cache.Recheck
		}
		patience := r.Options.Verification.Patience
		if patience <= 0 {
			patience = defaultVerifyPatience
		}
		vctx, cancel := context.WithTimeout(ctx, patience)
		v, err := verifyImage(vctx, im.Image, policy, creds)
		waited := vctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err != nil && waited {
			return &verifyWaiting{image: im.Image}
		}
		var refused *verify.Error
		var unavailable *verify.UnavailableError
		switch {
		case errors.As(err, &refused):
			return stall(v1alpha1.ImageVerificationFailedReason, fmt.Errorf("revision %s: %s container %s: %w; nothing was applied", s.revision, im.Workload, im.Container, err))
		case errors.Is(err, verify.ErrInvalidPolicy):
			return stall(v1alpha1.InvalidVerificationPolicyReason, fmt.Errorf("%w; nothing was applied", err))
		case errors.As(err, &unavailable):
			return retry(v1alpha1.VerificationUnavailableReason, fmt.Errorf("revision %s: %s container %s: %w; nothing was applied, retrying", s.revision, im.Workload, im.Container, err))
		case err != nil:
			return retry(v1alpha1.VerificationUnavailableReason, fmt.Errorf("revision %s: verifying %s: %w; nothing was applied, retrying", s.revision, im.Image, err))
		}
		verdicts[im.Image] = v
	}
	s.verdicts = verdicts
	return nil
}

// imagePolicy is what the release's images must meet: the platform admin's requirements
// for its namespace and its own spec.verify, and the registry credentials to read the
// signatures with. Secrets are read from the release's own namespace only, uncached.
func (r *ImmutableReleaseReconciler) imagePolicy(ctx context.Context, obj *v1alpha1.ImmutableRelease) (verify.Policy, verify.Credentials, error) {
	var p verify.Policy
	var creds verify.Credentials
	if spec := obj.Spec.Verify; spec != nil {
		req := verify.Requirement{Source: "spec.verify"}
		if spec.SecretRef != nil {
			keys, err := r.verificationKeys(ctx, obj, spec.SecretRef.Name)
			if err != nil {
				return p, creds, err
			}
			req.Keys = keys
		}
		for _, id := range spec.MatchOIDCIdentity {
			req.Identities = append(req.Identities, verify.Identity{Issuer: id.Issuer, Subject: id.Subject})
		}
		for _, a := range spec.Attestations {
			req.Attestations = append(req.Attestations, verify.Attestation{PredicateType: a.PredicateType, BuilderID: a.BuilderID, SourceRepository: a.SourceRepository})
		}
		p.Requirements = append(p.Requirements, req)
	}
	if platform := r.Options.Verification.Platform; !platform.Empty() {
		ns := &corev1.Namespace{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Name: obj.Namespace}, ns); err != nil {
			return p, creds, retry(v1alpha1.VerificationUnavailableReason, fmt.Errorf("reading namespace %q for the platform's image policy: %w", obj.Namespace, err))
		}
		p.Requirements = append(p.Requirements, platform.For(ns.Labels)...)
	}
	if p.Empty() || obj.Spec.RegistrySecretRef == nil {
		return p, creds, nil
	}
	name := obj.Spec.RegistrySecretRef.Name
	secret, err := r.verificationSecret(ctx, obj, name, "spec.registrySecretRef", "a Secret of type kubernetes.io/dockerconfigjson")
	if err != nil {
		return p, creds, err
	}
	data, ok := secret.Data[corev1.DockerConfigJsonKey]
	if !ok {
		return p, creds, retry(v1alpha1.InvalidVerificationPolicyReason, fmt.Errorf("secret %q of spec.registrySecretRef has no %s entry (it has: %s)", name, corev1.DockerConfigJsonKey, entryNames(secret)))
	}
	if creds.Keychain, err = verify.Keychain(data); err != nil {
		return p, creds, retry(v1alpha1.InvalidVerificationPolicyReason, fmt.Errorf("secret %q of spec.registrySecretRef: %w", name, err))
	}
	sum := sha256.Sum256(data)
	creds.ID = hex.EncodeToString(sum[:])
	return p, creds, nil
}

// verificationKeys reads the public keys of spec.verify.secretRef: its .pub entries, in
// the order of their names.
func (r *ImmutableReleaseReconciler) verificationKeys(ctx context.Context, obj *v1alpha1.ImmutableRelease, name string) ([][]byte, error) {
	secret, err := r.verificationSecret(ctx, obj, name, "spec.verify.secretRef", "the public keys, each under an entry whose name ends in .pub")
	if err != nil {
		return nil, err
	}
	var names []string
	for k := range secret.Data {
		if strings.HasSuffix(k, ".pub") {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return nil, retry(v1alpha1.InvalidVerificationPolicyReason, fmt.Errorf("secret %q of spec.verify.secretRef has no entry ending in .pub (it has: %s)", name, entryNames(secret)))
	}
	if len(names) > verify.MaxKeys {
		return nil, stall(v1alpha1.InvalidVerificationPolicyReason, fmt.Errorf("secret %q of spec.verify.secretRef has %d .pub entries, at most %d", name, len(names), verify.MaxKeys))
	}
	sort.Strings(names)
	keys := make([][]byte, len(names))
	for i, k := range names {
		keys[i] = secret.Data[k]
	}
	return keys, nil
}

// verificationSecret reads a Secret of the release's namespace; a missing one is retried.
func (r *ImmutableReleaseReconciler) verificationSecret(ctx context.Context, obj *v1alpha1.ImmutableRelease, name, field, holding string) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: name}, secret)
	switch {
	case apierrors.IsNotFound(err):
		return nil, retry(v1alpha1.InvalidVerificationPolicyReason, fmt.Errorf("secret %q of %s not found in namespace %q: create it with %s; nothing was applied", name, field, obj.Namespace, holding))
	case err != nil:
		return nil, retry(v1alpha1.InvalidVerificationPolicyReason, fmt.Errorf("reading secret %q of %s: %w", name, field, err))
	}
	return secret, nil
}

// entryNames lists a Secret's entry names, never its values.
func entryNames(s *corev1.Secret) string {
	var names []string
	for k := range s.Data {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "no entries"
	}
	return strings.Join(names, ", ")
}

// withVerifications records each image's verdict in its status entry.
func withVerifications(images []v1alpha1.WorkloadImage, verdicts map[string]verify.Verdict) []v1alpha1.WorkloadImage {
	for i := range images {
		if v, ok := verdicts[images[i].Image]; ok {
			images[i].Verification = imageVerification(v)
		}
	}
	return images
}

func imageVerification(v verify.Verdict) *v1alpha1.ImageVerification {
	return &v1alpha1.ImageVerification{
		Issuer: v.Issuer, Subject: v.Subject, KeyFingerprint: v.KeyFingerprint,
		LogIndex: v.LogIndex, SourceCommit: v.SourceCommit, VerifiedAt: metav1.NewTime(v.VerifiedAt),
	}
}

// verifiedImages are the verifications of the images' distinct digests, for the history.
func verifiedImages(images []v1alpha1.WorkloadImage) []v1alpha1.VerifiedImage {
	var out []v1alpha1.VerifiedImage
	seen := map[string]bool{}
	for _, im := range images {
		_, digest, _ := strings.Cut(im.Image, "@")
		if im.Verification == nil || seen[digest] || len(out) == v1alpha1.MaxVerifiedImages {
			continue
		}
		seen[digest] = true
		out = append(out, v1alpha1.VerifiedImage{Digest: digest, ImageVerification: *im.Verification})
	}
	return out
}
