package controllers

import (
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/cli"
)

// The Secret's password as Git has it and as someone changes it live.
const (
	gitPassword  = "s3cr3t-from-git"
	livePassword = "hunter2-edited-live"
)

// secretYAML is a Secret with the password from Git, as stringData or as data.
func secretYAML(asData bool) string {
	if asData {
		return "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\ndata: {password: " + base64.StdEncoding.EncodeToString([]byte(gitPassword)) + ", user: YWRtaW4=}\n"
	}
	return "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: " + gitPassword + ", user: admin}\n"
}

// editSecret changes the live Secret's password as `kubectl apply` by hand would: under its
// own field manager, keeping a copy of what it applied in the last-applied annotation.
func editSecret(g *WithT, ns string) {
	s := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "db"}, s)).To(Succeed())
	patch := client.MergeFrom(s.DeepCopy())
	s.Data["password"] = []byte(livePassword)
	lastApplied, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Secret", "stringData": map[string]string{"password": livePassword}})
	g.Expect(err).NotTo(HaveOccurred())
	s.Annotations = map[string]string{corev1.LastAppliedConfigAnnotation: string(lastApplied)}
	g.Expect(k8s.Patch(ctx, s, patch, client.FieldOwner("kubectl-edit"))).To(Succeed())
}

// expectNoPassword fails when text holds either password in any form the API server or a
// printer could give it: as is, in base64, or the start of its base64.
func expectNoPassword(g Gomega, text string) {
	for _, v := range []string{gitPassword, livePassword} {
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawStdEncoding.EncodeToString([]byte(v))[:12]} {
			g.ExpectWithOffset(1, text).NotTo(ContainSubstring(form))
		}
	}
}

// allEvents returns the notes of every event about the release.
func allEvents(g Gomega, obj *v1alpha1.ImmutableRelease) []string {
	var list eventsv1.EventList
	g.Expect(k8s.List(ctx, &list, client.InNamespace(obj.Namespace))).To(Succeed())
	var notes []string
	for _, e := range list.Items {
		if e.Regarding.Name == obj.Name && e.Regarding.Kind == v1alpha1.ImmutableReleaseKind {
			notes = append(notes, e.Reason+": "+e.Note)
		}
	}
	return notes
}

// expectReleaseHidesPassword fails when the release (its whole status) or any of its events
// holds either password.
func expectReleaseHidesPassword(g Gomega, obj *v1alpha1.ImmutableRelease) {
	cur := &v1alpha1.ImmutableRelease{}
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(obj), cur)).To(Succeed())
	b, err := json.Marshal(cur)
	g.Expect(err).NotTo(HaveOccurred())
	expectNoPassword(g, string(b))
	for _, note := range allEvents(g, obj) {
		expectNoPassword(g, note)
	}
}

// TestDriftOfSecretReported is the attack on Report mode: someone changes a Secret the
// release applies. Drifted and its event name the field and who changed it, and hold
// neither the password from Git nor the new one, nor the copy kubectl keeps in an
// annotation; nor does `kubectl release status` or `diff`.
func TestDriftOfSecretReported(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	files := sampleFiles("app", "ghcr.io/acme/web@"+digestV1)
	files["app/secret.yaml"] = secretYAML(false)
	repo := newRepo(t, ns, files)
	obj := newRelease(t, ns, repo, "app", func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Drift = &v1alpha1.DriftSpec{Mode: v1alpha1.DriftReport}
	})
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	waitFor(t, obj, v1alpha1.DriftedCondition, metav1.ConditionFalse, v1alpha1.NoDriftReason, 10*time.Second)

	editSecret(g, ns)
	cur := waitFor(t, obj, v1alpha1.DriftedCondition, metav1.ConditionTrue, v1alpha1.SpecDriftReason, 10*time.Second)
	msg := condition(cur, v1alpha1.DriftedCondition).Message
	expectNoPassword(g, msg)
	g.Expect(msg).To(Equal("1 objects differ from revision " + cur.Status.LastAppliedRevision +
		": Secret/" + ns + "/db: data[password] differs from Git (value hidden), changed by kubectl-edit"))
	g.Eventually(func(g Gomega) {
		g.Expect(releaseEvents(g, obj, v1alpha1.SpecDriftReason)).To(ContainElement(ContainSubstring("Secret/" + ns + "/db: data[password] differs from Git (value hidden)")))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	expectReleaseHidesPassword(g, obj)

	// Report leaves the edit in place.
	s := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "db"}, s)).To(Succeed())
	g.Expect(string(s.Data["password"])).To(Equal(livePassword))

	code, out, _ := kubectlRelease("status", "shop", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK))
	g.Expect(out).To(ContainSubstring("data[password] differs from Git (value hidden)"))
	expectNoPassword(g, out)

	// The plugin's diff of Git against the edited Secret: which keys change, not to what.
	code, out, errOut := kubectlRelease("diff", "shop", "-n", ns)
	g.Expect(errOut).To(BeEmpty())
	g.Expect(code).To(Equal(cli.ExitDiffers))
	// The dry run keeps the annotation, which another manager owns: it is not a change.
	g.Expect(out).To(ContainSubstring("Secret/" + ns + "/db configured: data[password]\n"))
	g.Expect(out).To(ContainSubstring("-  password: (value hidden, before)\n+  password: (value hidden, after)\n"))
	expectNoPassword(g, out)
	code, out, _ = kubectlRelease("diff", "shop", "-n", ns, "-o", "json")
	g.Expect(code).To(Equal(cli.ExitDiffers))
	expectNoPassword(g, out)
	checkKstatus(t, obj, status.CurrentStatus)
}

// TestDriftOfSecretCorrected is the attack on Correct mode: the password is put back, and
// the DriftCorrected event says which field was, not what it held or holds.
func TestDriftOfSecretCorrected(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	files := sampleFiles("app", "ghcr.io/acme/web@"+digestV1)
	files["app/secret.yaml"] = secretYAML(true)
	repo := newRepo(t, ns, files)
	obj := newRelease(t, ns, repo, "app")
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)

	editSecret(g, ns)
	g.Eventually(func(g Gomega) {
		s := &corev1.Secret{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "db"}, s)).To(Succeed())
		g.Expect(string(s.Data["password"])).To(Equal(gitPassword))
	}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
	var notes []string
	g.Eventually(func(g Gomega) {
		notes = releaseEvents(g, obj, v1alpha1.DriftCorrectedReason)
		g.Expect(notes).To(ContainElement(ContainSubstring("Secret/" + ns + "/db: ")))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	expectReleaseHidesPassword(g, obj)
	g.Expect(notes).To(ContainElement("Put back revision " + get(g, obj).Status.LastAppliedRevision +
		": Secret/" + ns + "/db: data[password] differs from Git (value hidden), changed by kubectl-edit"))
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	checkKstatus(t, obj, status.CurrentStatus)
}
