package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions/check"
	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/controlplane"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/notify"
	"github.com/immutable-release/operator/internal/receiver"
	"github.com/immutable-release/operator/internal/shard"
	"github.com/immutable-release/operator/internal/tenancy"
	"github.com/immutable-release/operator/internal/testgit"
)

// The suite runs the real manager against a real kube-apiserver and etcd, with
// kube-controller-manager, kube-scheduler and kwok so that Deployments really roll out,
// and a real Git server.
var (
	ctx context.Context
	k8s client.Client
	// cfgForTests connects as the same administrator as the operator.
	cfgForTests *rest.Config
	// kubeconfigPath is an administrator's kubeconfig file, for command-line tools.
	kubeconfigPath string
	gitServer      *testgit.Server
	scheme         = runtime.NewScheme()
	// operator is the reconciler the manager runs: its Git statistics, and the webhook
	// receiver tests notify it.
	operator *ImmutableReleaseReconciler
	// receivers is what the Receiver reconciler registered; secretReads counts the Secrets
	// it read from the API server.
	receivers   *receiver.Registry
	secretReads = &countingReader{}
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr), zap.Level(zapLevel())))

	var cancel context.CancelFunc
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()

	cp, err := controlplane.Start(ctx, controlplane.Options{
		Workloads:         true,
		CRDDirectoryPaths: []string{filepath.Join("..", "config", "crd", "bases")},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the control plane:", err)
		return 1
	}
	defer cp.Stop()
	defer stopRemoteCluster()

	gitServer, err = testgit.NewServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the Git server:", err)
		return 1
	}
	defer gitServer.Stop()
	defer gitea.Stop()

	cacheOpts, err := CacheOptions(shard.Shard{})
	if err != nil {
		return 1
	}
	mgr, err := ctrl.NewManager(cp.Config, ctrl.Options{Scheme: scheme, Cache: cacheOpts, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating the manager:", err)
		return 1
	}
	storage, err := os.MkdirTemp("", "imr-git-")
	if err != nil {
		return 1
	}
	defer os.RemoveAll(storage)
	// Every event is also posted, as with --events-addr, to a loopback Flux event receiver.
	fluxEvents = newFluxReceiver()
	defer fluxEvents.Close()
	recorder, err := notify.NewRecorder(mgr.GetEventRecorder("immutable-release-controller"), scheme, fluxEvents.URL, "immutable-release-controller", ctrl.Log.WithName("events"))
	if err == nil {
		err = mgr.Add(recorder)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "setting up the event recorder:", err)
		return 1
	}
	verification, err := testVerificationOptions()
	if err != nil {
		fmt.Fprintln(os.Stderr, "setting up image verification:", err)
		return 1
	}
	r := &ImmutableReleaseReconciler{
		Client:   mgr.GetClient(),
		Config:   cp.Config,
		Scheme:   scheme,
		Recorder: recorder,
		Git:      git.NewCache(storage),
		Options: Options{HealthPollInterval: 500 * time.Millisecond, MaxConcurrentReconciles: 4, Tenancy: tenancy.Policy{
			UnconfinedNamespaces: []string{unconfinedNamespace},
			Operator:             tenancy.Operator{Namespace: "immutable-release-system", NamePrefix: "immutable-release-", Group: v1alpha1.GroupVersion.Group},
		},
			Attestation:  AttestationOptions{KeySecret: attestKeySecret, ClusterName: testClusterName},
			Verification: verification,
		},
	}
	operator = r
	if err := r.SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, "setting up the controller:", err)
		return 1
	}
	receivers = receiver.NewRegistry()
	secretReads.Reader = mgr.GetAPIReader()
	if err := (&ReceiverReconciler{Client: mgr.GetClient(), APIReader: secretReads, Registry: receivers}).SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, "setting up the Receiver controller:", err)
		return 1
	}
	if err := (&PreventPolicyReconciler{Client: mgr.GetClient(), Config: cp.Config, Tenancy: r.Options.Tenancy}).SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, "setting up the Prevent policy controller:", err)
		return 1
	}
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager stopped:", err)
		}
	}()
	cfgForTests = cp.Config
	kubeconfigPath = cp.KubeconfigPath
	k8s, err = client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		return 1
	}
	return m.Run()
}

func zapLevel() zapcore.Level {
	if os.Getenv("TEST_LOG") != "" {
		return -1
	}
	return 10
}

const (
	digestV1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	digestV2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	// deadDigest never becomes ready on the local control plane (a kwok Stage).
	deadDigest = "sha256:dead000000000000000000000000000000000000000000000000000000000000"
)

func deploymentYAML(name, image string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: ` + name + `
spec:
  replicas: 2
  selector:
    matchLabels: {app: ` + name + `}
  template:
    metadata:
      labels: {app: ` + name + `}
    spec:
      containers:
      - name: app
        image: ` + image + `
        ports: [{containerPort: 8080}]
`
}

const serviceYAML = `apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`

const configMapYAML = `apiVersion: v1
kind: ConfigMap
metadata:
  name: web-settings
data:
  greeting: hello
`

// sampleFiles is the sample application: a Deployment, a Service and a ConfigMap.
func sampleFiles(dir, image string) map[string]string {
	return map[string]string{
		dir + "/deployment.yaml": deploymentYAML("web", image),
		dir + "/service.yaml":    serviceYAML,
		dir + "/configmap.yaml":  configMapYAML,
	}
}

var counter atomic.Int64

// uniqueName returns a name no other test uses.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, counter.Add(1))
}

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("test")}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// newRepo creates a repository whose first commit holds files, and a Secret with its
// credentials in namespace.
func newRepo(t *testing.T, namespace string, files map[string]string) *testgit.Repo {
	t.Helper()
	g := NewWithT(t)
	repo, err := gitServer.CreateRepo(uniqueName("repo")+".git", "main")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(repo.Write(files)).To(Succeed())
	_, err = repo.CommitAndPush("Initial release")
	g.Expect(err).NotTo(HaveOccurred())
	// The same credentials for every repository: a namespace with two repositories keeps one.
	g.Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "git-credentials", Namespace: namespace},
		StringData: map[string]string{"username": gitServer.Username, "password": gitServer.Password},
	}))).To(Succeed())
	return repo
}

// newRelease creates a release of path in repo, changed by mutate.
func newRelease(t *testing.T, namespace string, repo *testgit.Repo, path string, mutate ...func(*v1alpha1.ImmutableRelease)) *v1alpha1.ImmutableRelease {
	t.Helper()
	obj := &v1alpha1.ImmutableRelease{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: namespace},
		Spec: v1alpha1.ImmutableReleaseSpec{
			Git: v1alpha1.GitSource{
				URL:       repo.URL(),
				Ref:       v1alpha1.GitReference{Branch: "main"},
				SecretRef: &meta.LocalObjectReference{Name: "git-credentials"},
			},
			Path:     path,
			Interval: metav1.Duration{Duration: time.Hour},
			Timeout:  &metav1.Duration{Duration: time.Minute},
			Prune:    true,
		},
	}
	for _, m := range mutate {
		m(obj)
	}
	if err := k8s.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

// get reads the release again.
func get(g *WithT, obj *v1alpha1.ImmutableRelease) *v1alpha1.ImmutableRelease {
	out := &v1alpha1.ImmutableRelease{}
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(obj), out)).To(Succeed())
	return out
}

// condition returns the condition of type t, or an empty one.
func condition(obj *v1alpha1.ImmutableRelease, t string) metav1.Condition {
	for _, c := range obj.Status.Conditions {
		if c.Type == t {
			return c
		}
	}
	return metav1.Condition{}
}

// waitFor waits until the release's condition t has status and reason, and returns it.
func waitFor(t *testing.T, obj *v1alpha1.ImmutableRelease, condType string, st metav1.ConditionStatus, reason string, timeout time.Duration) *v1alpha1.ImmutableRelease {
	t.Helper()
	g := NewWithT(t)
	var out *v1alpha1.ImmutableRelease
	g.Eventually(func(g Gomega) {
		out = &v1alpha1.ImmutableRelease{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(obj), out)).To(Succeed())
		c := condition(out, condType)
		g.Expect(c.Status).To(Equal(st), "%s: %s", c.Reason, c.Message)
		g.Expect(c.Reason).To(Equal(reason), c.Message)
	}, timeout, 100*time.Millisecond).Should(Succeed())
	return out
}

// checkKstatus fails when the release's conditions break the kstatus conventions, or when
// kstatus reads the object differently from want.
func checkKstatus(t *testing.T, obj *v1alpha1.ImmutableRelease, want status.Status) {
	t.Helper()
	g := NewWithT(t)
	checker := check.NewChecker(k8s, &check.Conditions{NegativePolarity: []string{meta.StalledCondition, meta.ReconcilingCondition}})
	checker.WithT(g).CheckErr(ctx, obj)
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	g.Expect(err).NotTo(HaveOccurred())
	res, err := status.Compute(&unstructured.Unstructured{Object: u})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Status).To(Equal(want), res.Message)
}

// deleteRelease deletes the release and waits until it is gone (its finalizer done).
func deleteRelease(t testing.TB, obj *v1alpha1.ImmutableRelease) {
	t.Helper()
	g := NewWithT(t)
	g.Expect(k8s.Delete(ctx, obj)).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(obj), &v1alpha1.ImmutableRelease{}))
	}, 30*time.Second, 100*time.Millisecond).Should(BeTrue())
}

// reconcileNow asks for an immediate reconcile of a release or a Receiver, as `flux
// reconcile` does.
func reconcileNow(t testing.TB, obj client.Object) {
	t.Helper()
	g := NewWithT(t)
	g.Eventually(func() error {
		cur := obj.DeepCopyObject().(client.Object)
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
			return err
		}
		patch := client.MergeFrom(cur.DeepCopyObject().(client.Object))
		annotations := cur.GetAnnotations()
		if annotations == nil {
			annotations = map[string]string{}
		}
		annotations[meta.ReconcileRequestAnnotation] = time.Now().Format(time.RFC3339Nano)
		cur.SetAnnotations(annotations)
		return k8s.Patch(ctx, cur, patch)
	}, 10*time.Second).Should(Succeed())
}

// commit writes files, removes paths, and pushes a commit.
func commit(t *testing.T, repo *testgit.Repo, message string, files map[string]string, remove ...string) string {
	t.Helper()
	g := NewWithT(t)
	g.Expect(repo.Write(files)).To(Succeed())
	g.Expect(repo.Remove(remove...)).To(Succeed())
	hash, err := repo.CommitAndPush(message)
	g.Expect(err).NotTo(HaveOccurred())
	return hash
}

// readyRelease creates a namespace, a repository with the sample application at app/ with
// image, and a release of it changed by mutate, and waits until it is Ready.
func readyRelease(t *testing.T, image string, mutate ...func(*v1alpha1.ImmutableRelease)) (string, *testgit.Repo, *v1alpha1.ImmutableRelease) {
	t.Helper()
	ns := newNamespace(t)
	repo := newRepo(t, ns, sampleFiles("app", image))
	obj := newRelease(t, ns, repo, "app", mutate...)
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	return ns, repo, obj
}
