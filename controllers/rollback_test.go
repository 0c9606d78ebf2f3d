package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gstruct"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/cli"
)

// TestRollbackByRevert: a digest that never becomes ready fails its health check; the
// operator pushes a revert commit to the branch, applies it, and the Deployment is back on
// the previous digest and Available. The history reads: bad Failed, reverted by the revert
// commit, which is Healthy.
func TestRollbackByRevert(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	good := "ghcr.io/acme/web@" + digestV1
	repo := newRepo(t, ns, sampleFiles("app", good))
	g.Expect(repo.Write(map[string]string{"other-team/notes.yaml": "a: 1\n"})).To(Succeed())
	obj := newRelease(t, ns, repo, "app", func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Second}
		o.Spec.Rollback = &v1alpha1.RollbackSpec{Author: &v1alpha1.CommitAuthor{Name: "Release Bot", Email: "bot@acme.example"}}
	})
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)

	bad := commit(t, repo, "Release a broken build", map[string]string{
		"app/deployment.yaml":   deploymentYAML("web", "ghcr.io/acme/web@"+deadDigest),
		"other-team/notes.yaml": "a: 2\n",
	})
	reconcileNow(t, obj)
	start := time.Now()

	var revert string
	g.Eventually(func(g Gomega) {
		out, err := repo.Output("ls-remote", "origin", "refs/heads/main")
		g.Expect(err).NotTo(HaveOccurred())
		revert = strings.Fields(out)[0]
		g.Expect(revert).NotTo(Equal(bad))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	t.Logf("revert pushed %s after the bad commit was applied (timeout 5s)", time.Since(start).Round(time.Millisecond))

	g.Expect(repo.Git("pull", "-q", "--ff-only", "origin", "main")).To(Succeed())
	msg, err := repo.Output("log", "-1", "--format=%an <%ae>%n%B")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(msg).To(HavePrefix("Release Bot <bot@acme.example>\nRevert \"Release a broken build\"\n\nThis reverts commit " + bad + ".\n"))
	g.Expect(msg).To(ContainSubstring("Release: " + ns + "/shop\nFailed-Revision: " + bad + "\nReason: revision main@sha1:" + bad + " did not become healthy within 5s"))
	// Only the release's path went back; the other team's change stays.
	notes, err := repo.Output("show", "HEAD:other-team/notes.yaml")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(notes).To(Equal("a: 2\n"))

	cur := waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(cur.Status.LastAppliedRevision).To(Equal("main@sha1:" + revert))
	d := &appsv1.Deployment{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, d)).To(Succeed())
	g.Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(good))
	g.Expect(d.Status.AvailableReplicas).To(Equal(int32(2)))

	g.Expect(cur.Status.History[0].Revision).To(Equal("main@sha1:" + revert))
	g.Expect(cur.Status.History[0].Result).To(Equal(v1alpha1.ReleaseHealthy))
	g.Expect(cur.Status.History[1].Revision).To(Equal("main@sha1:" + bad))
	g.Expect(cur.Status.History[1].Result).To(Equal(v1alpha1.ReleaseFailed))
	g.Expect(cur.Status.History[1].RevertedBy).To(Equal(revert))
	g.Expect(cur.Status.LastRollback).NotTo(BeNil())
	g.Expect(cur.Status.LastRollback.FailedRevision).To(Equal("main@sha1:" + bad))
	g.Expect(cur.Status.LastRollback.RevertCommit).To(Equal(revert))
	g.Expect(condition(cur, v1alpha1.RolledBackCondition).Reason).To(Equal(v1alpha1.RevertPushedReason))

	// Exactly one revert on the branch.
	log, err := repo.Output("log", "--format=%s", "main")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(strings.Count(log, "Revert \"Release a broken build\"")).To(Equal(1))
	g.Consistently(func(g Gomega) {
		out, err := repo.Output("ls-remote", "origin", "refs/heads/main")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(strings.Fields(out)[0]).To(Equal(revert))
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())

	// The failed digest is quarantined: pushed again, it is refused and nothing changes.
	g.Expect(cur.Status.Quarantine).To(HaveLen(1))
	g.Expect(cur.Status.Quarantine[0]).To(gstruct.MatchFields(gstruct.IgnoreExtras, gstruct.Fields{
		"Workload": Equal("Deployment/" + ns + "/web"), "Container": Equal("app"),
		"Digest": Equal(deadDigest), "FailedRevision": Equal("main@sha1:" + bad),
	}))
	again := commit(t, repo, "Try the broken build again", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+deadDigest)})
	reconcileNow(t, obj)
	cur = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.QuarantinedDigestReason, 30*time.Second)
	g.Expect(condition(cur, meta.ReadyCondition).Message).To(ContainSubstring(
		"revision main@sha1:" + again + " brings back quarantined digests: Deployment/" + ns + "/web container app: " + deadDigest + " failed in revision main@sha1:" + bad))
	g.Expect(condition(cur, meta.StalledCondition).Status).To(Equal(metav1.ConditionTrue))
	g.Consistently(func(g Gomega) { g.Expect(deploymentImage(g, ns, "web")).To(Equal(good)) }, 2*time.Second, 200*time.Millisecond).Should(Succeed())

	code, out, _ := kubectlRelease("status", "shop", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK))
	g.Expect(out).To(ContainSubstring("Last rollback: main@sha1:" + bad + " failed, reverted by " + revert))
	g.Expect(out).To(ContainSubstring("Quarantined: Deployment/" + ns + "/web container app " + deadDigest))

	// A person lifts the quarantine: the revision is applied.
	code, out, _ = kubectlRelease("unquarantine", "shop", deadDigest, "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK), out)
	g.Eventually(func(g Gomega) {
		g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + deadDigest))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	// The status is written at the end of the reconcile that applied it.
	g.Eventually(func(g Gomega) {
		g.Expect(get(g.(*WithT), obj).Status.Quarantine).To(BeEmpty())
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
}

// TestManualRollback: kubectl release rollback --to reverts, in Git, the commits after that
// revision; then the older digests run. The reverted revision is not marked failed.
func TestManualRollback(t *testing.T) {
	g := NewWithT(t)
	ns, repo, obj := readyRelease(t, "ghcr.io/acme/web@"+digestV1)
	first, err := repo.Head()
	g.Expect(err).NotTo(HaveOccurred())
	second := commit(t, repo, "Release 2", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})
	code, _, _ := kubectlRelease("reconcile", "shop", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK))

	code, out, errOut := kubectlRelease("rollback", "shop", "-n", ns, "--to", first[:8], "--timeout", "1m")
	g.Expect(code).To(Equal(cli.ExitOK), errOut)
	g.Expect(out).To(MatchRegexp(`reverted in Git by commit [0-9a-f]{40}, now applied`))
	g.Eventually(func(g Gomega) {
		g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV1))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Expect(repo.Git("pull", "-q", "--ff-only", "origin", "main")).To(Succeed())
	msg, err := repo.Output("log", "-1", "--format=%B")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(msg).To(ContainSubstring("This reverts commit " + second + "."))
	g.Expect(msg).To(ContainSubstring("Reason: manual rollback to " + first + " requested"))

	cur := get(g, obj)
	g.Expect(cur.Status.History[1].Revision).To(Equal("main@sha1:" + second))
	g.Expect(cur.Status.History[1].Result).To(Equal(v1alpha1.ReleaseHealthy))
	g.Expect(cur.Status.History[1].RevertedBy).NotTo(BeEmpty())
	g.Expect(cur.Status.Quarantine).To(BeEmpty())

	code, _, errOut = kubectlRelease("rollback", "shop", "-n", ns, "--to", "nothing", "--timeout", "30s")
	g.Expect(code).To(Equal(cli.ExitFailed))
	g.Expect(errOut).To(ContainSubstring("name a revision of the history"))
}

// TestQuarantineLiftedOnce: the unquarantine annotation lifts a digest once. When the same
// digest fails again and is quarantined again, the annotation, still there with the value
// it had, does not lift it: a person has to name it anew.
func TestQuarantineLiftedOnce(t *testing.T) {
	g := NewWithT(t)
	good := "ghcr.io/acme/web@" + digestV1
	ns, repo, obj := readyRelease(t, good, func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Second}
	})
	broken := map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+deadDigest)}
	bad := commit(t, repo, "Release a broken build", broken)
	reconcileNow(t, obj)
	g.Eventually(func(g Gomega) {
		g.Expect(get(g.(*WithT), obj).Status.Quarantine).To(ConsistOf(HaveField("FailedRevision", "main@sha1:"+bad)))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	g.Expect(repo.Git("pull", "-q", "--ff-only", "origin", "main")).To(Succeed())

	// Pushed again, refused; lifted, applied; it fails again and is reverted again.
	again := commit(t, repo, "Try the broken build again", broken)
	reconcileNow(t, obj)
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.QuarantinedDigestReason, 30*time.Second)
	code, out, errOut := kubectlRelease("unquarantine", "shop", deadDigest, "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK), out+errOut)
	var cur *v1alpha1.ImmutableRelease
	g.Eventually(func(g Gomega) {
		cur = get(g.(*WithT), obj)
		g.Expect(cur.Status.Quarantine).To(ConsistOf(HaveField("FailedRevision", "main@sha1:"+again)))
		g.Expect(cur.Status.LastAppliedRevision).NotTo(Equal("main@sha1:" + again))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	lifted := cur.GetAnnotations()[v1alpha1.UnquarantineAnnotation]
	g.Expect(lifted).To(HavePrefix(deadDigest))
	g.Expect(cur.Status.LastHandledUnquarantine).To(Equal(lifted))

	// The annotation still names the digest: it stays quarantined, and a third push of it
	// is refused.
	reconcileNow(t, obj)
	g.Consistently(func(g Gomega) {
		g.Expect(get(g.(*WithT), obj).Status.Quarantine).To(ConsistOf(HaveField("Digest", deadDigest)))
	}, 3*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(repo.Git("pull", "-q", "--ff-only", "origin", "main")).To(Succeed())
	third := commit(t, repo, "And once more", broken)
	reconcileNow(t, obj)
	cur = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.QuarantinedDigestReason, 30*time.Second)
	g.Expect(cur.Status.LastAttemptedRevision).To(Equal("main@sha1:" + third))
	g.Expect(deploymentImage(g, ns, "web")).To(Equal(good))
	g.Expect(cur.GetAnnotations()[v1alpha1.UnquarantineAnnotation]).To(Equal(lifted))
}
