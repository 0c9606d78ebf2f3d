package controllers

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/fluxcd/pkg/apis/meta"
	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/testgit"
)

func branchHead(g Gomega, repo *testgit.Repo) string {
	out, err := repo.Output("ls-remote", "origin", "refs/heads/main")
	g.Expect(err).NotTo(HaveOccurred())
	return strings.Fields(out)[0]
}

// TestRevertConflict: while the broken revision rolls out, someone pushes a fix forward that
// changes the same line. The revert would conflict with it, so nothing is pushed: RolledBack
// is False with reason RevertConflict, naming the commits and the file, a Warning event says
// the same, and the revert is not tried again on the same head (status.revertConflict). The
// fix, the new head, is applied at once, and the conflict is forgotten.
func TestRevertConflict(t *testing.T) {
	g := NewWithT(t)
	// The timeout leaves the fix room to roll out on a loaded machine.
	ns, repo, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1, func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Timeout = &metav1.Duration{Duration: 15 * time.Second}
	})
	bad := commit(t, repo, "Release a broken build", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+deadDigest)})
	reconcileNow(t, obj)
	g.Eventually(func(g Gomega) {
		g.Expect(get(g.(*WithT), obj).Status.LastAppliedRevision).To(Equal("main@sha1:" + bad))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	reverts := operator.Git.Stats().Reverts
	// The interval is an hour: the operator has not seen this commit when it judges the
	// broken revision.
	fix := commit(t, repo, "Fix forward", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})

	cur := waitFor(t, obj, v1alpha1.RolledBackCondition, metav1.ConditionFalse, v1alpha1.RevertConflictReason, time.Minute)
	msg := condition(cur, v1alpha1.RolledBackCondition).Message
	g.Expect(msg).To(MatchRegexp(`^not reverting main@sha1:` + bad + `: reverting ` + bad[:7] + ` \("Release a broken build"\) conflicts with ` +
		fix[:7] + ` \("Fix forward"\) in app/deployment\.yaml \(line \d+ of the branch's version\); nothing was pushed\. ` +
		`Push a fix, or revert by hand \(git revert ` + bad[:7] + ` on main, resolve the conflicts under app, push\); the operator tries again when the branch changes$`))
	g.Eventually(func(g Gomega) {
		g.Expect(releaseEvents(g, obj, v1alpha1.RevertConflictReason)).To(ConsistOf(msg))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())

	// Nothing was pushed; the fix is applied and becomes healthy.
	cur = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, 2*time.Minute)
	g.Expect(cur.Status.LastAppliedRevision).To(Equal("main@sha1:" + fix))
	g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV2))
	g.Expect(branchHead(g, repo)).To(Equal(fix))
	g.Expect(cur.Status.History[1].Result).To(Equal(v1alpha1.ReleaseFailed))
	g.Expect(cur.Status.History[1].RevertedBy).To(BeEmpty())
	// One attempt: the revert was not retried on the same head.
	g.Expect(operator.Git.Stats().Reverts - reverts).To(Equal(int64(1)))
	// The conflict was kept in status until the branch moved on to the fix.
	g.Expect(cur.Status.RevertConflict).To(BeNil())
	checkKstatus(t, cur, status.CurrentStatus)
}

// signingKey returns an OpenPGP key, armored private (protected by passphrase) and public.
func signingKey(g Gomega, passphrase string) (private, public []byte) {
	e, err := openpgp.NewEntity("Release Bot", "", "bot@acme.example", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	g.Expect(err).NotTo(HaveOccurred())
	var pub, priv bytes.Buffer
	w, err := armor.Encode(&pub, openpgp.PublicKeyType, nil)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(e.Serialize(w)).To(Succeed())
	g.Expect(w.Close()).To(Succeed())
	g.Expect(e.EncryptPrivateKeys([]byte(passphrase), nil)).To(Succeed())
	w, err = armor.Encode(&priv, openpgp.PrivateKeyType, nil)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(e.SerializePrivateWithoutSigning(w, nil)).To(Succeed())
	g.Expect(w.Close()).To(Succeed())
	return priv.Bytes(), pub.Bytes()
}

// TestSignedRollback: with spec.rollback.signingKeySecretRef, a missing Secret or a key that
// cannot sign stops the rollback with a condition that says why, and nothing is pushed; once
// the Secret holds a good key, the revert is pushed signed by it.
func TestSignedRollback(t *testing.T) {
	g := NewWithT(t)
	ns, repo, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1, func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Timeout = &metav1.Duration{Duration: 3 * time.Second}
		o.Spec.Rollback = &v1alpha1.RollbackSpec{SigningKeySecretRef: &meta.LocalObjectReference{Name: "release-signing"}}
	})
	bad := commit(t, repo, "Release a broken build", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+deadDigest)})
	reconcileNow(t, obj)

	cur := waitFor(t, obj, v1alpha1.RolledBackCondition, metav1.ConditionFalse, v1alpha1.InvalidSigningKeyReason, time.Minute)
	g.Expect(condition(cur, v1alpha1.RolledBackCondition).Message).To(Equal("not reverting main@sha1:" + bad + `: signing key secret "release-signing" not found in namespace "` + ns +
		`": create it with the armored private key under git.asc (gpg --armor --export-secret-keys) and, if it has one, its passphrase under passphrase`))
	g.Expect(condition(cur, meta.ReadyCondition).Reason).To(Equal(v1alpha1.InvalidSigningKeyReason))
	g.Expect(branchHead(g, repo)).To(Equal(bad))

	private, public := signingKey(g, "s3cret")
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "release-signing"},
		Data: map[string][]byte{"git.asc": private, "passphrase": []byte("wrong")}}
	g.Expect(k8s.Create(ctx, secret)).To(Succeed())
	reconcileNow(t, obj)
	g.Eventually(func(g Gomega) {
		c := condition(get(g.(*WithT), obj), v1alpha1.RolledBackCondition)
		g.Expect(c.Reason).To(Equal(v1alpha1.InvalidSigningKeyReason))
		g.Expect(c.Message).To(ContainSubstring(`signing key secret "release-signing": unlocking the key with the passphrase`))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Expect(branchHead(g, repo)).To(Equal(bad))

	patch := client.MergeFrom(secret.DeepCopy())
	secret.Data["passphrase"] = []byte("s3cret")
	g.Expect(k8s.Patch(ctx, secret, patch)).To(Succeed())
	reconcileNow(t, obj)
	var revert string
	g.Eventually(func(g Gomega) {
		revert = branchHead(g, repo)
		g.Expect(revert).NotTo(Equal(bad))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())

	server, err := gogit.PlainOpen(filepath.Join(gitServer.Root(), repo.Name))
	g.Expect(err).NotTo(HaveOccurred())
	c, err := server.CommitObject(plumbing.NewHash(revert))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c.Message).To(HavePrefix("Revert \"Release a broken build\"\n"))
	_, err = c.Verify(string(public))
	g.Expect(err).NotTo(HaveOccurred())

	cur = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(condition(cur, v1alpha1.RolledBackCondition).Reason).To(Equal(v1alpha1.RevertPushedReason))
	g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV1))
	checkKstatus(t, cur, status.CurrentStatus)
}

// TestRevertFoundAfterCrash: the operator pushed its revert and died before it wrote the
// status. When it judges the failed revision again, it finds the revert on the branch,
// pushes nothing, and says that it found it (not "reverting 0 commits").
func TestRevertFoundAfterCrash(t *testing.T) {
	g := NewWithT(t)
	good := "ghcr.io/acme/web@" + digestV1
	ns, repo, obj := readyRelease(t, good, func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Second}
	})
	bad := commit(t, repo, "Release a broken build", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+deadDigest)})
	reconcileNow(t, obj)
	g.Eventually(func(g Gomega) {
		g.Expect(get(g.(*WithT), obj).Status.LastAppliedRevision).To(Equal("main@sha1:" + bad))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	// The revert as the operator pushes it; the interval is an hour, so the operator has
	// not listed it when the broken revision's timeout runs out.
	revert := commit(t, repo, "Revert \"Release a broken build\"\n\nThis reverts commit "+bad+".\n\nRelease: "+ns+"/shop\nFailed-Revision: "+bad+
		"\nReason: revision main@sha1:"+bad+" did not become healthy within 5s\n", map[string]string{"app/deployment.yaml": deploymentYAML("web", good)})
	reverts := operator.Git.Stats().Reverts

	found := "Found revert commit " + revert + " of main@sha1:" + bad + " already on main; nothing pushed"
	g.Eventually(func(g Gomega) {
		g.Expect(releaseEvents(g, obj, "RolledBack")).To(ConsistOf(found))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	cur := waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(operator.Git.Stats().Reverts - reverts).To(Equal(int64(1)))
	g.Expect(branchHead(g, repo)).To(Equal(revert), "nothing pushed")
	g.Expect(cur.Status.LastAppliedRevision).To(Equal("main@sha1:" + revert))
	g.Expect(condition(cur, v1alpha1.RolledBackCondition)).To(conditionIs(v1alpha1.RevertPushedReason, metav1.ConditionTrue))
	g.Expect(condition(cur, v1alpha1.RolledBackCondition).Message).To(Equal("revision main@sha1:" + bad + " reverted by commit " + revert + ", found already on main"))
	g.Expect(cur.Status.LastRollback.RevertCommit).To(Equal(revert))
	g.Expect(cur.Status.History[1].RevertedBy).To(Equal(revert))
	g.Expect(deploymentImage(g, ns, "web")).To(Equal(good))
	checkKstatus(t, cur, status.CurrentStatus)
}
