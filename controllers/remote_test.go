package controllers

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/admission"
	"github.com/immutable-release/operator/internal/cli"
	"github.com/immutable-release/operator/internal/controlplane"
)

// remote is a second control plane with workloads, the remote cluster of the spec.kubeConfig
// tests; the first test that needs it starts it, and the suite stops it.
var remote struct {
	once sync.Once
	cp   *controlplane.ControlPlane
	k8s  client.Client
	err  error
}

func remoteCluster(t *testing.T) (*controlplane.ControlPlane, client.Client) {
	t.Helper()
	remote.once.Do(func() {
		start := time.Now()
		remote.cp, remote.err = controlplane.Start(ctx, controlplane.Options{Workloads: true})
		if remote.err == nil {
			remote.k8s, remote.err = client.New(remote.cp.Config, client.Options{Scheme: scheme})
		}
		fmt.Fprintf(os.Stderr, "started the remote control plane in %s\n", time.Since(start).Round(time.Millisecond))
	})
	if remote.err != nil {
		t.Fatalf("starting the remote control plane: %v", remote.err)
	}
	return remote.cp, remote.k8s
}

func stopRemoteCluster() {
	if remote.cp != nil {
		_ = remote.cp.Stop()
	}
}

// kubeconfigSecret creates a Secret holding kubeconfig under key value.
func kubeconfigSecret(t *testing.T, namespace, name string, kubeconfig []byte) {
	t.Helper()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Data: map[string][]byte{"value": kubeconfig}}
	if err := k8s.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
}

// editKubeconfig returns the remote administrator's kubeconfig changed by edit.
func editKubeconfig(t *testing.T, cp *controlplane.ControlPlane, edit func(*clientcmdapi.Config)) []byte {
	t.Helper()
	cfg, err := clientcmd.Load(cp.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	edit(cfg)
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func remoteImage(g Gomega, c client.Client, namespace, name string) string {
	d := &appsv1.Deployment{}
	g.Expect(c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, d)).To(Succeed())
	return d.Spec.Template.Spec.Containers[0].Image
}

func toRemote(secret string) func(*v1alpha1.ImmutableRelease) {
	return func(o *v1alpha1.ImmutableRelease) {
		o.Name = "remote"
		o.Spec.KubeConfig = &v1alpha1.KubeConfigReference{SecretRef: meta.SecretKeyReference{Name: secret}}
	}
}

// TestRemoteCluster is the story of one repository with a path per cluster: a release of
// the local cluster and one of a remote cluster, the same Deployment name in each. Both
// become Ready, each in its own cluster; `kubectl set image` in the remote cluster is put
// back from that cluster's watch; a broken digest pushed for the remote path is reverted
// under that path only while the local release stays Healthy; a remote kube-apiserver that
// stops makes the remote release ClusterUnreachable and nothing else waits; once it is back,
// drift there is put back again; a rotated kubeconfig is picked up.
func TestRemoteCluster(t *testing.T) {
	g := NewWithT(t)
	cp, far := remoteCluster(t)
	ns := newNamespace(t)
	g.Expect(far.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	good := "ghcr.io/acme/web@" + digestV1
	files := sampleFiles("clusters/local", good)
	for k, v := range sampleFiles("clusters/remote", good) {
		files[k] = v
	}
	repo := newRepo(t, ns, files)
	kubeconfigSecret(t, ns, "remote-kubeconfig", cp.Kubeconfig())
	fast := func(o *v1alpha1.ImmutableRelease) { o.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Second} }
	local := newRelease(t, ns, repo, "clusters/local", func(o *v1alpha1.ImmutableRelease) { o.Name = "local" }, fast)
	rel := newRelease(t, ns, repo, "clusters/remote", toRemote("remote-kubeconfig"), fast)

	cur := waitFor(t, rel, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(cur.Status.Cluster).To(Equal(strings.TrimSuffix(cp.Config.Host, "/")))
	waitFor(t, local, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	checkKstatus(t, cur, "Current")
	// Each release's Deployment is in its own cluster, rolled out there.
	d := &appsv1.Deployment{}
	g.Expect(far.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, d)).To(Succeed())
	g.Expect(d.Labels).To(HaveKeyWithValue("release.immutable.dev/name", "remote"))
	g.Expect(d.Status.AvailableReplicas).To(Equal(int32(2)))
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, d)).To(Succeed())
	g.Expect(d.Labels).To(HaveKeyWithValue("release.immutable.dev/name", "local"))
	g.Expect(cur.Status.Images[0].Running).To(ConsistOf(digestV1), "the digests the remote pods run")

	// Drift in the remote cluster is put back from its own watch.
	start := time.Now()
	g.Expect(setImage(far, ns, "web", "app", evilImage, "kubectl-set")).To(Succeed())
	g.Eventually(func(g Gomega) { g.Expect(remoteImage(g, far, ns, "web")).To(Equal(good)) }, 10*time.Second, 10*time.Millisecond).Should(Succeed())
	t.Logf("drift in the remote cluster corrected in %s", time.Since(start).Round(time.Millisecond))
	g.Expect(deploymentImage(g, ns, "web")).To(Equal(good))

	// kubectl release shows which cluster each release delivers to, and diffs against it.
	host := strings.TrimPrefix(strings.TrimSuffix(cp.Config.Host, "/"), "https://")
	waitFor(t, rel, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	code, out, _ := kubectlRelease("get", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK), out)
	g.Expect(out).To(MatchRegexp(`NAME\s+READY\s+CLUSTER\s+REVISION\s+IMAGES\s+AGE\nlocal\s+True\s+local\s+main@`))
	g.Expect(out).To(MatchRegexp(`\nremote\s+True\s+` + regexp.QuoteMeta(host) + `\s+main@`))
	code, out, _ = kubectlRelease("status", "remote", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK), out)
	g.Expect(out).To(ContainSubstring("Cluster:   https://" + host + " (kubeconfig Secret remote-kubeconfig)"))
	code, out, _ = kubectlRelease("diff", "remote", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK), out)
	g.Expect(out).To(ContainSubstring("no changes (3 objects unchanged)"))
	// An object deleted in the remote cluster comes back from that cluster's watch.
	g.Expect(far.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-settings"}})).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(far.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-settings"}, &corev1.ConfigMap{})).To(Succeed())
	}, 10*time.Second, 20*time.Millisecond).Should(Succeed(), "a deleted object comes back in the remote cluster")

	// A broken digest for the remote cluster's path is reverted there only.
	bad := commit(t, repo, "Release a broken build to the remote cluster", map[string]string{
		"clusters/remote/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+deadDigest),
	})
	reconcileNow(t, rel)
	reconcileNow(t, local)
	var revert string
	g.Eventually(func(g Gomega) {
		out, err := repo.Output("ls-remote", "origin", "refs/heads/main")
		g.Expect(err).NotTo(HaveOccurred())
		revert = strings.Fields(out)[0]
		g.Expect(revert).NotTo(Equal(bad))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	g.Expect(repo.Git("pull", "-q", "--ff-only", "origin", "main")).To(Succeed())
	changed, err := repo.Output("show", "--format=", "--name-only", revert)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(strings.Fields(changed)).To(ConsistOf("clusters/remote/deployment.yaml"))
	cur = waitFor(t, rel, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(cur.Status.LastAppliedRevision).To(Equal("main@sha1:" + revert))
	g.Expect(cur.Status.History[1].Result).To(Equal(v1alpha1.ReleaseFailed))
	g.Expect(remoteImage(g, far, ns, "web")).To(Equal(good))
	// The local release never left its digest nor its health.
	l := get(g, local)
	g.Expect(condition(l, v1alpha1.HealthyCondition).Status).To(Equal(metav1.ConditionTrue))
	g.Expect(l.Status.History).To(HaveEach(HaveField("Result", Not(Equal(v1alpha1.ReleaseFailed)))))

	// The remote kube-apiserver stops: the remote release says so, and the local one is
	// still corrected at once.
	g.Expect(cp.StopAPIServer()).To(Succeed())
	stopped := true
	defer func() {
		if stopped {
			_ = cp.StartAPIServer()
		}
	}()
	reconcileNow(t, rel)
	cur = waitFor(t, rel, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.ClusterUnreachableReason, 30*time.Second)
	g.Expect(condition(cur, meta.ReadyCondition).Message).To(ContainSubstring("the cluster " + strings.TrimSuffix(cp.Config.Host, "/") + " of spec.kubeConfig did not answer"))
	start = time.Now()
	g.Expect(setImage(k8s, ns, "web", "app", evilImage, "kubectl-set")).To(Succeed())
	g.Eventually(func(g Gomega) { g.Expect(deploymentImage(g, ns, "web")).To(Equal(good)) }, 10*time.Second, 10*time.Millisecond).Should(Succeed())
	t.Logf("local drift corrected in %s while the remote cluster was down", time.Since(start).Round(time.Millisecond))

	g.Expect(cp.StartAPIServer()).To(Succeed())
	stopped = false
	waitFor(t, rel, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	// Its watches came back with it.
	g.Eventually(func() error { return setImage(far, ns, "web", "app", evilImage, "kubectl-set") }, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) { g.Expect(remoteImage(g, far, ns, "web")).To(Equal(good)) }, 30*time.Second, 20*time.Millisecond).Should(Succeed())

	// The kubeconfig is rotated to one that reaches nothing: the release notices at the next
	// reconcile, and drift made meanwhile stays until the good one is back, then is put back.
	unreachable := editKubeconfig(t, cp, func(c *clientcmdapi.Config) {
		for _, cl := range c.Clusters {
			cl.Server = "https://127.0.0.1:1"
		}
	})
	rotate := func(data []byte) {
		s := &corev1.Secret{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "remote-kubeconfig"}, s)).To(Succeed())
		s.Data["value"] = data
		g.Expect(k8s.Update(ctx, s)).To(Succeed())
	}
	rotate(unreachable)
	reconcileNow(t, rel)
	waitFor(t, rel, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.ClusterUnreachableReason, 30*time.Second)
	g.Expect(setImage(far, ns, "web", "app", evilImage, "kubectl-set")).To(Succeed())
	rotate(cp.Kubeconfig())
	g.Eventually(func(g Gomega) { g.Expect(remoteImage(g, far, ns, "web")).To(Equal(good)) }, time.Minute, 50*time.Millisecond).Should(Succeed())
	cur = waitFor(t, rel, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(cur.Status.DriftCorrections).To(BeNumerically(">=", 3))

	// Deleting the release prunes what it applied in the remote cluster, and closes its
	// watches there once no release targets it.
	deleteRelease(t, rel)
	g.Eventually(func() bool {
		return apierrors.IsNotFound(far.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &appsv1.Deployment{}))
	}, 30*time.Second, 100*time.Millisecond).Should(BeTrue())
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &appsv1.Deployment{})).To(Succeed())
	g.Eventually(func() int { return remoteClusterCount() }, 10*time.Second, 100*time.Millisecond).Should(BeZero())
}

func remoteClusterCount() int {
	operator.clusters.mu.Lock()
	defer operator.clusters.mu.Unlock()
	return len(operator.clusters.remote)
}

// TestRemoteKubeconfigRefused: a kubeconfig that runs an exec plugin is refused with
// KubeConfigInvalid naming the plugin and the flag, and nothing is applied; so are a
// missing Secret and a kubeconfig that reads a file of the operator's.
func TestRemoteKubeconfigRefused(t *testing.T) {
	g := NewWithT(t)
	cp, far := remoteCluster(t)
	ns := newNamespace(t)
	g.Expect(far.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	repo := newRepo(t, ns, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))

	exec := editKubeconfig(t, cp, func(c *clientcmdapi.Config) {
		for _, u := range c.AuthInfos {
			u.ClientCertificateData, u.ClientKeyData = nil, nil
			u.Exec = &clientcmdapi.ExecConfig{APIVersion: "client.authentication.k8s.io/v1", Command: "/bin/sh",
				Args: []string{"-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/token"}, InteractiveMode: clientcmdapi.NeverExecInteractiveMode}
		}
	})
	kubeconfigSecret(t, ns, "exec", exec)
	rel := newRelease(t, ns, repo, "app", toRemote("exec"))
	cur := waitFor(t, rel, meta.StalledCondition, metav1.ConditionTrue, v1alpha1.KubeConfigInvalidReason, 30*time.Second)
	g.Expect(condition(cur, meta.ReadyCondition).Message).To(And(
		ContainSubstring(`runs the exec credential plugin "/bin/sh"; refused unless the manager runs with --insecure-kubeconfig-exec`),
		ContainSubstring("nothing was applied")))
	checkKstatus(t, cur, "Failed")

	tokenFile := editKubeconfig(t, cp, func(c *clientcmdapi.Config) {
		for _, u := range c.AuthInfos {
			u.ClientCertificateData, u.ClientKeyData = nil, nil
			u.TokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
		}
	})
	kubeconfigSecret(t, ns, "token-file", tokenFile)
	refused := func(secret, why string) {
		t.Helper()
		patchSpec(t, rel, func(o *v1alpha1.ImmutableRelease) { o.Spec.KubeConfig.SecretRef.Name = secret })
		g.Eventually(func(g Gomega) {
			cur := get(g.(*WithT), rel)
			g.Expect(condition(cur, meta.StalledCondition).Reason).To(Equal(v1alpha1.KubeConfigInvalidReason))
			g.Expect(condition(cur, meta.ReadyCondition).Message).To(ContainSubstring(why))
		}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	}
	refused("token-file", `the Secret "token-file" of spec.kubeConfig.secretRef: the kubeconfig in key "value": user "envtest" names a file`)
	// A missing Secret is retried: it may be applied after the release.
	patchSpec(t, rel, func(o *v1alpha1.ImmutableRelease) { o.Spec.KubeConfig.SecretRef.Name = "missing" })
	g.Eventually(func(g Gomega) {
		cur := get(g.(*WithT), rel)
		g.Expect(condition(cur, meta.ReadyCondition).Reason).To(Equal(v1alpha1.KubeConfigInvalidReason))
		g.Expect(condition(cur, meta.ReadyCondition).Message).To(ContainSubstring(`the Secret "missing" of spec.kubeConfig.secretRef is not in namespace "` + ns + `"`))
		g.Expect(condition(cur, meta.StalledCondition).Status).NotTo(Equal(metav1.ConditionTrue))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())

	g.Expect(apierrors.IsNotFound(far.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &appsv1.Deployment{}))).To(BeTrue(), "nothing applied in the remote cluster")
	g.Expect(apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &appsv1.Deployment{}))).To(BeTrue(), "nor in the local one")
	// A release whose kubeconfig is gone lets go when deleted, leaving what it may have applied.
	deleteRelease(t, rel)
}

// TestRemoteWithoutRights: a tenant's kubeconfig for an account that has no rights in the
// remote cluster gets a reason that names the account and the refusal, and nothing is
// applied there.
func TestRemoteWithoutRights(t *testing.T) {
	g := NewWithT(t)
	cp, far := remoteCluster(t)
	ns := newNamespace(t)
	g.Expect(far.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	g.Expect(far.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody", Namespace: ns}})).To(Succeed())
	cs, err := kubernetes.NewForConfig(cp.Config)
	g.Expect(err).NotTo(HaveOccurred())
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "nobody", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	nobody := editKubeconfig(t, cp, func(c *clientcmdapi.Config) {
		for _, u := range c.AuthInfos {
			u.ClientCertificateData, u.ClientKeyData = nil, nil
			u.Token = tr.Status.Token
		}
	})
	kubeconfigSecret(t, ns, "nobody", nobody)
	repo := newRepo(t, ns, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	rel := newRelease(t, ns, repo, "app", toRemote("nobody"))
	cur := waitFor(t, rel, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.ApplyFailedReason, 30*time.Second)
	g.Expect(condition(cur, meta.ReadyCondition).Message).To(And(
		ContainSubstring("forbidden"), ContainSubstring(`"system:serviceaccount:`+ns+`:nobody"`)))
	for _, o := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}, &corev1.ConfigMap{}} {
		name := "web"
		if _, ok := o.(*corev1.ConfigMap); ok {
			name = "web-settings"
		}
		g.Expect(apierrors.IsNotFound(far.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, o))).To(BeTrue(), "nothing applied: %T", o)
	}
	patchSpec(t, rel, func(o *v1alpha1.ImmutableRelease) { o.Spec.Prune = false })
	deleteRelease(t, rel)
}

// remotePolicies are the names of the operator's Prevent policies and bindings in the
// remote cluster.
func remotePolicies(g Gomega, far client.Client) []string {
	var names []string
	var policies admissionv1.ValidatingAdmissionPolicyList
	g.Expect(far.List(ctx, &policies)).To(Succeed())
	for _, p := range policies.Items {
		if strings.HasPrefix(p.Name, admission.RemotePolicyName) {
			names = append(names, "policy/"+p.Name)
		}
	}
	var bindings admissionv1.ValidatingAdmissionPolicyBindingList
	g.Expect(far.List(ctx, &bindings)).To(Succeed())
	for _, b := range bindings.Items {
		if strings.HasPrefix(b.Name, admission.RemotePolicyName) {
			names = append(names, "binding/"+b.Name)
		}
	}
	return names
}

// TestRemotePrevent: drift mode Prevent in a remote cluster installs the operator's policy
// there (no ImmutableRelease exists there to take as a param), which refuses another
// administrator's image change at admission; the operator's own change goes through; once
// no release there is in Prevent mode, the policy goes. A release whose kubeconfig Secret
// went first (a namespace being deleted) lets go when deleted, leaving its objects with a
// Warning event, and the policy of a cluster no release targets any more goes too.
func TestRemotePrevent(t *testing.T) {
	g := NewWithT(t)
	cp, far := remoteCluster(t)
	ns := newNamespace(t)
	g.Expect(far.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	repo := newRepo(t, ns, sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	kubeconfigSecret(t, ns, "remote-kubeconfig", cp.Kubeconfig())
	rel := newRelease(t, ns, repo, "app", toRemote("remote-kubeconfig"), func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Drift = &v1alpha1.DriftSpec{Mode: v1alpha1.DriftPrevent}
	})
	waitFor(t, rel, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)

	cfg := rest.CopyConfig(cp.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "jane", Groups: []string{"system:masters"}}
	jane, err := client.New(cfg, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(func() error {
		return setImage(jane, ns, "web", "app", evilImage, "kubectl-set")
	}, 30*time.Second, 200*time.Millisecond).Should(MatchError(
		ContainSubstring("the images of Deployment " + ns + "/web are pinned by ImmutableRelease " + ns + "/remote (drift mode Prevent)")))
	g.Expect(remotePolicies(g, far)).To(HaveLen(2))
	g.Expect(remotePolicies(g, k8s)).To(BeEmpty(), "the local cluster has none of it")

	commit(t, repo, "Release 2", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+digestV2)})
	reconcileNow(t, rel)
	g.Eventually(func(g Gomega) { g.Expect(remoteImage(g, far, ns, "web")).To(Equal("ghcr.io/acme/web@" + digestV2)) }, 30*time.Second, 100*time.Millisecond).Should(Succeed())

	patchSpec(t, rel, func(o *v1alpha1.ImmutableRelease) { o.Spec.Drift = &v1alpha1.DriftSpec{Mode: v1alpha1.DriftCorrect} })
	g.Eventually(func(g Gomega) { g.Expect(remotePolicies(g, far)).To(BeEmpty()) }, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	patchSpec(t, rel, func(o *v1alpha1.ImmutableRelease) { o.Spec.Drift = &v1alpha1.DriftSpec{Mode: v1alpha1.DriftPrevent} })
	g.Eventually(func(g Gomega) { g.Expect(remotePolicies(g, far)).To(HaveLen(2)) }, 30*time.Second, 100*time.Millisecond).Should(Succeed())

	g.Expect(k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "remote-kubeconfig"}})).To(Succeed())
	deleteRelease(t, rel)
	g.Expect(far.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &appsv1.Deployment{})).To(Succeed(), "left in the remote cluster")
	g.Eventually(func(g Gomega) {
		g.Expect(releaseEvents(g, rel, v1alpha1.KubeConfigInvalidReason)).To(ContainElement(ContainSubstring("The objects of the release were left in the remote cluster")))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) { g.Expect(remotePolicies(g, far)).To(BeEmpty()) }, 30*time.Second, 100*time.Millisecond).Should(Succeed())
}
