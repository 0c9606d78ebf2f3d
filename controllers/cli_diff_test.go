package controllers

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/internal/cli"
)

// TestKubectlReleaseDiffAndVerifyAgainst dry-runs Git's head and a local folder against
// the real API server, with the release's Git credentials read through the kubeconfig.
func TestKubectlReleaseDiffAndVerifyAgainst(t *testing.T) {
	g := NewWithT(t)
	ns, repo, _ := readyRelease(t, "ghcr.io/acme/web:1.0@"+digestV1)

	code, out, errOut := kubectlRelease("diff", "shop", "-n", ns)
	g.Expect(errOut).To(BeEmpty())
	g.Expect(code).To(Equal(cli.ExitOK))
	first, err := repo.Head()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(out).To(ContainSubstring("Deployment/" + ns + "/web unchanged\n"))
	g.Expect(out).To(HaveSuffix("main@sha1:" + first + ": no changes (3 objects unchanged)\n"))

	// A commit that is not applied yet: a new image, a new object, the Service removed.
	second := commit(t, repo, "Release 1.1", map[string]string{
		"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web:1.1@"+digestV2),
		"app/extra.yaml":      "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\ndata: {a: b}\n",
	}, "app/service.yaml")
	code, out, errOut = kubectlRelease("diff", "shop", "-n", ns)
	g.Expect(errOut).To(BeEmpty())
	g.Expect(code).To(Equal(cli.ExitDiffers))
	g.Expect(out).To(ContainSubstring("Deployment/" + ns + "/web configured: spec.template.spec.containers[app].image\n"))
	g.Expect(out).To(ContainSubstring("--- live Deployment/" + ns + "/web\n+++ main@sha1:" + second + " Deployment/" + ns + "/web\n"))
	g.Expect(out).To(ContainSubstring("\n-      - image: ghcr.io/acme/web:1.0@" + digestV1 + "\n+      - image: ghcr.io/acme/web:1.1@" + digestV2 + "\n"))
	g.Expect(out).To(ContainSubstring("ConfigMap/" + ns + "/extra created\n--- /dev/null\n"))
	g.Expect(out).To(ContainSubstring("Service/" + ns + "/web deleted\n"))
	g.Expect(out).To(ContainSubstring("ConfigMap/" + ns + "/web-settings unchanged\n"))
	g.Expect(out).To(HaveSuffix("main@sha1:" + second + ": 1 created, 1 configured, 1 deleted, 1 unchanged\n"))

	code, out, _ = kubectlRelease("diff", "shop", "-n", ns, "-o", "json")
	g.Expect(code).To(Equal(cli.ExitDiffers))
	var res struct {
		Revision string
		Changed  bool
		Objects  []struct {
			Object, Action string
			Fields         []string
		}
	}
	g.Expect(json.Unmarshal([]byte(out), &res)).To(Succeed())
	g.Expect(res.Changed).To(BeTrue())
	g.Expect(res.Revision).To(Equal("main@sha1:" + second))
	g.Expect(res.Objects).To(HaveLen(4))

	// A dry run changes nothing.
	svc := &corev1.Service{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, svc)).To(Succeed())
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "extra"}, &corev1.ConfigMap{})).NotTo(Succeed())

	// verify --against: a local folder, as a pull request would change it. Secret values
	// never reach the output.
	dir := t.TempDir()
	files := map[string]string{
		"deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web:1.0@"+digestV1),
		"service.yaml":    serviceYAML,
		"configmap.yaml":  "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-settings\ndata:\n  greeting: bonjour\n",
		"secret.yaml":     "apiVersion: v1\nkind: Secret\nmetadata: {name: token}\nstringData: {token: s3cr3t-value}\n",
	}
	for name, content := range files {
		g.Expect(os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)).To(Succeed())
	}
	code, out, errOut = kubectlRelease("verify", dir, "--against", "shop", "-n", ns)
	g.Expect(errOut).To(BeEmpty())
	g.Expect(code).To(Equal(cli.ExitOK))
	g.Expect(out).To(ContainSubstring(": 4 objects, 1 images pinned by digest\n"))
	g.Expect(out).To(ContainSubstring("ConfigMap/" + ns + "/web-settings configured: data[greeting]\n"))
	g.Expect(out).To(ContainSubstring("-  greeting: hello\n+  greeting: bonjour\n"))
	g.Expect(out).To(ContainSubstring("Secret/" + ns + "/token created\n"))
	g.Expect(out).NotTo(ContainSubstring("s3cr3t"))
	g.Expect(out).NotTo(ContainSubstring("czNjcjN0")) // base64 of the value's start
	g.Expect(out).To(ContainSubstring("Deployment/" + ns + "/web unchanged\n"))
	g.Expect(out).To(HaveSuffix("against " + ns + "/shop: 1 created, 1 configured, 0 deleted, 2 unchanged\n"))

	code, out, _ = kubectlRelease("verify", dir, "--against", "shop", "-n", ns, "-o", "json")
	g.Expect(code).To(Equal(cli.ExitOK))
	var vres struct {
		Valid   bool
		Against string
		Changes []struct{ Object, Action string }
	}
	g.Expect(json.Unmarshal([]byte(out), &vres)).To(Succeed())
	g.Expect(vres.Valid).To(BeTrue())
	g.Expect(vres.Against).To(Equal(ns + "/shop"))
	g.Expect(vres.Changes).To(ContainElement(struct{ Object, Action string }{"Secret/" + ns + "/token", "created"}))

	// The API server refuses an object that verify's offline checks accept.
	g.Expect(os.WriteFile(filepath.Join(dir, "service.yaml"), []byte("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 0}]\n"), 0o644)).To(Succeed())
	code, _, errOut = kubectlRelease("verify", dir, "--against", "shop", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitFailed))
	g.Expect(errOut).To(ContainSubstring("error: dry-run apply of Service/" + ns + "/web: "))
	g.Expect(errOut).To(ContainSubstring("spec.ports[0].port"))

	// Errors people meet.
	code, _, errOut = kubectlRelease("diff", "nope", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitNotFound))
	g.Expect(errOut).To(ContainSubstring(`no ImmutableRelease "nope"`))
	code, _, _ = kubectlRelease("diff", "shop", "-n", ns, "--as", "nobody")
	g.Expect(code).To(Equal(cli.ExitForbidden))
	code, _, _ = kubectlRelease("verify", dir, "--against", "nope", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitNotFound))
}
