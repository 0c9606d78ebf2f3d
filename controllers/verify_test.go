package controllers

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/attest"
	"github.com/immutable-release/operator/internal/verify"
	"github.com/immutable-release/operator/internal/verify/verifytest"
)

// platformKey is the key the suite's platform policy requires in the namespaces labelled
// platformLabel=signed.
var platformKey verifytest.Key

const platformLabel = "image-policy.test/platform"

// testVerificationOptions are the manager's: a verdict cache whose refusals last a moment
// (a signature pushed during a test is found at once), and the platform's policy.
func testVerificationOptions() (VerificationOptions, error) {
	var err error
	if platformKey, err = verifytest.GenerateKey(); err != nil {
		return VerificationOptions{}, err
	}
	pemKey := strings.ReplaceAll(strings.TrimSpace(string(platformKey.PublicPEM)), "\n", "\n    ")
	platform, err := verify.ParsePlatformPolicy([]byte(`policies:
- name: platform-signed
  namespaceSelector: {matchLabels: {` + platformLabel + `: signed}}
  keys:
  - |
    ` + pemKey + "\n"))
	if err != nil {
		return VerificationOptions{}, err
	}
	return VerificationOptions{
		Cache: &verify.Cache{Verifier: &verify.Verifier{Registry: verify.Registry{Timeout: 4 * time.Second}},
			FailureTTL: 100 * time.Millisecond, UnavailableTTL: 100 * time.Millisecond},
		Platform: platform,
	}, nil
}

// keySecret creates the Secret of spec.verify.secretRef with the key as cosign.pub.
func keySecret(t *testing.T, namespace, name string, key verifytest.Key) {
	t.Helper()
	NewWithT(t).Expect(k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Data:       map[string][]byte{"cosign.pub": key.PublicPEM},
	})).To(Succeed())
}

func verifiedBy(secret string) func(*v1alpha1.ImmutableRelease) {
	return func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Verify = &v1alpha1.VerifySpec{Provider: "cosign", SecretRef: &meta.LocalObjectReference{Name: secret}}
	}
}

// TestImageVerification: one image of three unsigned refuses the revision, nothing is
// applied and the reason names the image; once it is signed, the revision goes through and
// status records who signed each image.
func TestImageVerification(t *testing.T) {
	g := NewWithT(t)
	reg := verifytest.NewRegistry(t, nil)
	key := verifytest.NewKey(t)
	web, api, worker := reg.Push("acme/web"), reg.Push("acme/api"), reg.Push("acme/worker")
	key.SignImage(reg, web)
	key.SignImage(reg, api)
	ns := newNamespace(t)
	keySecret(t, ns, "cosign-keys", key)
	repo := newRepo(t, ns, map[string]string{
		"app/web.yaml":    deploymentYAML("web", web.String()),
		"app/api.yaml":    deploymentYAML("api", api.String()),
		"app/worker.yaml": deploymentYAML("worker", worker.String()),
	})
	obj := newRelease(t, ns, repo, "app", verifiedBy("cosign-keys"))

	out := waitFor(t, obj, meta.StalledCondition, metav1.ConditionTrue, v1alpha1.ImageVerificationFailedReason, 30*time.Second)
	msg := condition(out, meta.ReadyCondition).Message
	g.Expect(condition(out, meta.ReadyCondition).Reason).To(Equal(v1alpha1.ImageVerificationFailedReason))
	g.Expect(msg).To(ContainSubstring(worker.String()))
	g.Expect(msg).To(ContainSubstring("Deployment/" + ns + "/worker"))
	g.Expect(msg).To(ContainSubstring("no signature"))
	g.Expect(msg).To(ContainSubstring("nothing was applied"))
	checkKstatus(t, out, status.FailedStatus)
	assertNothingApplied(t, ns)
	g.Eventually(func(g Gomega) {
		g.Expect(releaseEvents(g, obj, v1alpha1.ImageVerificationFailedReason)).NotTo(BeEmpty())
	}, 10*time.Second).Should(Succeed())
	_, text, _ := kubectlRelease("status", obj.Name, "-n", ns)
	g.Expect(text).To(ContainSubstring(v1alpha1.ImageVerificationFailedReason))
	g.Expect(text).To(ContainSubstring(worker.DigestStr()))

	key.SignImage(reg, worker)
	reconcileNow(t, obj)
	out = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(out.Status.Images).To(HaveLen(3))
	pub := verify.Fingerprint(key.Private.Public())
	for _, im := range out.Status.Images {
		g.Expect(im.Verification).NotTo(BeNil(), im.Image)
		g.Expect(im.Verification.KeyFingerprint).To(Equal(pub))
		g.Expect(im.Verification.VerifiedAt.IsZero()).To(BeFalse())
	}
	g.Expect(out.Status.History[0].VerifiedImages).To(HaveLen(3))
	_, text, _ = kubectlRelease("status", obj.Name, "-n", ns)
	g.Expect(text).To(ContainSubstring("✔ signed with key " + pub))
}

// TestImageVerificationPlatformPolicy: the admin's policy binds the namespace's releases; a
// release that asks for less (its own key only), or for nothing, is refused until the
// platform's key signs too.
func TestImageVerificationPlatformPolicy(t *testing.T) {
	g := NewWithT(t)
	reg := verifytest.NewRegistry(t, nil)
	tenant := verifytest.NewKey(t)
	web := reg.Push("acme/web")
	tenant.SignImage(reg, web)
	ns := newNamespace(t)
	nsObj := &corev1.Namespace{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: ns}, nsObj)).To(Succeed())
	nsObj.Labels[platformLabel] = "signed"
	g.Expect(k8s.Update(ctx, nsObj)).To(Succeed())
	keySecret(t, ns, "cosign-keys", tenant)
	repo := newRepo(t, ns, sampleFiles("app", web.String()))
	obj := newRelease(t, ns, repo, "app", verifiedBy("cosign-keys"))

	out := waitFor(t, obj, meta.StalledCondition, metav1.ConditionTrue, v1alpha1.ImageVerificationFailedReason, 30*time.Second)
	g.Expect(condition(out, meta.ReadyCondition).Message).To(ContainSubstring("platform policy platform-signed"))
	assertNothingApplied(t, ns)

	// A release that leaves spec.verify out is held to the platform's policy all the same.
	optOut := newRelease(t, ns, repo, "app", named("opt-out"))
	out = waitFor(t, optOut, meta.StalledCondition, metav1.ConditionTrue, v1alpha1.ImageVerificationFailedReason, 30*time.Second)
	g.Expect(condition(out, meta.ReadyCondition).Message).To(ContainSubstring("platform policy platform-signed"))
	deleteRelease(t, optOut)
	assertNothingApplied(t, ns)

	platformKey.SignImage(reg, web)
	reconcileNow(t, obj)
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
}

// TestImageVerificationRegistryDown: a registry that does not answer leaves the release
// waiting (Progressing) without holding a worker, then is retried with its own reason,
// never a pass; once back, the revision goes through.
func TestImageVerificationRegistryDown(t *testing.T) {
	var down atomic.Bool
	reg := verifytest.NewRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if down.Load() {
				<-r.Context().Done() // silent until the client gives up
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	key := verifytest.NewKey(t)
	web := reg.Push("acme/web")
	key.SignImage(reg, web)
	down.Store(true)
	ns := newNamespace(t)
	keySecret(t, ns, "cosign-keys", key)
	repo := newRepo(t, ns, sampleFiles("app", web.String()))
	obj := newRelease(t, ns, repo, "app", verifiedBy("cosign-keys"))

	out := waitFor(t, obj, meta.ReadyCondition, metav1.ConditionUnknown, v1alpha1.ProgressingReason, 30*time.Second)
	g := NewWithT(t)
	g.Expect(condition(out, meta.ReadyCondition).Message).To(ContainSubstring("has not answered yet"))
	out = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.VerificationUnavailableReason, 30*time.Second)
	g.Expect(condition(out, meta.ReconcilingCondition).Status).To(Equal(metav1.ConditionTrue), "retried")
	g.Expect(condition(out, meta.ReadyCondition).Message).To(ContainSubstring(web.DigestStr()))
	assertNothingApplied(t, ns)
	down.Store(false)
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
}

// TestImageVerificationSecretsStayInNamespace: a release cannot point spec.verify.secretRef
// or spec.registrySecretRef at another namespace's Secret: the references are local names,
// a namespace written into them is dropped, and only the release's namespace is read.
func TestImageVerificationSecretsStayInNamespace(t *testing.T) {
	g := NewWithT(t)
	reg := verifytest.NewRegistry(t, nil)
	key := verifytest.NewKey(t)
	web := reg.Push("acme/web")
	key.SignImage(reg, web)
	victim := newNamespace(t)
	keySecret(t, victim, "cosign-keys", key)
	ns := newNamespace(t)
	repo := newRepo(t, ns, sampleFiles("app", web.String()))

	for _, field := range []string{"verify", "registrySecretRef"} {
		// Written as a tenant would, with kubectl: the release as unstructured data.
		obj := &v1alpha1.ImmutableRelease{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("shop"), Namespace: ns},
			Spec: v1alpha1.ImmutableReleaseSpec{Path: "app", Interval: metav1.Duration{Duration: time.Hour},
				Git: v1alpha1.GitSource{URL: repo.URL(), Ref: v1alpha1.GitReference{Branch: "main"}, SecretRef: &meta.LocalObjectReference{Name: "git-credentials"}}},
		}
		content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		g.Expect(err).NotTo(HaveOccurred())
		u := &unstructured.Unstructured{Object: content}
		u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind(v1alpha1.ImmutableReleaseKind))
		ref := map[string]any{"name": "cosign-keys", "namespace": victim}
		if field == "verify" {
			g.Expect(unstructured.SetNestedField(u.Object, map[string]any{"provider": "cosign", "secretRef": ref}, "spec", "verify")).To(Succeed())
		} else {
			g.Expect(unstructured.SetNestedField(u.Object, map[string]any{"provider": "cosign", "secretRef": map[string]any{"name": "mine"}}, "spec", "verify")).To(Succeed())
			g.Expect(unstructured.SetNestedField(u.Object, ref, "spec", "registrySecretRef")).To(Succeed())
			keySecret(t, ns, "mine", key)
		}
		g.Expect(k8s.Create(ctx, u)).To(Succeed())

		out := waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.InvalidVerificationPolicyReason, 30*time.Second)
		g.Expect(condition(out, meta.ReadyCondition).Message).To(ContainSubstring(`"cosign-keys"`))
		g.Expect(condition(out, meta.ReadyCondition).Message).To(ContainSubstring(`not found in namespace "` + ns + `"`))
		raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(out)
		g.Expect(err).NotTo(HaveOccurred())
		path := []string{"spec", "verify", "secretRef", "namespace"}
		if field != "verify" {
			path = []string{"spec", "registrySecretRef", "namespace"}
		}
		_, found, _ := unstructured.NestedString(raw, path...)
		g.Expect(found).To(BeFalse(), "the API server keeps no namespace in a local reference")
	}
	var ds appsv1.DeploymentList
	g.Expect(k8s.List(ctx, &ds, client.InNamespace(ns))).To(Succeed())
	g.Expect(ds.Items).To(BeEmpty(), "nothing was applied")
}

// TestVerifiedSignerRecorded: with spec.verify and spec.attest, the deployment record in
// Git names, for each image, the signer its verification before apply found.
func TestVerifiedSignerRecorded(t *testing.T) {
	g := NewWithT(t)
	reg := verifytest.NewRegistry(t, nil)
	key := verifytest.NewKey(t)
	web := reg.Push("acme/web")
	key.SignImage(reg, web)

	operatorNS := operator.Options.Tenancy.Operator.Namespace
	g.Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNS}}))).To(Succeed())
	priv := newAttestationKey(t)
	recordKey, err := attest.ParsePrivateKey(priv)
	g.Expect(err).NotTo(HaveOccurred())
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: attestKeySecret, Namespace: operatorNS}, Data: map[string][]byte{attest.PrivateKeyField: priv}}
	g.Expect(client.IgnoreNotFound(k8s.Delete(ctx, secret.DeepCopy()))).To(Succeed())
	g.Expect(k8s.Create(ctx, secret)).To(Succeed())
	defer func() { _ = k8s.Delete(ctx, secret) }()

	ns := newNamespace(t)
	keySecret(t, ns, "cosign-keys", key)
	repo := newRepo(t, ns, map[string]string{"app/web.yaml": deploymentYAML("web", web.String())})
	head, err := repo.Head()
	g.Expect(err).NotTo(HaveOccurred())
	obj := newRelease(t, ns, repo, "app", verifiedBy("cosign-keys"), func(o *v1alpha1.ImmutableRelease) { o.Spec.Attest = &v1alpha1.AttestSpec{} })
	waitFor(t, obj, v1alpha1.AttestedCondition, metav1.ConditionTrue, v1alpha1.AttestationRecordedReason, time.Minute)

	entries, err := attest.Verify([]byte(notesOf(t, repo, head)), recordKey.Public())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(entries).To(HaveLen(1))
	g.Expect(entries[0].Err).NotTo(HaveOccurred())
	images := entries[0].Statement.Predicate.Images
	g.Expect(images).To(HaveLen(1))
	g.Expect(images[0].Signer).NotTo(BeNil(), "the record names who signed the image")
	g.Expect(images[0].Signer.KeyFingerprint).To(Equal(verify.Fingerprint(key.Private.Public())))
}
