package manifest

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/kustomize/api/resource"
	"sigs.k8s.io/yaml"
)

// contactRecorder listens on 127.0.0.1 and counts every connection, whatever speaks over it
// (HTTP, Git's smart HTTP, TLS, SSH), so that a test can show the manager never reached it.
// It answers HTTP requests with a ConfigMap, so that a build that does fetch can succeed.
type contactRecorder struct {
	net.Listener
	contacts atomic.Int64
}

func (c *contactRecorder) Accept() (net.Conn, error) {
	conn, err := c.Listener.Accept()
	if err == nil {
		c.contacts.Add(1)
	}
	return conn, err
}

func startContactRecorder(t *testing.T) *contactRecorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	rec := &contactRecorder{Listener: ln}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fetched}\n"))
	})}
	go func() { _ = srv.Serve(rec) }()
	t.Cleanup(func() { _ = srv.Close() })
	return rec
}

// TestBuildRefusesRemoteKustomizeEntries makes every form of remote reference kustomize
// understands, in every field that loads one, directly and through local bases, components and
// generator configurations. Each is refused before kustomize runs, naming the file and the
// entry and who can allow it, and the server they point at is never contacted.
func TestBuildRefusesRemoteKustomizeEntries(t *testing.T) {
	rec := startContactRecorder(t)
	hostPort := rec.Addr().String()
	u := "http://" + hostPort
	tests := []struct {
		name  string
		files map[string]string
		// file and entry must both appear in the message.
		file, entry string
	}{
		{name: "http resource", files: kust("resources: [" + u + "/cm.yaml]"), entry: u + "/cm.yaml"},
		{name: "https resource", files: kust("resources: [https://" + hostPort + "/cm.yaml]"), entry: "https://" + hostPort + "/cm.yaml"},
		{name: "scheme in capitals", files: kust("resources: [HTTP://" + hostPort + "/cm.yaml]"), entry: "HTTP://" + hostPort + "/cm.yaml"},
		{name: "git over http", files: kust("resources: ['" + u + "/org/repo.git//deploy?ref=v1']"), entry: u + "/org/repo.git//deploy?ref=v1"},
		{name: "go-getter git::", files: kust("resources: ['git::" + u + "/org/repo//deploy?ref=main']"), entry: "git::" + u + "/org/repo//deploy?ref=main"},
		{name: "ssh", files: kust("resources: ['ssh://git@" + hostPort + "/org/repo.git//deploy']"), entry: "ssh://git@" + hostPort + "/org/repo.git//deploy"},
		{name: "scp-like", files: kust("resources: ['git@127.0.0.1:org/repo.git//deploy']"), entry: "git@127.0.0.1:org/repo.git//deploy"},
		{name: "github shorthand", files: kust("resources: ['github.com/org/repo//deploy?ref=v1']"), entry: "github.com/org/repo//deploy?ref=v1"},
		{name: "host that is not a local path", files: kust("resources: [gitlab.com/org/repo/deploy]"), entry: "gitlab.com/org/repo/deploy"},
		{name: "file URL clones from the manager's disk", files: kust("resources: ['file:///var/lib/other-tenant/repo.git//deploy']"), entry: "file:///var/lib/other-tenant/repo.git//deploy"},
		{name: "bases", files: kust("bases: [" + u + "/org/repo//base]"), entry: u + "/org/repo//base"},
		{name: "components", files: kust("components: [" + u + "/org/repo//component]"), entry: u + "/org/repo//component"},
		{name: "openapi.path", files: kust("resources: [cm.yaml]\nopenapi: {path: " + u + "/schema.json}"), entry: "openapi.path entry \"" + u + "/schema.json\""},
		{name: "crds", files: kust("crds: [" + u + "/crd.yaml]"), entry: "crds entry \"" + u + "/crd.yaml\""},
		{name: "configurations", files: kust("resources: [cm.yaml]\nconfigurations: [" + u + "/config.yaml]"), entry: u + "/config.yaml"},
		{name: "patches path", files: kust("resources: [cm.yaml]\npatches: [{path: " + u + "/patch.yaml}]"), entry: "patches[0].path entry \"" + u + "/patch.yaml\""},
		{name: "patchesJson6902 path", files: kust("resources: [cm.yaml]\npatchesJson6902: [{path: " + u + "/p.json, target: {kind: ConfigMap, name: settings}}]"), entry: u + "/p.json"},
		{name: "patchesStrategicMerge", files: kust("resources: [cm.yaml]\npatchesStrategicMerge: [" + u + "/p.yaml]"), entry: u + "/p.yaml"},
		{name: "replacements path", files: kust("resources: [cm.yaml]\nreplacements: [{path: " + u + "/r.yaml}]"), entry: u + "/r.yaml"},
		{name: "configMapGenerator file", files: kust("configMapGenerator: [{name: c, files: ['key=" + u + "/f']}]"), entry: "configMapGenerator[0].files entry"},
		{name: "configMapGenerator envs", files: kust("configMapGenerator: [{name: c, envs: [" + u + "/e.env]}]"), entry: u + "/e.env"},
		{name: "secretGenerator env", files: kust("secretGenerator: [{name: s, env: " + u + "/e.env}]"), entry: "secretGenerator[0].env"},
		{name: "generators", files: kust("generators: [" + u + "/gen.yaml]"), entry: u + "/gen.yaml"},
		{name: "validators", files: kust("resources: [cm.yaml]\nvalidators: [" + u + "/v.yaml]"), entry: u + "/v.yaml"},
		{name: "field name in capitals (kustomize matches any case)", files: kust("Resources: [" + u + "/cm.yaml]"), entry: u + "/cm.yaml"},
		{name: "transformer configuration file", files: kust("resources: [cm.yaml]\ntransformers: [t.yaml]").
			with("app/t.yaml", "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: p}\npath: "+u+"/p.yaml\ntarget: {kind: ConfigMap}\n"),
			file: "app/t.yaml", entry: u + "/p.yaml"},
		{name: "inline transformer configuration", files: kust("resources: [cm.yaml]\ntransformers:\n- |\n  apiVersion: builtin\n  kind: ReplacementTransformer\n  metadata: {name: r}\n  replacements: [{path: " + u + "/r.yaml}]\n"),
			entry: u + "/r.yaml"},
		{name: "transformer configuration a patch sets to a URL", files: kust("resources: [cm.yaml]\ntransformers: [../tconf]").
			with("tconf/kustomization.yaml", "resources: [pt.yaml]\npatches:\n- target: {kind: PatchTransformer}\n  patch: '[{\"op\": \"replace\", \"path\": \"/path\", \"value\": \""+u+"/p.yaml\"}]'\n").
			with("tconf/pt.yaml", "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: p}\npath: local.yaml\ntarget: {kind: ConfigMap}\n").
			with("tconf/local.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n"),
			file: "tconf/kustomization.yaml", entry: u + "/p.yaml"},
		{name: "in a local base", files: kust("resources: [../base]").with("base/kustomization.yaml", "resources: ["+u+"/cm.yaml]\n"),
			file: "base/kustomization.yaml", entry: u + "/cm.yaml"},
		{name: "in a base of a base", files: kust("resources: [../base]").with("base/kustomization.yaml", "resources: [../deeper]\n").
			with("deeper/kustomization.yml", "components: ["+u+"/org/repo//c]\n"),
			file: "deeper/kustomization.yml", entry: u + "/org/repo//c"},
		{name: "in a local component", files: kust("resources: [cm.yaml]\ncomponents: [../comp]").
			with("comp/Kustomization", "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources: ["+u+"/cm.yaml]\n"),
			file: "comp/Kustomization", entry: u + "/cm.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			root := writeTree(t, tt.files)
			objects, err := Build(root, "app", DefaultLimits)
			g.Expect(objects).To(BeEmpty())
			g.Expect(reasonOf(err)).To(Equal(ReasonRemoteResourceRefused), "error: %v", err)
			file := tt.file
			if file == "" {
				file = "app/kustomization.yaml"
			}
			g.Expect(err.Error()).To(HavePrefix("remote resources refused: " + file + ": "))
			g.Expect(err.Error()).To(ContainSubstring(tt.entry))
			g.Expect(err.Error()).To(ContainSubstring("the platform admin to allow remote bases with the manager flag --allow-remote-bases"))
		})
	}
	NewWithT(t).Expect(rec.contacts.Load()).To(BeZero(), "the manager reached the tenant's server")
}

// TestKustomizeFSRefusesRemoteUnscanned is the defence behind the scan: kustomize run on its
// file system alone, as if the scan had missed the kustomization, still fetches nothing.
func TestKustomizeFSRefusesRemoteUnscanned(t *testing.T) {
	rec := startContactRecorder(t)
	u := "http://" + rec.Addr().String()
	tests := []struct {
		name  string
		files map[string]string
		file  string
	}{
		{name: "remote resource", files: kust("resources: [" + u + "/cm.yaml]"), file: "app/kustomization.yaml"},
		{name: "remote git base in a base", files: kust("resources: [../base]").with("base/kustomization.yaml", "resources: ['git::"+u+"/org/repo//x']\n"), file: "base/kustomization.yaml"},
		{name: "transformer configuration file", files: kust("resources: [cm.yaml]\ntransformers: [t.yaml]").
			with("app/t.yaml", "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: p}\npath: "+u+"/p.yaml\ntarget: {kind: ConfigMap}\n"), file: "app/t.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			root, err := filepath.EvalSymlinks(writeTree(t, tt.files))
			g.Expect(err).NotTo(HaveOccurred())
			fsys, err := newKustomizeFS(root, DefaultLimits)
			g.Expect(err).NotTo(HaveOccurred())
			_, err = runKustomize(fsys, filepath.Join(root, "app"))
			g.Expect(err).To(HaveOccurred())
			g.Expect(fsys.refused).NotTo(BeNil())
			g.Expect(fsys.refused.Reason).To(Equal(ReasonRemoteResourceRefused))
			g.Expect(fsys.refused.Error()).To(ContainSubstring(tt.file + ": "))
		})
	}
	NewWithT(t).Expect(rec.contacts.Load()).To(BeZero(), "the manager reached the tenant's server")
}

// TestBuildAllowRemoteBases shows the switch works: the same remote resource is fetched when
// the platform admin allows it.
func TestBuildAllowRemoteBases(t *testing.T) {
	g := NewWithT(t)
	rec := startContactRecorder(t)
	root := writeTree(t, kust("resources: [cm.yaml, http://"+rec.Addr().String()+"/cm.yaml]"))
	limits := DefaultLimits
	limits.AllowRemoteBases = true
	objects, err := Build(root, "app", limits)
	g.Expect(err).NotTo(HaveOccurred())
	var names []string
	for _, o := range objects {
		names = append(names, ObjectName(o.Unstructured))
	}
	g.Expect(names).To(Equal([]string{"ConfigMap/settings", "ConfigMap/fetched"}))
	g.Expect(rec.contacts.Load()).To(BeNumerically(">", 0))
}

// TestBuildLocalKustomizeFeatures is the other side of the refusals: local bases, components,
// generators, transformers (as files, inline and built from a folder), patches and URLs that
// are only values still build.
func TestBuildLocalKustomizeFeatures(t *testing.T) {
	g := NewWithT(t)
	root := writeTree(t, map[string]string{
		"base/kustomization.yaml": "resources: [cm.yaml, docs.example.com/extra.yaml]\n",
		"base/cm.yaml":            configMap,
		// A folder named like a host is a local path when it exists.
		"base/docs.example.com/extra.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n",
		"comp/kustomization.yaml":          "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\npatches: [{path: patch.yaml}]\n",
		"comp/patch.yaml":                  "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {fromComponent: 'yes'}\n",
		"tconf/kustomization.yaml":         "resources: [labels.yaml]\n",
		"tconf/labels.yaml":                "apiVersion: builtin\nkind: LabelTransformer\nmetadata: {name: l}\nlabels: {team: shop}\nfieldSpecs: [{path: metadata/labels, create: true}]\n",
		"app/kustomization.yaml": `resources: [../base]
components: [../comp]
commonAnnotations: {docs: 'https://docs.example.com/app'}
configMapGenerator: [{name: gen, files: [key=data.txt]}]
generatorOptions: {disableNameSuffixHash: true}
transformers:
- ../tconf
- prefix.yaml
- |
  apiVersion: builtin
  kind: AnnotationsTransformer
  metadata: {name: a}
  annotations: {source: 'git@example.com:org/repo'}
  fieldSpecs: [{path: metadata/annotations, create: true}]
patchesStrategicMerge:
- |-
  apiVersion: v1
  kind: ConfigMap
  metadata: {name: extra, annotations: {see: 'https://example.com/x'}}
`,
		"app/data.txt":    "hello\n",
		"app/prefix.yaml": "apiVersion: builtin\nkind: PrefixSuffixTransformer\nmetadata: {name: p}\nprefix: shop-\nfieldSpecs: [{path: metadata/name}]\n",
	})
	objects, err := Build(root, "app", DefaultLimits)
	g.Expect(err).NotTo(HaveOccurred())
	byName := map[string]Object{}
	for _, o := range objects {
		byName[o.GetName()] = o
	}
	g.Expect(byName).To(HaveLen(3))
	g.Expect(byName).To(HaveKey("shop-settings"))
	g.Expect(byName["shop-settings"].Object["data"]).To(HaveKeyWithValue("fromComponent", "yes"))
	g.Expect(byName["shop-settings"].GetLabels()).To(HaveKeyWithValue("team", "shop"))
	g.Expect(byName["shop-extra"].GetAnnotations()).To(HaveKeyWithValue("see", "https://example.com/x"))
	g.Expect(byName["shop-gen"].GetAnnotations()).To(HaveKeyWithValue("source", "git@example.com:org/repo"))
	g.Expect(byName["shop-gen"].Object["data"]).To(HaveKeyWithValue("key", "hello\n"))
}

// FuzzRemoteEntry holds remoteEntry to being a superset of what kustomize fetches: whatever
// kustomize's own Git URL parser accepts (reached through resource.Origin, which runs it on
// every path) and whatever its loader downloads (loader.IsRemoteFile, copied as it is
// internal). A local path that kustomize reads must, in turn, not be taken for remote.
func FuzzRemoteEntry(f *testing.F) {
	for _, s := range []string{
		"https://github.com/org/repo//deploy?ref=v1", "git::https://host/org/repo", "GIT::HTTPS://h/o/r",
		"git@github.com:org/repo.git", "ssh://git@host:2222/org/repo", "file:///srv/repo.git//x",
		"github.com/org/repo", "GitHub.com:org/repo", "https:host/x", "http://[::1]:80/x", " https://x",
		"../base", "base", "./github.com/x/y", "/abs/path", "a@b/c/d", "user@host/org/repo",
		"gitlab.com/org/repo", "apiVersion: v1\nkind: ConfigMap", "{a: https://x}", "git::git::https://x",
		"x/_git/repo", "https://dev.azure.com/org/project/_git/repo",
	} {
		f.Add(s)
	}
	// kustomize's parser logs a warning for each git:: it strips, to the standard logger.
	log.SetOutput(io.Discard)
	f.Cleanup(func() { log.SetOutput(os.Stderr) })
	f.Fuzz(func(t *testing.T, s string) {
		got := remoteEntry(s)
		if kustomizeClones(s) && !got {
			t.Fatalf("kustomize clones %q but remoteEntry says it is local", s)
		}
		if u, err := url.Parse(s); err == nil && (u.Scheme == "http" || u.Scheme == "https") && !got {
			t.Fatalf("kustomize downloads %q but remoteEntry says it is local", s)
		}
		if got && isPlainLocalPath(s) {
			t.Fatalf("local path %q taken for remote", s)
		}
	})
}

// kustomizeClones reports whether kustomize's Git RepoSpec parser accepts s.
func kustomizeClones(s string) (clones bool) {
	defer func() {
		if recover() != nil {
			clones = false
		}
	}()
	return (*resource.Origin)(nil).Append(s).Repo != ""
}

// isPlainLocalPath is a path made only of the characters repository paths are usually made of,
// with no @ and no colon: nothing kustomize could fetch.
func isPlainLocalPath(s string) bool {
	if s == "" || strings.HasPrefix(strings.ToLower(strings.TrimLeft(s, "/. ")), "github.com") {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./") == ""
}

// FuzzKustomizationRemoteEntries checks that however a value is written into a kustomization
// (quoted, escaped, folded), the scan of the file sees the value kustomize will use.
func FuzzKustomizationRemoteEntries(f *testing.F) {
	f.Add("https://h/x.yaml", "resources")
	f.Add("git@h:o/r", "components")
	f.Add("base", "resources")
	f.Add("github.com/o/r\n", "bases")
	f.Add("http://h/p.yaml", "patchesStrategicMerge")
	f.Fuzz(func(t *testing.T, value, field string) {
		switch field {
		case "resources", "components", "bases", "crds", "configurations", "generators", "transformers", "validators", "patchesStrategicMerge":
		default:
			field = "resources"
		}
		data, err := yaml.Marshal(map[string]any{field: []string{value}})
		if err != nil {
			return
		}
		problems := remoteEntries("k.yaml", data)
		_, inline := inlinePluginConfig(value)
		if remoteEntry(value) && len(problems) == 0 && !inline {
			t.Fatalf("%s entry %q is remote but the scan of %q found nothing", field, value, data)
		}
		for _, p := range problems {
			if p.File != "k.yaml" || !strings.Contains(p.Message, "--allow-remote-bases") {
				t.Fatalf("problem without file or hint: %+v", p)
			}
		}
	})
}
