package controllers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/cli"
	"github.com/immutable-release/operator/internal/testsops"
)

// createAgeKeySecret creates the key Secret Flux users know, sops-age, in namespace.
func createAgeKeySecret(g *WithT, namespace string, key testsops.Key) {
	g.Expect(k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "sops-age", Namespace: namespace},
		Data:       map[string][]byte{"age.agekey": key.Private},
	})).To(Succeed())
}

func withDecryption(o *v1alpha1.ImmutableRelease) {
	o.Spec.Decryption = &v1alpha1.Decryption{Provider: "sops", SecretRef: &meta.LocalObjectReference{Name: "sops-age"}}
}

// TestDecryptionSOPS: a SOPS-encrypted Secret in the repository is applied decrypted; an
// edit of it is reported by field name only; a revision encrypted for another key is
// refused with the file named, and nothing of it is applied.
func TestDecryptionSOPS(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	key := testsops.NewKey(t)
	createAgeKeySecret(g, ns, key)
	files := sampleFiles("app", "ghcr.io/acme/web@"+digestV1)
	files["app/secret.yaml"] = string(testsops.Encrypt(t, "secret.yaml", []byte(secretYAML(false)), key.Recipient))
	g.Expect(files["app/secret.yaml"]).NotTo(ContainSubstring(gitPassword))
	repo := newRepo(t, ns, files)
	obj := newRelease(t, ns, repo, "app", withDecryption, func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Drift = &v1alpha1.DriftSpec{Mode: v1alpha1.DriftReport}
	})
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	s := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "db"}, s)).To(Succeed())
	g.Expect(string(s.Data["password"])).To(Equal(gitPassword))
	g.Expect(string(s.Data["user"])).To(Equal("admin"))
	g.Expect(s.Data).NotTo(HaveKey("sops"))
	waitFor(t, obj, v1alpha1.DriftedCondition, metav1.ConditionFalse, v1alpha1.NoDriftReason, 10*time.Second)

	// kubectl edit of the decrypted Secret: reported by field name, no value anywhere.
	editSecret(g, ns)
	cur := waitFor(t, obj, v1alpha1.DriftedCondition, metav1.ConditionTrue, v1alpha1.SpecDriftReason, 10*time.Second)
	g.Expect(condition(cur, v1alpha1.DriftedCondition).Message).To(Equal("1 objects differ from revision " + cur.Status.LastAppliedRevision +
		": Secret/" + ns + "/db: data[password] differs from Git (value hidden), changed by kubectl-edit"))
	g.Eventually(func(g Gomega) {
		g.Expect(releaseEvents(g, obj, v1alpha1.SpecDriftReason)).To(ContainElement(ContainSubstring("Secret/" + ns + "/db: data[password] differs from Git (value hidden)")))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	expectReleaseHidesPassword(g, obj)
	applied := cur.Status.LastAppliedRevision

	// kubectl release diff decrypts with the key it is given and masks the values; without
	// it, the encrypted file is named.
	keyFile := filepath.Join(t.TempDir(), "keys.txt")
	g.Expect(os.WriteFile(keyFile, key.Private, 0o600)).To(Succeed())
	t.Setenv("SOPS_AGE_KEY_FILE", "")
	t.Setenv("SOPS_AGE_KEY", "")
	code, out, errOut := kubectlRelease("diff", "shop", "-n", ns, "--age-key-file", keyFile)
	g.Expect(code).To(Equal(cli.ExitDiffers), out+errOut)
	g.Expect(out).To(ContainSubstring("Secret/" + ns + "/db configured: data[password]\n"))
	g.Expect(out).To(ContainSubstring("-  password: (value hidden, before)\n+  password: (value hidden, after)\n"))
	expectNoPassword(g, out+errOut)
	code, out, errOut = kubectlRelease("diff", "shop", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitFailed))
	g.Expect(out).To(ContainSubstring("app/secret.yaml: the file is SOPS-encrypted"))
	expectNoPassword(g, out+errOut)

	// A new revision whose Secret is encrypted for another key, and which changes the
	// ConfigMap too: refused whole, the file named, the ConfigMap left as it was.
	other := testsops.NewKey(t)
	commit(t, repo, "Rotate the password", map[string]string{
		"app/secret.yaml":    string(testsops.Encrypt(t, "secret.yaml", []byte(secretYAML(false)), other.Recipient)),
		"app/configmap.yaml": strings.Replace(configMapYAML, "hello", "changed", 1),
	})
	reconcileNow(t, obj)
	cur = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.DecryptionFailedReason, time.Minute)
	msg := condition(cur, meta.ReadyCondition).Message
	g.Expect(msg).To(ContainSubstring("app/secret.yaml: no age key of the key Secret decrypts the file"))
	g.Expect(msg).To(ContainSubstring("nothing was applied"))
	g.Expect(condition(cur, meta.StalledCondition).Status).To(Equal(metav1.ConditionTrue))
	g.Expect(cur.Status.LastAppliedRevision).To(Equal(applied))
	cm := &corev1.ConfigMap{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-settings"}, cm)).To(Succeed())
	g.Expect(cm.Data["greeting"]).To(Equal("hello"))
	expectReleaseHidesPassword(g, obj)
	checkKstatus(t, obj, status.FailedStatus)
}

// TestDecryptionRefused: an encrypted file without spec.decryption is never applied as
// ciphertext; a key Secret that exists only in another tenant's namespace cannot be used
// (the reference is local), and the missing Secret is retried until it exists.
func TestDecryptionRefused(t *testing.T) {
	g := NewWithT(t)
	key := testsops.NewKey(t)
	tenantA, tenantB := newNamespace(t), newNamespace(t)
	createAgeKeySecret(g, tenantA, key)
	files := sampleFiles("app", "ghcr.io/acme/web@"+digestV1)
	files["app/secret.yaml"] = string(testsops.Encrypt(t, "secret.yaml", []byte(secretYAML(false)), key.Recipient))

	// Without spec.decryption.
	repo := newRepo(t, tenantA, files)
	plain := newRelease(t, tenantA, repo, "app")
	cur := waitFor(t, plain, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.DecryptionFailedReason, time.Minute)
	g.Expect(condition(cur, meta.ReadyCondition).Message).To(ContainSubstring("app/secret.yaml: the file is SOPS-encrypted and the release sets no spec.decryption"))
	g.Expect(condition(cur, meta.StalledCondition).Status).To(Equal(metav1.ConditionTrue))
	expectNothingApplied(g, tenantA)
	checkKstatus(t, plain, status.FailedStatus)

	// Tenant B names tenant A's key Secret: it is looked for in B's namespace only.
	repoB := newRepo(t, tenantB, files)
	obj := newRelease(t, tenantB, repoB, "app", withDecryption)
	cur = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.DecryptionFailedReason, time.Minute)
	g.Expect(condition(cur, meta.ReadyCondition).Message).To(ContainSubstring(`secret "sops-age" not found in namespace "` + tenantB + `"`))
	g.Expect(condition(cur, meta.StalledCondition).Status).NotTo(Equal(metav1.ConditionTrue))
	expectNothingApplied(g, tenantB)

	// A key Secret without an .agekey entry waits for a fix.
	g.Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sops-age", Namespace: tenantB},
		Data: map[string][]byte{"identity": key.Private}})).To(Succeed())
	cur = waitFor(t, obj, meta.StalledCondition, metav1.ConditionTrue, v1alpha1.DecryptionFailedReason, time.Minute)
	g.Expect(condition(cur, meta.ReadyCondition).Message).To(ContainSubstring(`secret "sops-age" holds no age key`))
	expectNothingApplied(g, tenantB)

	// With the key under age.agekey the revision applies.
	s := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: tenantB, Name: "sops-age"}, s)).To(Succeed())
	s.Data = map[string][]byte{"age.agekey": key.Private}
	g.Expect(k8s.Update(ctx, s)).To(Succeed())
	reconcileNow(t, obj)
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: tenantB, Name: "db"}, s)).To(Succeed())
	g.Expect(string(s.Data["password"])).To(Equal(gitPassword))
	// Tenant A's release still has no keys, and never sees what B's decrypted.
	reconcileNow(t, plain)
	waitFor(t, plain, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.DecryptionFailedReason, time.Minute)
	expectNothingApplied(g, tenantA)
	expectReleaseHidesPassword(g, plain)
	expectReleaseHidesPassword(g, obj)
	checkKstatus(t, obj, status.CurrentStatus)
}

// expectNothingApplied fails when any object of the sample application exists in namespace.
func expectNothingApplied(g *WithT, namespace string) {
	g.ExpectWithOffset(1, apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "web"}, &appsv1.Deployment{}))).To(BeTrue())
	g.ExpectWithOffset(1, apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "db"}, &corev1.Secret{}))).To(BeTrue())
	g.ExpectWithOffset(1, apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "web-settings"}, &corev1.ConfigMap{}))).To(BeTrue())
}
