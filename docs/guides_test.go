// Package docs holds the tests of the user documentation: every YAML object in the guides
// is decoded strictly and created on a real API server, the shell commands that change a
// cluster are run against it, and the health checks are run against releases in every state.
package docs

import (
	"bufio"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	notificationv1beta3 "github.com/fluxcd/notification-controller/api/v1beta3"
	"github.com/fluxcd/pkg/ssa"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	kustomizetypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/attest"
	"github.com/immutable-release/operator/internal/controlplane"
)

// guides are the documents whose examples these tests exercise.
var guides = []string{
	"guides/quickstart.md",
	"guides/flux-and-argo.md",
	"guides/security.md",
	"guides/troubleshooting.md",
	"guides/multi-tenancy.md",
	"guides/receivers.md",
	"guides/sharding.md",
	"guides/sops.md",
	"guides/notifications.md",
	"guides/deployment-records.md",
	"guides/remote-clusters.md",
	"guides/image-verification.md",
}

// doc is one YAML document of a fenced block.
type doc struct {
	where string
	text  string
}

// fencedBlocks returns the fenced code blocks of file in the given language, with the line
// each starts on.
func fencedBlocks(t *testing.T, file, lang string) []doc {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		blocks []doc
		cur    *doc
		lines  []string
		n      int
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case cur == nil && line == "```"+lang:
			cur, lines = &doc{where: fmt.Sprintf("%s:%d", file, n)}, nil
		case cur != nil && line == "```":
			cur.text = strings.Join(lines, "\n") + "\n"
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			lines = append(lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return blocks
}

// yamlDocs splits the yaml blocks of file into documents.
func yamlDocs(t *testing.T, file string) []doc {
	t.Helper()
	var docs []doc
	for _, b := range fencedBlocks(t, file, "yaml") {
		for i, part := range strings.Split(b.text, "\n---\n") {
			if strings.TrimSpace(part) != "" {
				docs = append(docs, doc{where: fmt.Sprintf("%s (document %d)", b.where, i+1), text: part})
			}
		}
	}
	return docs
}

// TestGuideObjects decodes every YAML object of the guides strictly into its Go type (an
// unknown or misspelt field fails) and creates it on a real API server with the CRD
// installed, so that the CRD's validation judges the ImmutableRelease examples. Flux
// Kustomizations, whose CRD is not installed here, are decoded into Flux's API types.
func TestGuideObjects(t *testing.T) {
	g := NewWithT(t)
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	strict := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

	var objects []*unstructured.Unstructured
	for _, file := range guides {
		for _, d := range yamlDocs(t, file) {
			if strings.Contains(d.text, "apiVersion: kustomize.toolkit.fluxcd.io/") {
				g.Expect(yaml.UnmarshalStrict([]byte(d.text), &kustomizev1.Kustomization{})).To(Succeed(), d.where)
				continue
			}
			if into := otherObject(d.text); into != nil {
				g.Expect(yaml.UnmarshalStrict([]byte(d.text), into)).To(Succeed(), d.where)
				continue
			}
			json, err := yaml.YAMLToJSON([]byte(d.text))
			g.Expect(err).NotTo(HaveOccurred(), d.where)
			_, _, err = strict.Decode(json, nil, nil)
			g.Expect(err).NotTo(HaveOccurred(), d.where)
			u := &unstructured.Unstructured{}
			g.Expect(u.UnmarshalJSON(json)).To(Succeed(), d.where)
			u.SetAnnotations(map[string]string{"docs.test/where": d.where})
			objects = append(objects, u)
		}
	}
	g.Expect(objects).NotTo(BeEmpty())

	c := startControlPlane(t)
	ctx := context.Background()
	namespaces := map[string]bool{}
	for _, o := range objects {
		if ns := o.GetNamespace(); ns != "" && !namespaces[ns] {
			namespaces[ns] = true
			g.Expect(client.IgnoreAlreadyExists(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))).To(Succeed())
		}
	}
	sort.Stable(ssa.SortableUnstructureds(objects))
	for _, o := range objects {
		where := o.GetAnnotations()["docs.test/where"]
		g.Expect(c.Create(ctx, o, client.DryRunAll)).To(Succeed(), where)
	}
}

// otherObject is the Go type of a guide's object whose CRD is not installed here (a Flux
// notification-controller's Alert or Provider, a kustomization.yaml), or nil.
func otherObject(text string) any {
	switch {
	case strings.Contains(text, "apiVersion: notification.toolkit.fluxcd.io/v1beta3") && strings.Contains(text, "kind: Alert"):
		return &notificationv1beta3.Alert{}
	case strings.Contains(text, "apiVersion: notification.toolkit.fluxcd.io/v1beta3") && strings.Contains(text, "kind: Provider"):
		return &notificationv1beta3.Provider{}
	case strings.Contains(text, "apiVersion: kustomize.config.k8s.io/"):
		return &kustomizetypes.Kustomization{}
	}
	return nil
}

// TestArgoCDInstallCommand runs the guide's command that adds the health check to
// argocd-cm, against a real API server where argocd-cm already holds other settings: the
// key is set to the file's content and the other settings stay.
func TestArgoCDInstallCommand(t *testing.T) {
	g := NewWithT(t)
	var command string
	for _, b := range fencedBlocks(t, "guides/flux-and-argo.md", "sh") {
		if strings.Contains(b.text, "argocd-cm") {
			command = b.text
		}
	}
	g.Expect(command).NotTo(BeEmpty())

	c := startControlPlane(t)
	ctx := context.Background()
	g.Expect(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "argocd"}})).To(Succeed())
	g.Expect(c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "argocd-cm", Namespace: "argocd"},
		Data: map[string]string{"url": "https://argocd.example.com"}})).To(Succeed())

	out := runShell(t, command)
	t.Log(out)

	cm := &corev1.ConfigMap{}
	g.Expect(c.Get(ctx, client.ObjectKey{Namespace: "argocd", Name: "argocd-cm"}, cm)).To(Succeed())
	lua, err := os.ReadFile(filepath.Join("guides", "argocd-health.lua"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(cm.Data).To(HaveKeyWithValue("resource.customizations.health.release.immutable.dev_ImmutableRelease", string(lua)))
	g.Expect(cm.Data).To(HaveKeyWithValue("url", "https://argocd.example.com"))
}

// TestTroubleshootingNamesEveryReason checks that the troubleshooting guide has a section
// for every condition reason the API declares.
func TestTroubleshootingNamesEveryReason(t *testing.T) {
	g := NewWithT(t)
	guide, err := os.ReadFile(filepath.Join("guides", "troubleshooting.md"))
	g.Expect(err).NotTo(HaveOccurred())
	reasons := reasonConstants(t, filepath.Join("..", "api", "v1alpha1", "condition_types.go"))
	g.Expect(reasons).To(ContainElement("ImageNotPinned"))
	for _, r := range reasons {
		g.Expect(string(guide)).To(ContainSubstring("`"+r+"`"), "troubleshooting.md says nothing of the reason %s", r)
	}
}

// reasonConstants returns the values of the constants named *Reason in file.
func reasonConstants(t *testing.T, file string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasSuffix(name.Name, "Reason") || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// startControlPlane starts kube-apiserver and etcd with the CRD installed, writes a
// kubeconfig for commands, and returns an administrator's client.
func startControlPlane(t *testing.T) client.Client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cp, err := controlplane.Start(ctx, controlplane.Options{CRDDirectoryPaths: []string{filepath.Join("..", "config", "crd", "bases")}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cp.Stop()
		cancel()
	})
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", kubeconfig)
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	c, err := client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDeploymentRecordKeyCommands runs the guide's commands that make the attestation key
// and its Secret, in a folder of their own: the Secret they create holds a key the
// operator signs with, and the public key that goes with it.
func TestDeploymentRecordKeyCommands(t *testing.T) {
	g := NewWithT(t)
	var command string
	for _, b := range fencedBlocks(t, "guides/deployment-records.md", "sh") {
		if strings.Contains(b.text, "openssl genpkey") {
			command = b.text
		}
	}
	g.Expect(command).NotTo(BeEmpty())
	c := startControlPlane(t)
	ctx := context.Background()
	g.Expect(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "immutable-release-system"}})).To(Succeed())
	root, err := filepath.Abs("..")
	g.Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", command)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(root, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(out))

	secret := &corev1.Secret{}
	g.Expect(c.Get(ctx, client.ObjectKey{Namespace: "immutable-release-system", Name: "attestation-key"}, secret)).To(Succeed())
	key, err := attest.KeyFromSecret(secret.Data)
	g.Expect(err).NotTo(HaveOccurred())
	pub, err := attest.PublicKeyFromSecret(secret.Data)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(pub.ID()).To(Equal(key.Public().ID()))
}

// runShell runs a guide's commands with bash -euo pipefail from the repository root, with
// bin/ (kubectl) first on PATH.
func runShell(t *testing.T, script string) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(root, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return string(out)
}
