//go:build e2e

package e2e

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/immutable-release/operator/internal/testgit"
)

// Stories as a hostile tenant: each attack is refused with its reason, nothing is applied
// or written outside the tenant's own storage, and another tenant's release stays Ready and
// takes a push meanwhile.

// takesPush pushes web 1.1 to the victim's repository, asks for a reconcile with the
// plugin, and waits until the Deployment runs it.
func (s *story) takesPush() {
	s.t.Helper()
	s.push("Release web 1.1", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + digestV2)})
	if out, err := kubectlRelease("reconcile", "shop", "-n", s.ns, "--timeout=2m"); err != nil {
		s.t.Fatalf("the other tenant's push: %v\n%s\n%s", err, out, s.explain())
	}
	s.eventually(time.Minute, func() string {
		if img := s.image(); img != "ghcr.io/acme/web@"+digestV2 {
			return "the other tenant's Deployment runs " + img
		}
		return ""
	})
}

// refused waits until the story's release is Ready=False with reason, and returns the message.
func (s *story) refused(reason string) string {
	s.t.Helper()
	s.eventually(time.Minute, func() string {
		if got := s.condition("Ready", "reason"); got != reason {
			return fmt.Sprintf("Ready reason %q, want %q: %s", got, reason, s.condition("Ready", "message"))
		}
		return ""
	})
	return s.condition("Ready", "message")
}

// specTenantEscapesNamespace: a tenant commits a ClusterRoleBinding that makes its namespace
// cluster-admin and a Deployment into another tenant's namespace. The revision is refused
// whole; neither object exists, the last good revision stays; the other tenant goes on.
func specTenantEscapesNamespace(t *testing.T) {
	victim := newStory(t, "1m")
	attacker := newStory(t, "1m")
	binding := attacker.ns + "-escalate"
	attacker.push("Make us cluster-admin", map[string]string{
		"deploy/prod/escalate.yaml": `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ` + binding + `}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: default, namespace: ` + attacker.ns + `}]
`,
		"deploy/prod/takeover.yaml": strings.Replace(deployment("ghcr.io/evil/miner@"+digestV2), "metadata: {name: web}", "metadata: {name: web, namespace: "+victim.ns+"}", 1),
	})
	_, _ = kubectlRelease("reconcile", "shop", "-n", attacker.ns, "--timeout=20s")
	msg := attacker.refused("AccessDenied")
	for _, want := range []string{"ClusterRoleBinding/" + binding + ": a cluster-scoped object", `Deployment/` + victim.ns + `/web: namespace "` + victim.ns + `" is not the release's own namespace`} {
		if !strings.Contains(msg, want) {
			t.Errorf("the refusal does not say %q: %s", want, msg)
		}
	}
	if out, err := kubectl("get", "clusterrolebinding", binding); err == nil {
		t.Errorf("the ClusterRoleBinding was applied: %s", out)
	}
	if img := victim.image(); img != "ghcr.io/acme/web@"+digestV1 {
		t.Errorf("the other tenant's Deployment runs %s", img)
	}
	if img := attacker.image(); img != "ghcr.io/acme/web@"+digestV1 {
		t.Errorf("the attacker's own Deployment changed to %s: the revision was half-applied", img)
	}
	victim.takesPush()
}

// specHostileTree: a tenant's repository serves a commit whose tree has a folder named ..
// (no Git client makes one; a hostile server does), aimed at the store next to its own. The
// checkout is refused with UnsafeRepository and nothing lands outside its folder.
func specHostileTree(t *testing.T) {
	victim := newStory(t, "1m")
	attacker := newStory(t, "1m")
	attacker.pushTree(t, "..", "config", "[core]\n\tbare = false\n")
	_, _ = kubectlRelease("reconcile", "shop", "-n", attacker.ns, "--timeout=20s")
	msg := attacker.refused("UnsafeRepository")
	if !strings.Contains(msg, `".."`) {
		t.Errorf("the refusal does not name the entry: %s", msg)
	}
	// Nothing was written outside a store's own objects: the only file named config under
	// the storage path is each store's objects.git/config.
	err := filepath.WalkDir(env.operator.storage, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "config" && filepath.Base(filepath.Dir(p)) != "objects.git" {
			t.Errorf("the hostile tree wrote %s", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	victim.takesPush()
}

// pushTree pushes, on top of the story's branch, a commit whose root tree holds the
// current deploy folder and a folder named dir holding one file: written with git's
// plumbing, since porcelain refuses such names.
func (s *story) pushTree(t *testing.T, dir, file, content string) {
	t.Helper()
	git := func(stdin []byte, args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = s.repo.Dir
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	raw := func(hash string) string {
		b, err := hex.DecodeString(hash)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	blob := git([]byte(content), "hash-object", "-w", "--stdin")
	inner := git([]byte("100644 "+file+"\x00"+raw(blob)), "hash-object", "-w", "-t", "tree", "--literally", "--stdin")
	deploy := git(nil, "rev-parse", "HEAD:deploy")
	// Entries sorted by name, as Git orders them: ".." before "deploy".
	root := git([]byte("40000 "+dir+"\x00"+raw(inner)+"40000 deploy\x00"+raw(deploy)), "hash-object", "-w", "-t", "tree", "--literally", "--stdin")
	commit := git(nil, "-c", "user.name=Mallory", "-c", "user.email=mallory@example.com", "commit-tree", root, "-p", "HEAD", "-m", "Hostile tree")
	git(nil, "push", "--quiet", "origin", commit+":refs/heads/main")
}

// specTarpits: a tenant points four releases at Git servers that never answer. Each shows
// it is waiting, then fails with its own Git timeout; another tenant's push is applied
// meanwhile.
func specTarpits(t *testing.T) {
	victim := newStory(t, "1m")
	server := testgit.Tarpit(t)
	ns := fmt.Sprintf("e2e-tarpit-%d", seq.Add(1))
	victim.kubectl("create", "namespace", ns)
	var manifests strings.Builder
	for i := range 4 {
		fmt.Fprintf(&manifests, `---
apiVersion: release.immutable.dev/v1alpha1
kind: ImmutableRelease
metadata: {name: tarpit-%d, namespace: %s}
spec:
  git: {url: "%s/tarpit-%d.git", ref: {branch: main}, timeout: 20s}
  path: ./deploy
  interval: 1h
`, i, ns, server, i)
	}
	file := filepath.Join(t.TempDir(), "tarpits.yaml")
	victim.must(os.WriteFile(file, []byte(manifests.String()), 0o644))
	victim.kubectl("apply", "-f", file)
	victim.eventually(30*time.Second, func() string {
		out, _ := kubectl("-n", ns, "get", "immutablereleases", "-o", `jsonpath={range .items[*]}{.status.conditions[?(@.type=="Reconciling")].message}{"\n"}{end}`)
		if strings.Count(out, "the Git server has not answered yet") < 4 {
			return "the tarpits' releases are not all waiting: " + out
		}
		return ""
	})
	start := time.Now()
	victim.takesPush()
	t.Logf("the other tenant's push applied %s after asking, with four tarpits live", time.Since(start).Round(time.Millisecond))
	victim.eventually(time.Minute, func() string {
		out, _ := kubectl("-n", ns, "get", "immutablereleases", "-o", `jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].reason}{"\n"}{end}`)
		if strings.Count(out, "GitOperationFailed") < 4 {
			return "the tarpits' releases have not all failed: " + out
		}
		return ""
	})
}

func TestTenantEscapesNamespace(t *testing.T) { specTenantEscapesNamespace(t) }
func TestHostileTree(t *testing.T)            { specHostileTree(t) }
func TestTarpits(t *testing.T)                { specTarpits(t) }
