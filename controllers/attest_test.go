package controllers

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/attest"
	"github.com/immutable-release/operator/internal/cli"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/testgit"
)

// The suite's manager signs with the Secret attestKeySecret of the operator's namespace,
// and names its cluster testClusterName.
const (
	attestKeySecret = "attestation-key"
	testClusterName = "test-cluster"
)

// newAttestationKey returns a new Ed25519 key as the key Secret holds it.
func newAttestationKey(t *testing.T) []byte {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// notesOf is the note git shows on commit, fetched fresh into the working clone.
func notesOf(t *testing.T, repo *testgit.Repo, commit string) string {
	t.Helper()
	g := NewWithT(t)
	g.Expect(repo.Git("fetch", "-q", "origin", "+"+v1alpha1.DefaultNotesRef+":"+v1alpha1.DefaultNotesRef)).To(Succeed())
	out, err := repo.Output("notes", "--ref=immutable-release", "show", commit)
	g.Expect(err).NotTo(HaveOccurred())
	return out
}

// TestAttestation: a release with spec.attest whose operator has no key yet works all the
// same and says why nothing is recorded; once the key Secret exists, the healthy revision
// is recorded as a signed note on its commit, which plain git shows and the public key
// verifies; the next revision replaces it, and the first record is re-signed with
// replacedAt. A Secret of the same name in the tenant's namespace is never used.
func TestAttestation(t *testing.T) {
	g := NewWithT(t)
	operatorNS := operator.Options.Tenancy.Operator.Namespace
	g.Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNS}}))).To(Succeed())
	keySecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: attestKeySecret, Namespace: operatorNS}}
	g.Expect(client.IgnoreNotFound(k8s.Delete(ctx, keySecret))).To(Succeed())

	ns := newNamespace(t)
	// The tenant's own Secret of the same name, with a key of its choosing.
	tenantKey := newAttestationKey(t)
	g.Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: attestKeySecret, Namespace: ns},
		Data: map[string][]byte{attest.PrivateKeyField: tenantKey}})).To(Succeed())
	repo := newRepo(t, ns, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	first, err := repo.Head()
	g.Expect(err).NotTo(HaveOccurred())
	obj := newRelease(t, ns, repo, "app", func(o *v1alpha1.ImmutableRelease) { o.Spec.Attest = &v1alpha1.AttestSpec{} })

	// No key: Ready all the same, and Attested says what to do.
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	out := waitFor(t, obj, v1alpha1.AttestedCondition, metav1.ConditionFalse, v1alpha1.AttestationKeyInvalidReason, 10*time.Second)
	g.Expect(condition(out, v1alpha1.AttestedCondition).Message).To(And(ContainSubstring(attestKeySecret), ContainSubstring(operatorNS), ContainSubstring(attest.PrivateKeyField)))
	checkKstatus(t, out, status.CurrentStatus)
	g.Eventually(func(g Gomega) {
		g.Expect(typedEvents(g, obj, v1alpha1.AttestationKeyInvalidReason)).NotTo(BeEmpty())
	}, 5*time.Second).Should(Succeed())

	// A key that does not parse is refused with its field named, never its bytes.
	keySecret.Data = map[string][]byte{attest.PrivateKeyField: []byte("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n")}
	g.Expect(k8s.Create(ctx, keySecret)).To(Succeed())
	reconcileNow(t, obj)
	g.Eventually(func(g Gomega) {
		c := condition(current(g, obj), v1alpha1.AttestedCondition)
		g.Expect(c.Reason).To(Equal(v1alpha1.AttestationKeyInvalidReason))
		g.Expect(c.Message).To(ContainSubstring(attest.PrivateKeyField))
		g.Expect(c.Message).NotTo(ContainSubstring("c2VjcmV0"))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())

	// The operator's key: the record is written at the next reconcile.
	priv := newAttestationKey(t)
	key, err := attest.ParsePrivateKey(priv)
	g.Expect(err).NotTo(HaveOccurred())
	keySecret.Data = map[string][]byte{attest.PrivateKeyField: priv, attest.PublicKeyField: key.Public().PEM()}
	g.Expect(k8s.Update(ctx, keySecret)).To(Succeed())
	reconcileNow(t, obj)
	out = waitFor(t, obj, v1alpha1.AttestedCondition, metav1.ConditionTrue, v1alpha1.AttestationRecordedReason, 10*time.Second)
	rec := out.Status.History[0].Attestation
	g.Expect(rec).NotTo(BeNil())
	g.Expect(rec.State).To(Equal(v1alpha1.AttestationHealthy))
	g.Expect(rec.NotesCommit).To(MatchRegexp("^[0-9a-f]{40}$"))
	checkKstatus(t, out, status.CurrentStatus)

	// Plain git shows it on the applied commit; the operator's public key verifies it, the
	// tenant's does not.
	note := notesOf(t, repo, first)
	entries, err := attest.Verify([]byte(note), key.Public())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(entries).To(HaveLen(1))
	g.Expect(entries[0].Err).NotTo(HaveOccurred())
	tenant, err := attest.ParsePrivateKey(tenantKey)
	g.Expect(err).NotTo(HaveOccurred())
	theirs, err := attest.Verify([]byte(note), tenant.Public())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(theirs[0].Err).To(HaveOccurred(), "signed with the tenant's key")

	st := entries[0].Statement
	d := st.Predicate
	g.Expect(d.Release).To(Equal(attest.Release{Namespace: ns, Name: obj.Name}))
	g.Expect(d.Cluster).To(Equal(testClusterName))
	g.Expect(d.Source.Commit).To(Equal(first))
	g.Expect(d.Source.Revision).To(Equal("main@sha1:" + first))
	g.Expect(d.Source.Author).To(Equal("Ada Developer <ada@example.com>"))
	g.Expect(d.Source.Path).To(Equal("app"))
	g.Expect(d.Images).To(ConsistOf(HaveField("Image", "ghcr.io/acme/web@"+digestV1)))
	g.Expect(d.Images[0].Signer).To(BeNil(), "no verification, so no signer is named")
	g.Expect(d.HealthyAt).NotTo(BeZero())
	g.Expect(d.AppliedAt).To(Equal(out.Status.History[0].AppliedAt.UTC()))
	g.Expect(d.ReplacedAt).To(BeNil())
	g.Expect(st.Subject).To(ContainElement(attest.Subject{Name: "ghcr.io/acme/web", Digest: map[string]string{"sha256": strings.TrimPrefix(digestV1, "sha256:")}}))
	g.Expect(st.Subject).To(ContainElement(HaveField("Name", "manifests:"+ns+"/"+obj.Name)))

	// A new revision: recorded on its own commit, and the first record re-signed with
	// replacedAt, in place of the first line.
	second := commit(t, repo, "Web 2", sampleFiles("app", "ghcr.io/acme/web@"+digestV2))
	reconcileNow(t, obj)
	g.Eventually(func(g Gomega) {
		cur := current(g, obj)
		g.Expect(cur.Status.History).To(HaveLen(2))
		g.Expect(cur.Status.History[0].Attestation).NotTo(BeNil())
		g.Expect(cur.Status.History[0].Attestation.State).To(Equal(v1alpha1.AttestationHealthy))
		g.Expect(cur.Status.History[1].Attestation.State).To(Equal(v1alpha1.AttestationReplaced))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	entries, err = attest.Verify([]byte(notesOf(t, repo, first)), key.Public())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(entries).To(HaveLen(1), "the re-signed record took the place of the first")
	g.Expect(entries[0].Err).NotTo(HaveOccurred())
	g.Expect(entries[0].Statement.Predicate.ReplacedBy).To(Equal("main@sha1:" + second))
	g.Expect(entries[0].Statement.Predicate.ReplacedAt).NotTo(BeNil())
	g.Expect(entries[0].Statement.Predicate.HealthyAt).To(Equal(d.HealthyAt), "the rest of the record is as signed first")
	entries, err = attest.Verify([]byte(notesOf(t, repo, second)), key.Public())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(entries).To(HaveLen(1))
	g.Expect(entries[0].Statement.Predicate.Images[0].Image).To(HaveSuffix(digestV2))
	checkKstatus(t, get(g, obj), status.CurrentStatus)

	// kubectl release audit lists both deployments, newest first, verified with the public
	// key from a file or from the operator's Secret.
	pubFile := filepath.Join(t.TempDir(), "attest.pub")
	g.Expect(os.WriteFile(pubFile, key.Public().PEM(), 0o600)).To(Succeed())
	code, stdout, stderr := kubectlRelease("audit", "shop", "-n", ns, "--public-key", pubFile)
	g.Expect(code).To(Equal(cli.ExitOK), stderr)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	g.Expect(lines).To(HaveLen(3), stdout)
	g.Expect(lines[0]).To(MatchRegexp(`APPLIED\s+HEALTHY\s+UNTIL\s+COMMIT\s+CLUSTER\s+AUTHOR\s+BUILT BY\s+SIGNATURE`))
	g.Expect(lines[1]).To(MatchRegexp(`running\s+` + second[:12] + `\s+` + testClusterName + `\s+Ada Developer <ada@example.com>\s+-\s+verified SHA256:`))
	g.Expect(lines[2]).To(ContainSubstring(first[:12]))
	g.Expect(lines[2]).NotTo(ContainSubstring("running"))
	code, stdout, stderr = kubectlRelease("audit", "shop", "-n", ns, "--key-secret", operatorNS+"/"+attestKeySecret, "-o", "json")
	g.Expect(code).To(Equal(cli.ExitOK), stderr)
	g.Expect(stdout).To(ContainSubstring(`"verified": true`))
	g.Expect(stdout).NotTo(ContainSubstring(`"verified": false`))
	// Only what ran since: both ran within the last hour; before a time in the future, none.
	_, stdout, _ = kubectlRelease("audit", "shop", "-n", ns, "--public-key", pubFile, "--since", "1h")
	g.Expect(strings.Count(stdout, "verified")).To(Equal(2))

	// The tenant's key verifies none of them: every record is FAILED, exit 1.
	tenantFile := filepath.Join(t.TempDir(), "tenant.pub")
	g.Expect(os.WriteFile(tenantFile, tenant.Public().PEM(), 0o600)).To(Succeed())
	code, stdout, _ = kubectlRelease("audit", "shop", "-n", ns, "--public-key", tenantFile)
	g.Expect(code).To(Equal(cli.ExitFailed))
	g.Expect(strings.Count(stdout, "FAILED: the signature does not verify")).To(Equal(2), stdout)

	// Someone who can push to the notes forges a record of this release, signed by a key
	// of their own: audit shows it FAILED beside the genuine ones.
	forged := entries[0].Statement
	forged.Predicate.Images[0].Image = "evil.example.com/miner@" + digestV1
	forgedLine, err := tenant.Sign(forged)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(repo.Git("notes", "--ref=immutable-release", "append", "-m", string(forgedLine), second)).To(Succeed())
	g.Expect(repo.Git("push", "-q", "origin", v1alpha1.DefaultNotesRef)).To(Succeed())
	code, stdout, _ = kubectlRelease("audit", "shop", "-n", ns, "--public-key", pubFile)
	g.Expect(code).To(Equal(cli.ExitFailed))
	g.Expect(strings.Count(stdout, "verified SHA256:")).To(Equal(2), stdout)
	g.Expect(strings.Count(stdout, "FAILED")).To(Equal(1), stdout)
	code, _, stderr = kubectlRelease("audit", "shop", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitUsage), stderr)

	// A manual rollback to the first revision: the revert is recorded, the second
	// revision's record signed again with rolledBackAt, and the forgery beside it kept.
	code, _, stderr = kubectlRelease("rollback", "shop", "-n", ns, "--to", first[:8], "--timeout", "1m")
	g.Expect(code).To(Equal(cli.ExitOK), stderr)
	var revertedBy string
	g.Eventually(func(g Gomega) {
		cur := current(g, obj)
		var states []v1alpha1.AttestationState
		for _, h := range cur.Status.History {
			g.Expect(h.Attestation).NotTo(BeNil(), h.Revision)
			states = append(states, h.Attestation.State)
		}
		g.Expect(states).To(Equal([]v1alpha1.AttestationState{v1alpha1.AttestationHealthy, v1alpha1.AttestationRolledBack, v1alpha1.AttestationReplaced}))
		revertedBy = cur.Status.History[1].RevertedBy
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	entries, err = attest.Verify([]byte(notesOf(t, repo, second)), key.Public())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(entries).To(HaveLen(2))
	g.Expect(entries[0].Err).To(HaveOccurred(), "the forgery, kept")
	g.Expect(entries[1].Err).NotTo(HaveOccurred())
	g.Expect(entries[1].Statement.Predicate.RolledBackAt).NotTo(BeNil())
	g.Expect(entries[1].Statement.Predicate.RevertedBy).To(Equal(revertedBy))
	code, stdout, _ = kubectlRelease("audit", "shop", "-n", ns, "--public-key", pubFile)
	g.Expect(code).To(Equal(cli.ExitFailed))
	g.Expect(strings.Count(stdout, "verified SHA256:")).To(Equal(3), stdout)
	g.Expect(strings.Count(stdout, "FAILED")).To(Equal(1), stdout)
	g.Expect(stdout).To(ContainSubstring("(rolled back)"))
	t.Logf("kubectl release audit:\n%s", stdout)
	code, stdout, _ = kubectlRelease("history", "shop", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK))
	g.Expect(stdout).To(MatchRegexp(`REVISION\s+RESULT\s+RECORD\s+APPLIED`))
	g.Expect(stdout).To(MatchRegexp(`main@` + second[:7] + `\s+Healthy\s+RolledBack\s`))
	g.Expect(stdout).To(MatchRegexp(`main@` + first[:7] + `\s+Healthy\s+Replaced\s`))
	checkKstatus(t, get(g, obj), status.CurrentStatus)
}

// TestAttestationHostileNote: someone who can push to the notes reference puts a note over
// the size limit on the commit before the release records it. The record is refused with
// AttestationFailed, nothing else is read of the note, and the release is Ready all the
// same.
func TestAttestationHostileNote(t *testing.T) {
	g := NewWithT(t)
	operatorNS := operator.Options.Tenancy.Operator.Namespace
	g.Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNS}}))).To(Succeed())
	keySecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: attestKeySecret, Namespace: operatorNS},
		Data: map[string][]byte{attest.PrivateKeyField: newAttestationKey(t)}}
	if err := k8s.Create(ctx, keySecret); apierrors.IsAlreadyExists(err) {
		g.Expect(k8s.Update(ctx, keySecret)).To(Succeed())
	} else {
		g.Expect(err).NotTo(HaveOccurred())
	}

	ns := newNamespace(t)
	repo := newRepo(t, ns, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	head, err := repo.Head()
	g.Expect(err).NotTo(HaveOccurred())
	huge := filepath.Join(t.TempDir(), "huge")
	g.Expect(os.WriteFile(huge, []byte(strings.Repeat("x", git.MaxNoteBytes+1)), 0o600)).To(Succeed())
	g.Expect(repo.Git("notes", "--ref=immutable-release", "add", "-F", huge, head)).To(Succeed())
	g.Expect(repo.Git("push", "-q", "origin", v1alpha1.DefaultNotesRef)).To(Succeed())

	obj := newRelease(t, ns, repo, "app", func(o *v1alpha1.ImmutableRelease) { o.Spec.Attest = &v1alpha1.AttestSpec{} })
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	out := waitFor(t, obj, v1alpha1.AttestedCondition, metav1.ConditionFalse, v1alpha1.AttestationFailedReason, 10*time.Second)
	g.Expect(condition(out, v1alpha1.AttestedCondition).Message).To(ContainSubstring("over the size limit"))
	g.Expect(out.Status.History[0].Attestation).NotTo(BeNil())
	g.Expect(out.Status.History[0].Attestation.State).To(BeEmpty())
	g.Expect(out.Status.History[0].Attestation.Message).To(ContainSubstring("over the size limit"))
	checkKstatus(t, out, status.CurrentStatus)
}

// current reads the release again, inside Eventually.
func current(g Gomega, obj *v1alpha1.ImmutableRelease) *v1alpha1.ImmutableRelease {
	out := &v1alpha1.ImmutableRelease{}
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(obj), out)).To(Succeed())
	return out
}

// TestAttestNotesRefValidated: a notes reference that would climb out of refs/notes/ is
// refused by the API server.
func TestAttestNotesRefValidated(t *testing.T) {
	ns := newNamespace(t)
	for _, ref := range []string{"refs/heads/main", "refs/notes/../heads/main", "refs/notes/a..b", "refs/notes/.hidden", "refs/notes/x.lock", "refs/notes/", "notes"} {
		obj := &v1alpha1.ImmutableRelease{
			ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns},
			Spec: v1alpha1.ImmutableReleaseSpec{
				Git:    v1alpha1.GitSource{URL: "https://git.example.com/acme/shop.git", Ref: v1alpha1.GitReference{Branch: "main"}},
				Attest: &v1alpha1.AttestSpec{NotesRef: ref},
			},
		}
		err := k8s.Create(ctx, obj)
		if !apierrors.IsInvalid(err) {
			t.Errorf("notesRef %q: want the API server to refuse it, got %v", ref, err)
			_ = k8s.Delete(ctx, obj)
		}
		if err := git.ValidateNotesRef(ref); err == nil {
			t.Errorf("notesRef %q: git.ValidateNotesRef accepts it", ref)
		}
	}
}
