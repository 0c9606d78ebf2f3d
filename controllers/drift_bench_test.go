package controllers

import (
	"fmt"
	"os"
	goruntime "runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/controlplane"
)

// BenchmarkDriftCorrection times image edits on a live Deployment, each from the edit's
// response to the moment a watch sees the Deployment back on the digest Git names, and
// reports p50, p99 and max (make bench-drift).
func BenchmarkDriftCorrection(b *testing.B) {
	t := &testing.T{}
	ns := newNamespace(t)
	good := "ghcr.io/acme/web@" + digestV1
	repo := newRepo(t, ns, sampleFiles("app", good))
	obj := newRelease(t, ns, repo, "app")
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	if t.Failed() {
		b.Fatal("the release did not become Ready")
	}
	benchDrift(b, "local", k8s, cfgForTests, ns, good)
}

// BenchmarkDriftCorrectionRemote is BenchmarkDriftCorrection on a remote cluster
// (spec.kubeConfig, a second control plane), beside a local release of the same
// repository: the edits are made there and put back from that cluster's watch.
func BenchmarkDriftCorrectionRemote(b *testing.B) {
	t := &testing.T{}
	cp, far := remoteCluster(t)
	ns := newNamespace(t)
	if err := far.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		b.Fatal(err)
	}
	good := "ghcr.io/acme/web@" + digestV1
	repo := newRepo(t, ns, sampleFiles("app", good))
	kubeconfigSecret(t, ns, "remote-kubeconfig", cp.Kubeconfig())
	local := newRelease(t, ns, repo, "app", func(o *v1alpha1.ImmutableRelease) { o.Name = "local" })
	obj := newRelease(t, ns, repo, "app", toRemote("remote-kubeconfig"))
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	waitFor(t, local, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	if t.Failed() {
		b.Fatal("the releases did not become Ready")
	}
	benchDrift(b, "remote", far, cp.Config, ns, good)
}

// benchDrift makes b.N image edits of Deployment web in namespace ns through c, and times
// each until a watch of cfg's cluster sees it back on good.
func benchDrift(b *testing.B, where string, c client.Client, cfg *rest.Config, ns, good string) {
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		b.Fatal(err)
	}
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		edit := fmt.Sprintf("ghcr.io/acme/web@sha256:%064x", i+1)
		d := &appsv1.Deployment{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, d); err != nil {
			b.Fatal(err)
		}
		patch := client.MergeFrom(d.DeepCopy())
		d.Spec.Template.Spec.Containers[0].Image = edit
		if err := c.Patch(ctx, d, patch, client.FieldOwner("kubectl-set")); err != nil {
			b.Fatal(err)
		}
		edited := time.Now()
		// Watch from the edit on: the first event with Git's image is the correction.
		w, err := wc.Watch(ctx, &appsv1.DeploymentList{}, client.InNamespace(ns),
			client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", "web")},
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: d.ResourceVersion}})
		if err != nil {
			b.Fatal(err)
		}
		deadline := time.After(30 * time.Second)
	wait:
		for {
			select {
			case ev := <-w.ResultChan():
				if d, ok := ev.Object.(*appsv1.Deployment); ok && d.Spec.Template.Spec.Containers[0].Image == good {
					latencies = append(latencies, time.Since(edited))
					break wait
				}
			case <-deadline:
				b.Fatalf("edit %d was not corrected within 30s", i)
			}
		}
		w.Stop()
	}
	b.StopTimer()

	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) time.Duration { return latencies[int(p*float64(len(latencies)-1))] }
	b.ReportMetric(float64(pct(0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(latencies[len(latencies)-1].Microseconds())/1000, "max-ms")
	fmt.Fprintf(os.Stderr, "drift correction (%s cluster) over %d edits: p50 %s, p99 %s, max %s\n", where,
		len(latencies), pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), latencies[len(latencies)-1].Round(time.Millisecond))
}

// BenchmarkRemoteClusterMemory measures what one more remote cluster costs the manager:
// the heap in use, after collections, once n releases, each with credentials of its own
// (so n caches, mappers, clients and probes, with the same second control plane behind
// them), are Ready and settled, against n releases of the local cluster made the same way.
// Each release applies a Deployment and a ConfigMap.
func BenchmarkRemoteClusterMemory(b *testing.B) {
	const n = 10
	t := &testing.T{}
	cp, far := remoteCluster(t)
	heap := func() uint64 {
		var m goruntime.MemStats
		for range 3 {
			goruntime.GC()
		}
		goruntime.ReadMemStats(&m)
		return m.HeapInuse
	}
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("p%d/deployment.yaml", i)] = deploymentYAML(fmt.Sprintf("web-%d", i), "ghcr.io/acme/web@"+digestV1)
		files[fmt.Sprintf("p%d/configmap.yaml", i)] = strings.Replace(configMapYAML, "name: web-settings", fmt.Sprintf("name: settings-%d", i), 1)
	}
	perRelease := func(remote bool) float64 {
		ns := newNamespace(t)
		if err := far.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			b.Fatal(err)
		}
		repo := newRepo(t, ns, files)
		before := heap()
		var releases []*v1alpha1.ImmutableRelease
		for i := range n {
			name := fmt.Sprintf("r%d", i)
			mutate := func(o *v1alpha1.ImmutableRelease) { o.Name = name }
			if remote {
				// Other credentials for the same cluster are another cache, as another
				// cluster's: an account of its own there, bound to cluster-admin.
				secret := "kubeconfig-" + name
				token := adminToken(b, cp, ns, name)
				kubeconfigSecret(t, ns, secret, editKubeconfig(t, cp, func(c *clientcmdapi.Config) {
					for _, u := range c.AuthInfos {
						u.ClientCertificateData, u.ClientKeyData, u.Token = nil, nil, token
					}
				}))
				mutate = func(o *v1alpha1.ImmutableRelease) { toRemote(secret)(o); o.Name = name }
			}
			releases = append(releases, newRelease(t, ns, repo, fmt.Sprintf("p%d", i), mutate))
		}
		for _, r := range releases {
			waitFor(t, r, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, 2*time.Minute)
		}
		if t.Failed() {
			b.Fatal("the releases did not become Ready")
		}
		if got := remoteClusterCount(); remote && got < n {
			b.Fatalf("%d remote clusters for %d releases with credentials of their own", got, n)
		}
		time.Sleep(3 * time.Second)
		return float64(int64(heap())-int64(before)) / n / (1 << 20)
	}
	b.ResetTimer()
	local := perRelease(false)
	remote := perRelease(true)
	b.StopTimer()
	b.ReportMetric(local, "MiB/local-release")
	b.ReportMetric(remote, "MiB/remote-release")
	b.ReportMetric(remote-local, "MiB/remote-cluster")
	fmt.Fprintf(os.Stderr, "heap in use per release: %.2f MiB local, %.2f MiB with a remote cluster of its own: %.2f MiB per remote cluster\n", local, remote, remote-local)
}

// adminToken is a token of a new account name of namespace ns in the cluster of cp, bound
// to cluster-admin.
func adminToken(b *testing.B, cp *controlplane.ControlPlane, ns, name string) string {
	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: name}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return tr.Status.Token
}
