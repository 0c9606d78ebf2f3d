package controlplane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// goodDigest is any well-formed sha256 digest: kwok pulls nothing.
	goodDigest = "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
	// deadDigest starts with "dead", which the kwok Stages treat as an image that does not
	// exist in its registry.
	deadDigest = "sha256:dead2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
)

// startForTest starts a control plane whose logs are printed if the test fails. It skips
// under -short when the binaries are missing and fails otherwise: a test that silently
// skips in CI proves nothing.
func startForTest(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	opts.LogDir = t.TempDir()
	began := time.Now()
	cp, err := Start(t.Context(), opts)
	if errors.Is(err, ErrMissingBinaries) {
		if testing.Short() {
			t.Skip(err)
		}
		t.Fatalf("%v (Kubernetes takes about 8 minutes the first time)", err)
	}
	if err != nil {
		dumpLogs(t, opts.LogDir)
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Logf("Started the control plane (workloads: %t) in %s", opts.Workloads, time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, cp.LogDir)
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	return cp
}

func TestWorkloadsRollOut(t *testing.T) {
	g := NewWithT(t)
	childrenBefore := childProcesses(t)
	cp := startForTest(t, Options{Workloads: true})
	cl, err := client.New(cp.Config, client.Options{})
	g.Expect(err).NotTo(HaveOccurred())
	ctx := t.Context()

	t.Run("a Deployment of pinned images becomes Available and reports their digests", func(t *testing.T) {
		g := NewWithT(t)
		images := []string{
			"registry.example.com:5000/team/app:1.2.3@" + goodDigest,
			"busybox@" + goodDigest,
		}
		deploy := deployment("pinned", images...)
		began := time.Now()
		g.Expect(cl.Create(ctx, deploy)).To(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(cl.Get(ctx, client.ObjectKeyFromObject(deploy), deploy)).To(Succeed())
			g.Expect(condition(deploy, appsv1.DeploymentAvailable)).To(Equal(corev1.ConditionTrue))
			g.Expect(deploy.Status.AvailableReplicas).To(Equal(int32(1)))
		}).WithTimeout(time.Minute).Should(Succeed())
		t.Logf("Deployment became Available in %s", time.Since(began).Round(time.Millisecond))

		pod := onlyPod(ctx, g, cl, deploy)
		g.Expect(pod.Spec.NodeName).To(Equal(cp.NodeName))
		g.Expect(pod.Status.Phase).To(Equal(corev1.PodRunning))
		g.Expect(podReady(pod)).To(BeTrue())
		g.Expect(pod.Status.ContainerStatuses).To(HaveLen(2))
		wantIDs := map[string]string{
			"c0": "docker-pullable://registry.example.com:5000/team/app@" + goodDigest,
			"c1": "docker-pullable://busybox@" + goodDigest,
		}
		for _, status := range pod.Status.ContainerStatuses {
			g.Expect(status.Ready).To(BeTrue(), status.Name)
			g.Expect(status.ImageID).To(HaveSuffix("@"+goodDigest), status.Name)
			g.Expect(status.ImageID).To(Equal(wantIDs[status.Name]), status.Name)
		}
	})

	t.Run("a Deployment of an image that cannot be pulled never becomes Available", func(t *testing.T) {
		g := NewWithT(t)
		image := "registry.example.com/team/app:1.2.4@" + deadDigest
		deploy := deployment("dead", image, "busybox@"+goodDigest)
		// A short deadline shows the rollout failing the way `kubectl rollout status` sees it.
		deploy.Spec.ProgressDeadlineSeconds = ptr.To[int32](3)
		g.Expect(cl.Create(ctx, deploy)).To(Succeed())

		g.Eventually(func(g Gomega) {
			pod := onlyPod(ctx, g, cl, deploy)
			g.Expect(pod.Status.Phase).To(Equal(corev1.PodPending))
			g.Expect(podReady(pod)).To(BeFalse())
			g.Expect(pod.Status.ContainerStatuses).To(ConsistOf(
				And(
					HaveField("Name", "c0"), HaveField("Ready", false), HaveField("ImageID", ""),
					HaveField("State.Waiting.Reason", "ImagePullBackOff"),
					HaveField("State.Waiting.Message", ContainSubstring(image)),
				),
				And(HaveField("Name", "c1"), HaveField("Ready", true), HaveField("State.Running", Not(BeNil()))),
			))
		}).WithTimeout(time.Minute).Should(Succeed())

		g.Consistently(func(g Gomega) {
			g.Expect(cl.Get(ctx, client.ObjectKeyFromObject(deploy), deploy)).To(Succeed())
			// Not True: the deployment controller may not have written the condition yet
			// (it is then absent), but it must never say Available.
			g.Expect(condition(deploy, appsv1.DeploymentAvailable)).NotTo(Equal(corev1.ConditionTrue))
			g.Expect(deploy.Status.AvailableReplicas).To(BeZero())
			pod := onlyPod(ctx, g, cl, deploy)
			g.Expect(podReady(pod)).To(BeFalse())
		}).WithTimeout(10 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())

		g.Expect(condition(deploy, appsv1.DeploymentProgressing)).To(Equal(corev1.ConditionFalse))
		g.Expect(deploy.Status.Conditions).To(ContainElement(HaveField("Reason", "ProgressDeadlineExceeded")))
	})

	t.Run("the kubeconfig file works for other processes", func(t *testing.T) {
		g := NewWithT(t)
		path := filepath.Join(t.TempDir(), "nested", "kubeconfig")
		g.Expect(cp.WriteKubeconfig(path)).To(Succeed())
		for _, p := range []string{cp.KubeconfigPath, path} {
			cfg, err := clientcmd.BuildConfigFromFlags("", p)
			g.Expect(err).NotTo(HaveOccurred())
			other, err := client.New(cfg, client.Options{})
			g.Expect(err).NotTo(HaveOccurred())
			var nodes corev1.NodeList
			g.Expect(other.List(ctx, &nodes)).To(Succeed())
			g.Expect(nodes.Items).To(ConsistOf(HaveField("ObjectMeta.Name", cp.NodeName)))
		}
		info, err := os.Stat(cp.KubeconfigPath)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(info.Mode().Perm()).To(Equal(os.FileMode(0o600)))
	})

	t.Run("Stop leaves no process behind", func(t *testing.T) {
		g := NewWithT(t)
		var groups []int
		for _, p := range cp.procs {
			groups = append(groups, p.cmd.Process.Pid)
		}
		g.Expect(cp.Stop()).To(Succeed())
		g.Expect(childProcesses(t)).To(Equal(childrenBefore))
		g.Expect(processesInGroups(t, groups)).To(BeEmpty())
		_, err := os.Stat(cp.KubeconfigPath)
		g.Expect(os.IsNotExist(err)).To(BeTrue(), "kubeconfig removed")
		g.Expect(cp.Stop()).To(Succeed(), "Stop is idempotent")
	})
}

func TestStartWithoutWorkloads(t *testing.T) {
	g := NewWithT(t)
	childrenBefore := childProcesses(t)
	cp := startForTest(t, Options{})
	cl, err := client.New(cp.Config, client.Options{})
	g.Expect(err).NotTo(HaveOccurred())

	var nodes corev1.NodeList
	g.Expect(cl.List(t.Context(), &nodes)).To(Succeed())
	g.Expect(nodes.Items).To(BeEmpty())
	g.Expect(cp.NodeName).To(BeEmpty())

	// The wider Service range: envtest's /24 would end at 10.0.0.254.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "wide"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "10.100.0.10",
			Ports:     []corev1.ServicePort{{Port: 80}},
		},
	}
	g.Expect(cl.Create(t.Context(), svc)).To(Succeed())

	g.Expect(cp.Stop()).To(Succeed())
	g.Expect(childProcesses(t)).To(Equal(childrenBefore))
}

// TestRestartAPIServer: after a restart the same client config and a service-account token
// issued before it still work, and what was stored before is still there.
func TestRestartAPIServer(t *testing.T) {
	g := NewWithT(t)
	cp := startForTest(t, Options{})
	cl, err := client.New(cp.Config, client.Options{})
	g.Expect(err).NotTo(HaveOccurred())
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kept"}, Data: map[string]string{"k": "v"}}
	g.Expect(cl.Create(t.Context(), cm)).To(Succeed())
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "reader"}}
	g.Expect(cl.Create(t.Context(), sa)).To(Succeed())
	cs, err := kubernetes.NewForConfig(cp.Config)
	g.Expect(err).NotTo(HaveOccurred())
	tr, err := cs.CoreV1().ServiceAccounts("default").CreateToken(t.Context(), "reader", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())

	g.Expect(cp.RestartAPIServer()).To(Succeed())

	got := &corev1.ConfigMap{}
	g.Expect(cl.Get(t.Context(), client.ObjectKeyFromObject(cm), got)).To(Succeed())
	g.Expect(got.Data).To(Equal(cm.Data))
	// The token authenticates (a SelfSubjectReview needs no rights): the signing key survived.
	cfg := rest.AnonymousClientConfig(cp.Config)
	cfg.BearerToken = tr.Status.Token
	saClient, err := kubernetes.NewForConfig(cfg)
	g.Expect(err).NotTo(HaveOccurred())
	review, err := saClient.AuthenticationV1().SelfSubjectReviews().Create(t.Context(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(review.Status.UserInfo.Username).To(Equal("system:serviceaccount:default:reader"))
}

func TestStartNamesTheProcessThatFailed(t *testing.T) {
	g := NewWithT(t)
	opts := Options{Workloads: true}
	g.Expect(opts.setDefaults()).To(Succeed())
	if err := checkBinaries(opts.BinDir, opts.requiredBinaries()); err != nil {
		startForTest(t, opts) // skips or fails with the instructions
	}
	// The real binaries, but a kwok that dies at once.
	dir := t.TempDir()
	for _, name := range opts.requiredBinaries() {
		g.Expect(os.Symlink(filepath.Join(opts.BinDir, name), filepath.Join(dir, name))).To(Succeed())
	}
	g.Expect(os.Remove(filepath.Join(dir, "kwok"))).To(Succeed())
	g.Expect(os.WriteFile(filepath.Join(dir, "kwok"), []byte("#!/bin/sh\necho 'no stages for you' >&2\nexit 3\n"), 0o755)).To(Succeed())
	childrenBefore := childProcesses(t)

	logDir := t.TempDir()
	_, err := Start(t.Context(), Options{BinDir: dir, Workloads: true, LogDir: logDir})
	t.Logf("Start failed as it should: %v", err)
	kwokLog := filepath.Join(logDir, "kwok.log")
	g.Expect(err).To(MatchError(And(ContainSubstring("kwok exited: exit status 3"), ContainSubstring(kwokLog))))
	g.Expect(os.ReadFile(kwokLog)).To(ContainSubstring("no stages for you"))
	g.Expect(childProcesses(t)).To(Equal(childrenBefore))
}

func TestStartReportsMissingBinaries(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	g.Expect(os.WriteFile(filepath.Join(dir, "etcd"), []byte("#!/bin/sh\n"), 0o755)).To(Succeed())

	_, err := Start(t.Context(), Options{BinDir: dir, Workloads: true})
	g.Expect(err).To(MatchError(ErrMissingBinaries))
	g.Expect(err.Error()).To(ContainSubstring("[kube-apiserver kube-controller-manager kube-scheduler kwok]"))
	g.Expect(err.Error()).To(ContainSubstring("make control-plane"))
}

// BenchmarkStart reports how long Start takes; Stop is not timed.
func BenchmarkStart(b *testing.B) {
	for _, workloads := range []bool{false, true} {
		b.Run(fmt.Sprintf("workloads=%t", workloads), func(b *testing.B) {
			for b.Loop() {
				cp := startForTest(b, Options{Workloads: workloads})
				b.StopTimer()
				if err := cp.Stop(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkDeploymentAvailable reports how long a one-replica Deployment takes from
// creation to Available.
func BenchmarkDeploymentAvailable(b *testing.B) {
	cp := startForTest(b, Options{Workloads: true})
	cl, err := client.New(cp.Config, client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	i := 0
	for b.Loop() {
		i++
		deploy := deployment("bench-"+strconv.Itoa(i), "app@"+goodDigest)
		if err := cl.Create(ctx, deploy); err != nil {
			b.Fatal(err)
		}
		for condition(deploy, appsv1.DeploymentAvailable) != corev1.ConditionTrue {
			time.Sleep(20 * time.Millisecond)
			if err := cl.Get(ctx, client.ObjectKeyFromObject(deploy), deploy); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// deployment has one replica with one container per image, named c0, c1, ...
func deployment(name string, images ...string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	var containers []corev1.Container
	for i, image := range images {
		containers = append(containers, corev1.Container{Name: "c" + strconv.Itoa(i), Image: image})
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: containers},
			},
		},
	}
}

func onlyPod(ctx context.Context, g Gomega, cl client.Client, deploy *appsv1.Deployment) *corev1.Pod {
	var pods corev1.PodList
	g.Expect(cl.List(ctx, &pods, client.InNamespace(deploy.Namespace),
		client.MatchingLabels(deploy.Spec.Selector.MatchLabels))).To(Succeed())
	g.Expect(pods.Items).To(HaveLen(1))
	return &pods.Items[0]
}

func condition(deploy *appsv1.Deployment, t appsv1.DeploymentConditionType) corev1.ConditionStatus {
	for _, c := range deploy.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

// childProcesses lists the live children of the test binary from /proc: envtest's etcd and
// kube-apiserver as well as ours.
func childProcesses(t testing.TB) []int {
	t.Helper()
	return scanProc(t, func(ppid, _ int) bool { return ppid == os.Getpid() })
}

func processesInGroups(t testing.TB, pgids []int) []int {
	t.Helper()
	return scanProc(t, func(_, pgid int) bool {
		for _, g := range pgids {
			if pgid == g {
				return true
			}
		}
		return false
	})
}

func scanProc(t testing.TB, match func(ppid, pgid int) bool) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil || len(stats) == 0 {
		t.Skip("no /proc to look for leaked processes in")
	}
	pids := []int{}
	for _, path := range stats {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // it exited meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces, so split after ")".
		fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		ppid, _ := strconv.Atoi(fields[1])
		pgid, _ := strconv.Atoi(fields[2])
		if match(ppid, pgid) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
			pids = append(pids, pid)
		}
	}
	return pids
}

// dumpLogs prints the end of every log, which is where a failing component says why.
func dumpLogs(t testing.TB, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, path := range logs {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		var lines []string
		scanner := bufio.NewScanner(f)
		scanner.Buffer(nil, 1<<20)
		for scanner.Scan() {
			lines = append(lines, scanner.Text())
		}
		_ = f.Close()
		t.Logf("==> %s (last 30 lines)\n%s", path, strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
}
