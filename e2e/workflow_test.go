//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/immutable-release/operator/internal/manifest"
)

// runs waits until the Deployment names image.
func (s *story) runs(timeout time.Duration, image string) {
	s.t.Helper()
	s.eventually(timeout, func() string {
		if img := s.image(); img != image {
			return "the Deployment runs " + img + ", not " + image
		}
		return ""
	})
}

// specRollbackTo: kubectl release rollback --to an older revision reverts the commits after
// it in Git, and the older digest runs again.
func specRollbackTo(t *testing.T) {
	s := newStory(t, "1m")
	v2 := s.push("Release web 2.0", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + digestV2)})
	s.webhook()
	s.runs(30*time.Second, "ghcr.io/acme/web@"+digestV2)
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=1m")

	out, err := kubectlRelease("-n", s.ns, "rollback", "shop", "--to", s.first[:7], "--timeout", "1m")
	if err != nil || !strings.Contains(out, "reverted in Git by commit") {
		t.Fatalf("rollback --to %s: %v %s", s.first[:7], err, out)
	}
	s.must(s.repo.Git("pull", "-q", "--ff-only", "origin", "main"))
	msg, err := s.repo.Output("log", "-1", "--format=%B")
	s.must(err)
	if !strings.Contains(msg, v2) {
		t.Fatalf("the head of the branch does not revert %s:\n%s", v2, msg)
	}
	if log, _ := s.repo.Output("log", "--format=%H", "main"); !strings.Contains(log, v2) || !strings.Contains(log, s.first) {
		t.Fatalf("the history lost a commit:\n%s", log)
	}
	s.runs(30*time.Second, "ghcr.io/acme/web@"+digestV1)
}

// specPrune: a file removed from Git is deleted from the cluster.
func specPrune(t *testing.T) {
	s := newStory(t, "1m")
	s.kubectl("-n", s.ns, "get", "service", "web")
	s.must(s.repo.Remove("deploy/prod/service.yaml"))
	_, err := s.repo.CommitAndPush("Retire the web Service")
	s.must(err)
	s.webhook()
	s.eventually(30*time.Second, func() string {
		if out, err := kubectl("-n", s.ns, "get", "service", "web"); err == nil || !strings.Contains(out, "NotFound") {
			return "the Service is still there: " + out
		}
		return ""
	})
	if img := s.image(); img != "ghcr.io/acme/web@"+digestV1 {
		t.Fatalf("pruning changed the Deployment: %s", img)
	}
}

// specSuspendResume: a suspended release ignores a push; resumed, it applies it at once.
func specSuspendResume(t *testing.T) {
	s := newStory(t, "1m")
	if out, err := kubectlRelease("-n", s.ns, "suspend", "shop"); err != nil {
		t.Fatal(err, out)
	}
	s.push("Release web 2.0", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + digestV2)})
	s.webhook()
	if out, err := kubectlRelease("-n", s.ns, "reconcile", "shop", "--timeout", "10s"); err == nil || !strings.Contains(out, "suspended") {
		t.Fatalf("reconcile of a suspended release: %v %s", err, out)
	}
	time.Sleep(3 * time.Second) // time enough for a webhook-driven apply, which takes well under a second
	if img := s.image(); img != "ghcr.io/acme/web@"+digestV1 {
		t.Fatalf("a suspended release applied a push: %s", img)
	}
	if out, err := kubectlRelease("-n", s.ns, "resume", "shop"); err != nil {
		t.Fatal(err, out)
	}
	s.runs(30*time.Second, "ghcr.io/acme/web@"+digestV2)
}

// specImpersonationWithoutRights: a release that names a service account without rights
// says so in Ready=False, and nothing is applied.
func specImpersonationWithoutRights(t *testing.T) {
	s := createStory(t, "1m", "serviceAccountName: deployer")
	s.kubectl("-n", s.ns, "create", "serviceaccount", "deployer")
	s.eventually(30*time.Second, func() string {
		if st, msg := s.condition("Ready", "status"), s.condition("Ready", "message"); st != "False" || !strings.Contains(msg, "rights") {
			return "Ready is " + st + ": " + msg
		}
		return ""
	})
	t.Logf("Ready=False %s: %s", s.condition("Ready", "reason"), s.condition("Ready", "message"))
	for _, kind := range []string{"deployment", "service"} {
		if out, err := kubectl("-n", s.ns, "get", kind, "web"); err == nil || !strings.Contains(out, "NotFound") {
			t.Errorf("the %s was applied without rights: %v %s", kind, err, out)
		}
	}
}

func TestRollbackTo(t *testing.T)                 { specRollbackTo(t) }
func TestPrune(t *testing.T)                      { specPrune(t) }
func TestSuspendResume(t *testing.T)              { specSuspendResume(t) }
func TestImpersonationWithoutRights(t *testing.T) { specImpersonationWithoutRights(t) }

// forcePush replaces the branch with a new history of one commit holding files, as a
// `git push --force` of a rewritten branch does, and returns that commit.
func (s *story) forcePush(message string, files map[string]string) string {
	s.t.Helper()
	s.must(s.repo.Git("checkout", "-q", "--orphan", "rewritten"))
	s.must(s.repo.Write(files))
	s.must(s.repo.Git("add", "--all"))
	s.must(s.repo.Git("commit", "-q", "-m", message))
	s.must(s.repo.Git("branch", "-M", "rewritten", "main"))
	s.must(s.repo.Git("push", "-q", "--force", "origin", "main"))
	h, err := s.repo.Head()
	s.must(err)
	return h
}

// specForcePush: the branch is force-pushed to a history without the applied revision. A
// head that does not validate is refused and the workloads stay; a rollback then says the
// applied revision is no longer in the history; a head that validates is applied.
func specForcePush(t *testing.T) {
	s := newStory(t, "1m")
	v2 := s.push("Release web 2.0", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + digestV2)})
	s.webhook()
	s.runs(30*time.Second, "ghcr.io/acme/web@"+digestV2)
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=1m")

	service := "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n"
	s.forcePush("Rewrite with a tag", map[string]string{
		"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web:3.0"),
		"deploy/prod/service.yaml":    service,
	})
	out, err := kubectlRelease("-n", s.ns, "reconcile", "shop", "--timeout", "1m")
	if err == nil || !strings.Contains(out, "ImageNotPinned") {
		t.Fatalf("reconcile of a rewritten branch with a tag: %v %s", err, out)
	}
	if img := s.image(); img != "ghcr.io/acme/web@"+digestV2 {
		t.Fatalf("the refused head changed the Deployment to %s", img)
	}

	out, err = kubectlRelease("-n", s.ns, "rollback", "shop", "--to", s.first[:7], "--timeout", "1m")
	if err == nil || !strings.Contains(out, v2) || !strings.Contains(out, "force-pushed") {
		t.Fatalf("rollback of a revision force-pushed away: %v %s", err, out)
	}
	t.Logf("rollback after the force-push: %s", strings.TrimSpace(out))
	if img := s.image(); img != "ghcr.io/acme/web@"+digestV2 {
		t.Fatalf("the failed rollback changed the Deployment to %s", img)
	}

	v3 := "ghcr.io/acme/web@sha256:3333333333333333333333333333333333333333333333333333333333333333"
	head := s.forcePush("Rewrite with web 3.0", map[string]string{"deploy/prod/deployment.yaml": deployment(v3), "deploy/prod/service.yaml": service})
	s.webhook()
	s.runs(30*time.Second, v3)
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=1m")
	if rev, _ := kubectl("-n", s.ns, "get", "immutablerelease", "shop", "-o", "jsonpath={.status.lastAppliedRevision}"); !strings.HasSuffix(rev, head) {
		t.Fatalf("lastAppliedRevision is %s, not the new head %s", rev, head)
	}
}

func TestForcePush(t *testing.T) { specForcePush(t) }

// specManifestTooLarge: a commit that brings a manifest file over the size limit (4 MiB,
// manifest.DefaultLimits) along with a new digest is refused as a whole with a message that
// names the file and the limit; the running version stays.
func specManifestTooLarge(t *testing.T) {
	s := newStory(t, "1m")
	big := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n  blob: \"" + strings.Repeat("x", int(manifest.DefaultLimits.MaxFileSize)+1) + "\"\n"
	s.push("Release web 2.0 with a large ConfigMap", map[string]string{
		"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + digestV2),
		"deploy/prod/big.yaml":        big,
	})
	out, err := kubectlRelease("-n", s.ns, "reconcile", "shop", "--timeout", "1m")
	if err == nil || !strings.Contains(out, "big.yaml") || !strings.Contains(out, fmt.Sprintf("over the limit of %d bytes", manifest.DefaultLimits.MaxFileSize)) {
		t.Fatalf("reconcile with a manifest over the limit: %v %s", err, out)
	}
	t.Logf("refused: %s", strings.TrimSpace(out))
	if img := s.image(); img != "ghcr.io/acme/web@"+digestV1 {
		t.Fatalf("part of the refused revision was applied: %s", img)
	}
	if out, err := kubectl("-n", s.ns, "get", "configmap", "big"); err == nil {
		t.Fatalf("the large ConfigMap was applied: %s", out)
	}
}

func TestManifestTooLarge(t *testing.T) { specManifestTooLarge(t) }
