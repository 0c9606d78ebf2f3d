//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/immutable-release/operator/internal/controlplane"
)

// specRemoteCluster: a release with spec.kubeConfig delivers to a second cluster (its own
// etcd, kube-apiserver, kube-controller-manager, scheduler and kwok). The kubeconfig Secret
// applied after the release is picked up; the Deployment rolls out there and not here;
// kubectl release get names the cluster; kubectl set image in the remote cluster is put back
// from that cluster's watch.
func specRemoteCluster(t *testing.T) {
	start := time.Now()
	far, err := controlplane.Start(context.Background(), controlplane.Options{Workloads: true, BinDir: env.bin})
	if err != nil {
		t.Fatal(err)
	}
	defer far.Stop()
	t.Logf("remote control plane started in %s", time.Since(start).Round(time.Millisecond))
	farKubectl := func(args ...string) (string, error) {
		return runCmd(filepath.Join(env.bin, "kubectl"), append([]string{"--kubeconfig", far.KubeconfigPath}, args...)...)
	}

	n := seq.Add(1)
	repo, err := env.git.CreateRepo(fmt.Sprintf("acme/remote-%d.git", n), "main")
	if err != nil {
		t.Fatal(err)
	}
	s := &story{t: t, ns: fmt.Sprintf("e2e-%d", n), repo: repo, url: "http://" + env.gitProxy.addr + "/" + repo.Name}
	if out, err := farKubectl("create", "namespace", s.ns); err != nil {
		t.Fatal(err, out)
	}
	s.release("1m", env.git.Username, env.git.Password, "kubeConfig: {secretRef: {name: prod-eu}}")
	// The release is there before its kubeconfig: it waits, retrying, and says why.
	s.eventually(30*time.Second, func() string {
		if r := s.condition("Ready", "reason"); r != "KubeConfigInvalid" {
			return "Ready is " + r + " before the kubeconfig Secret exists"
		}
		return ""
	})
	file := filepath.Join(t.TempDir(), "prod-eu.kubeconfig")
	s.must(os.WriteFile(file, far.Kubeconfig(), 0o600))
	s.kubectl("-n", s.ns, "create", "secret", "generic", "prod-eu", "--from-file=value="+file)
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=2m")
	if out, err := farKubectl("-n", s.ns, "wait", "--for=condition=Available", "deployment/web", "--timeout=1m"); err != nil {
		t.Fatal(err, out)
	}
	if out, _ := kubectl("-n", s.ns, "get", "deployment", "web"); !strings.Contains(out, "NotFound") {
		t.Fatalf("the Deployment is in the local cluster too: %s", out)
	}
	host := strings.TrimPrefix(strings.TrimSuffix(far.Config.Host, "/"), "https://")
	out, err := kubectlRelease("-n", s.ns, "get")
	if err != nil || !strings.Contains(out, "CLUSTER") || !strings.Contains(out, host) {
		t.Fatalf("kubectl release get does not name the cluster %s: %v\n%s", host, err, out)
	}
	t.Logf("kubectl release get:\n%s", out)

	if out, err := farKubectl("-n", s.ns, "set", "image", "deployment/web", "web=ghcr.io/acme/web@"+digestV2); err != nil {
		t.Fatal(err, out)
	}
	corrected := time.Now()
	s.eventually(30*time.Second, func() string {
		img, _ := farKubectl("-n", s.ns, "get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
		if img != "ghcr.io/acme/web@"+digestV1 {
			return "the remote Deployment still runs " + img
		}
		return ""
	})
	t.Logf("drift in the remote cluster corrected %s after kubectl set image", time.Since(corrected).Round(time.Millisecond))
	s.kubectl("-n", s.ns, "delete", "immutablerelease", "shop", "--timeout=1m")
	s.eventually(30*time.Second, func() string {
		if out, _ := farKubectl("-n", s.ns, "get", "deployment", "web"); !strings.Contains(out, "NotFound") {
			return "the remote Deployment is still there after the release was deleted: " + out
		}
		return ""
	})
}

func TestRemoteCluster(t *testing.T) { specRemoteCluster(t) }
