package controlplane

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// kwokStages is kwok's --config: how the fake kubelet moves Nodes and Pods along. See the
// comments in stages.yaml, in particular for imageID and "@sha256:dead" images.
//
//go:embed stages.yaml
var kwokStages []byte

// readyTimeout bounds each start-up wait (Node Ready, default ServiceAccount, probe pod).
const readyTimeout = time.Minute

// probeImage is what the start-up probe pod runs. kwok pulls nothing, so it is only a name.
const probeImage = "registry.k8s.io/pause:3.10"

// fakeNodeName is the one Node kwok plays the kubelet for; fakeNodeIP is its InternalIP.
const (
	fakeNodeName = "kwok-node-0"
	fakeNodeIP   = "172.18.0.2"
)

// startWorkloads starts kube-controller-manager, kube-scheduler and kwok, registers the fake
// Node and returns once a pod can be scheduled and becomes Ready.
func (c *ControlPlane) startWorkloads(ctx context.Context, binDir string) error {
	stagesPath := filepath.Join(c.workDir, "kwok-stages.yaml")
	if err := os.WriteFile(stagesPath, kwokStages, 0o644); err != nil {
		return fmt.Errorf("writing kwok stages: %w", err)
	}
	kubeconfig := "--kubeconfig=" + c.KubeconfigPath
	children := []struct {
		name string
		args []string
	}{
		{"kube-controller-manager", []string{
			kubeconfig,
			"--leader-elect=false",
			"--secure-port=0",
			// The token controller needs a signing key; nothing here reads legacy
			// ServiceAccount token Secrets.
			"--controllers=*,-serviceaccount-token-controller",
			// kwok renews the Node's lease every 10 s (a quarter of its 40 s duration) but
			// posts Node status rarely; a longer grace keeps a busy machine from marking the
			// Node NotReady and its pods unready.
			"--node-monitor-grace-period=2m",
			// Tests create many Deployments at once; the defaults (20 QPS, 5 syncs) make
			// rollouts queue behind each other.
			"--kube-api-qps=200",
			"--kube-api-burst=400",
			"--concurrent-deployment-syncs=20",
			"--concurrent-replicaset-syncs=20",
		}},
		{"kube-scheduler", []string{
			kubeconfig,
			"--leader-elect=false",
			"--secure-port=0",
			"--kube-api-qps=200",
			"--kube-api-burst=400",
		}},
		{"kwok", []string{
			kubeconfig,
			"--manage-all-nodes=true",
			"--server-address=", // no kubelet API: nothing execs or reads logs
			// Without it the Node has no InternalIP and pods no hostIP.
			"--node-ip=" + fakeNodeIP,
			// With a lease kwok heartbeats every 10 s; without one it posts Node status
			// about once a minute and the node-lifecycle controller flaps pods to unready.
			"--node-lease-duration-seconds=40",
			"--config=" + stagesPath,
		}},
	}
	for _, child := range children {
		p, err := startProcess(child.name, filepath.Join(binDir, child.name), child.args, c.LogDir)
		if err != nil {
			return err
		}
		c.procs = append(c.procs, p)
	}

	cl, err := client.New(c.Config, client.Options{})
	if err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	if err := c.createNode(ctx, cl); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "the kwok Node "+fakeNodeName+" to become Ready", "kwok", func(ctx context.Context) (bool, error) {
		return nodeReady(ctx, cl)
	}); err != nil {
		return err
	}
	// envtest disables the ServiceAccount admission plugin, so pods do not need their
	// ServiceAccount; but charts and operators create objects that reference "default", and
	// its appearance is the sign that kube-controller-manager is running (it has no
	// health endpoint with --secure-port=0).
	if err := c.waitFor(ctx, "kube-controller-manager to create the default ServiceAccount", "kube-controller-manager", func(ctx context.Context) (bool, error) {
		err := cl.Get(ctx, client.ObjectKey{Namespace: metav1.NamespaceDefault, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, client.IgnoreNotFound(err)
	}); err != nil {
		return err
	}
	return c.probeScheduling(ctx, cl)
}

// createNode registers the fake Node. The annotation is what kwok docs use to mark the
// Nodes it plays; --manage-all-nodes would take any Node, but the mark says whose it is.
func (c *ControlPlane) createNode(ctx context.Context, cl client.Client) error {
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("1000"),
		corev1.ResourceMemory: resource.MustParse("1Ti"),
		corev1.ResourcePods:   resource.MustParse("10000"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: fakeNodeName,
			Labels: map[string]string{
				"type":                          "kwok",
				corev1.LabelHostname:            fakeNodeName,
				corev1.LabelOSStable:            "linux",
				corev1.LabelArchStable:          "amd64",
				"node-role.kubernetes.io/agent": "",
			},
			Annotations: map[string]string{
				"kwok.x-k8s.io/node":           "fake",
				"node.alpha.kubernetes.io/ttl": "0",
			},
		},
		Spec: corev1.NodeSpec{
			// kwok hands out pod IPs from the Node's range, and from a /24 without one:
			// that would run out at 254 pods.
			PodCIDR:  "10.244.0.0/16",
			PodCIDRs: []string{"10.244.0.0/16"},
		},
	}
	if err := cl.Create(ctx, node); err != nil {
		return fmt.Errorf("creating Node %s: %w", fakeNodeName, err)
	}
	// Status is a subresource: create ignores it. A merge patch of capacity alone cannot
	// conflict with kwok, whose node-initialize Stage keeps the capacity it finds.
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"capacity": resources, "allocatable": resources}})
	if err != nil {
		return fmt.Errorf("setting Node %s capacity: %w", fakeNodeName, err)
	}
	if err := cl.Status().Patch(ctx, node, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("setting Node %s capacity: %w", fakeNodeName, err)
	}
	c.NodeName = fakeNodeName
	return nil
}

func nodeReady(ctx context.Context, cl client.Client) (bool, error) {
	var node corev1.Node
	if err := cl.Get(ctx, client.ObjectKey{Name: fakeNodeName}, &node); err != nil {
		return false, err
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue, nil
		}
	}
	return false, nil
}

// probeScheduling runs one pod through the scheduler and kwok. A Ready Node is not enough:
// the node-lifecycle controller may still hold its not-ready taint, and only a pod that
// becomes Ready shows that the scheduler runs and the Stages parse.
func (c *ControlPlane) probeScheduling(ctx context.Context, cl client.Client) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: "controlplane-probe"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "probe", Image: probeImage}},
		},
	}
	if err := cl.Create(ctx, pod); err != nil {
		return fmt.Errorf("creating probe pod: %w", err)
	}
	if err := c.waitFor(ctx, "a probe pod to be scheduled and become Ready", "kube-scheduler, kwok", func(ctx context.Context) (bool, error) {
		if err := cl.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err
		}
		return podReady(pod), nil
	}); err != nil {
		return err
	}
	// A graceful delete, finished by kwok's pod-delete Stage like any other pod's; a forced
	// one races that Stage and leaves an error in kwok's log. Nothing waits for it to go.
	if err := cl.Delete(ctx, pod); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting probe pod: %w", err)
	}
	return nil
}

func podReady(pod *corev1.Pod) bool {
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitFor polls done until it is true, any child process exits, or readyTimeout (or ctx)
// ends. Errors name what was awaited and the logs of the processes responsible (suspects).
func (c *ControlPlane) waitFor(ctx context.Context, what, suspects string, done func(context.Context) (bool, error)) error {
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, readyTimeout, true, func(ctx context.Context) (bool, error) {
		for _, p := range c.procs {
			if err := p.exitError(); err != nil {
				return false, err
			}
		}
		ok, err := done(ctx)
		if err != nil {
			lastErr = err // the API may be busy; keep trying until the deadline
			return false, nil
		}
		return ok, nil
	})
	if err == nil {
		return nil
	}
	if !wait.Interrupted(err) {
		return fmt.Errorf("waiting for %s: %w", what, err) // a child exited
	}
	var logs []string
	for _, p := range c.procs {
		if strings.Contains(suspects, p.name) {
			logs = append(logs, p.logPath)
		}
	}
	return fmt.Errorf("waiting for %s: %w (last error: %v; see %s)", what, err, lastErr, strings.Join(logs, ", "))
}
