//go:build e2e

package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/immutable-release/operator/internal/receiver"
	"github.com/immutable-release/operator/internal/testgit"
)

const (
	digestV1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	digestV2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	dead     = "sha256:dead000000000000000000000000000000000000000000000000000000000000"
)

var seq atomic.Int64

func deployment(image string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "` + image + `"}]
`
}

// story is a namespace, a repository with the sample application, and a release of it.
type story struct {
	t     *testing.T
	ns    string
	repo  *testgit.Repo
	url   string
	first string // the commit of the first release, web 1.0
	// hookReady is set once the namespace's Receiver serves its path.
	hookReady bool
}

// newStory creates the repository and applies the release with kubectl, then waits for it
// and its Deployment. spec holds extra lines of the release's spec, such as "drift: {mode: Report}".
func newStory(t *testing.T, timeout string, spec ...string) *story {
	t.Helper()
	s := createStory(t, timeout, spec...)
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=2m")
	s.kubectl("-n", s.ns, "wait", "--for=condition=Available", "deployment/web", "--timeout=1m")
	return s
}

// createStory is newStory without the wait: for releases that are not meant to become Ready.
func createStory(t *testing.T, timeout string, spec ...string) *story {
	t.Helper()
	n := seq.Add(1)
	repo, err := env.git.CreateRepo(fmt.Sprintf("acme/shop-%d.git", n), "main")
	if err != nil {
		t.Fatal(err)
	}
	s := &story{t: t, ns: fmt.Sprintf("e2e-%d", n), repo: repo, url: "http://" + env.gitProxy.addr + "/" + repo.Name}
	s.release(timeout, env.git.Username, env.git.Password, spec...)
	return s
}

// release pushes web 1.0 to the story's repository, and creates the namespace, the Git
// credentials and the release with kubectl.
func (s *story) release(timeout, username, password string, spec ...string) {
	s.t.Helper()
	var err error
	s.must(s.repo.Write(map[string]string{
		"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + digestV1),
		"deploy/prod/service.yaml":    "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
	}))
	s.first, err = s.repo.CommitAndPush("Release web 1.0")
	s.must(err)
	s.kubectl("create", "namespace", s.ns)
	s.kubectl("-n", s.ns, "create", "secret", "generic", "shop-git", "--from-literal=username="+username, "--from-literal=password="+password)
	s.kubectl("-n", s.ns, "create", "secret", "generic", "webhook", "--from-literal=token="+webhookSecret)
	receiver := fmt.Sprintf(`apiVersion: release.immutable.dev/v1alpha1
kind: Receiver
metadata: {name: git, namespace: %s}
spec: {type: github, secretRef: {name: webhook}}
---
`, s.ns)
	s.apply(receiver + s.releaseYAML("shop", "./deploy/prod", append([]string{"timeout: " + timeout}, spec...)...))
}

// releaseYAML is a release of path in the story's repository, with extra lines of spec.
func (s *story) releaseYAML(name, path string, spec ...string) string {
	release := fmt.Sprintf(`apiVersion: release.immutable.dev/v1alpha1
kind: ImmutableRelease
metadata: {name: %s, namespace: %s}
spec:
  git: {url: %q, ref: {branch: main}, secretRef: {name: shop-git}}
  path: %s
  interval: 1h
  prune: true
`, name, s.ns, s.url, path)
	for _, line := range spec {
		release += "  " + line + "\n"
	}
	return release
}

// apply applies YAML with kubectl.
func (s *story) apply(yaml string) {
	s.t.Helper()
	file := filepath.Join(s.t.TempDir(), "objects.yaml")
	s.must(os.WriteFile(file, []byte(yaml), 0o644))
	s.kubectl("apply", "-f", file)
}

func (s *story) must(err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
}

func (s *story) kubectl(args ...string) string {
	s.t.Helper()
	out, err := kubectl(args...)
	s.must(err)
	return out
}

func (s *story) image() string {
	out, _ := kubectl("-n", s.ns, "get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
	return out
}

func (s *story) condition(t, field string) string {
	out, _ := kubectl("-n", s.ns, "get", "immutablerelease", "shop", "-o", fmt.Sprintf(`jsonpath={.status.conditions[?(@.type=="%s")].%s}`, t, field))
	return out
}

// eventually polls f until it returns "" or the timeout passes, and fails with f's last word
// and the story's branch and release.
func (s *story) eventually(timeout time.Duration, f func() string) {
	s.t.Helper()
	waitFor(s.t, timeout, f, s.explain)
}

// waitFor polls f until it returns "" or the timeout passes, and fails with f's last word
// and what the explain functions say.
func waitFor(t *testing.T, timeout time.Duration, f func() string, explain ...func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			for _, e := range explain {
				msg += "\n" + e()
			}
			t.Fatalf("after %s: %s", timeout, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// explain describes the branch and the release, for a failure's message.
func (s *story) explain() string {
	_ = s.repo.Git("fetch", "-q", "origin")
	branch, _ := s.repo.Output("log", "--format=%h %s", "origin/main")
	release, _ := kubectl("-n", s.ns, "get", "immutablerelease", "shop", "-o",
		`jsonpath={range .status.history[*]}{.revision} {.result} {.images}{"\n"}{end}{.status.lastRollback}{"\n"}{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}`)
	return "branch:\n" + branch + "\nrelease history, last rollback, conditions:\n" + release + "operator log: " + env.operator.log
}

func (s *story) push(message string, files map[string]string) string {
	s.t.Helper()
	s.must(s.repo.Write(files))
	h, err := s.repo.CommitAndPush(message)
	s.must(err)
	return h
}

// hookURL is where the story's Receiver is served: the replica's address and the path the
// Receiver derives from its token, name and namespace (its status.webhookPath).
func (s *story) hookURL() string {
	return env.webhookURL + receiver.WebhookPath([]byte(webhookSecret), "git", s.ns)
}

// webhook posts a signed GitHub push event for the release's repository to the story's
// Receiver.
func (s *story) webhook() int {
	if !s.hookReady {
		s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "receiver/git", "--timeout=1m")
		if path := s.kubectl("-n", s.ns, "get", "receiver", "git", "-o", "jsonpath={.status.webhookPath}"); env.webhookURL+path != s.hookURL() {
			s.t.Fatalf("the Receiver serves %s, not the path derived from its token", path)
		}
		s.hookReady = true
	}
	code, err := deliverPush(s.hookURL(), s.url)
	s.must(err)
	return code
}

// deliverPush posts a signed GitHub push event for the repository at cloneURL to hookURL,
// a replica's address and a Receiver's path.
func deliverPush(hookURL, cloneURL string) (int, error) {
	body := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","repository":{"clone_url":%q}}`, cloneURL))
	mac := hmac.New(sha256.New, []byte(webhookSecret))
	mac.Write(body)
	req, err := http.NewRequest(http.MethodPost, hookURL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// specPushThroughWebhook: a new digest pushed with git, announced by the webhook, runs.
func specPushThroughWebhook(t *testing.T) {
	s := newStory(t, "1m")
	s.push("Release web 2.0", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + digestV2)})
	start := time.Now()
	if code := s.webhook(); code != http.StatusAccepted {
		t.Fatalf("webhook answered %d", code)
	}
	s.eventually(10*time.Second, func() string {
		if img := s.image(); img != "ghcr.io/acme/web@"+digestV2 {
			return "the Deployment still runs " + img
		}
		return ""
	})
	t.Logf("applied %s after the webhook call", time.Since(start).Round(time.Millisecond))
}

// specTagOnlyRefused: a tag-only image is refused with ImageNotPinned; the running version
// stays.
func specTagOnlyRefused(t *testing.T) {
	s := newStory(t, "1m")
	s.push("Use a tag", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web:2.0")})
	out, err := kubectlRelease("-n", s.ns, "reconcile", "shop", "--timeout", "1m")
	if err == nil || !strings.Contains(out, "ImageNotPinned") || !strings.Contains(out, `image "ghcr.io/acme/web:2.0" has a tag but no digest`) {
		t.Fatalf("reconcile did not report ImageNotPinned: %v %s", err, out)
	}
	if img := s.image(); img != "ghcr.io/acme/web@"+digestV1 {
		t.Fatalf("the running version changed to %s", img)
	}
}

// specFailedRolloutReverted: a digest whose pods never become ready is reverted in Git,
// the previous digest runs again, and the same digest pushed again is quarantined.
func specFailedRolloutReverted(t *testing.T) {
	s := newStory(t, "5s")
	bad := s.push("Release a broken build", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + dead)})
	if code := s.webhook(); code != http.StatusAccepted {
		t.Fatalf("webhook answered %d", code)
	}
	s.eventually(time.Minute, func() string {
		out, _ := s.repo.Output("ls-remote", "origin", "refs/heads/main")
		if strings.HasPrefix(out, bad) {
			return "no revert on the branch yet"
		}
		return ""
	})
	s.must(s.repo.Git("pull", "-q", "--ff-only", "origin", "main"))
	msg, err := s.repo.Output("log", "-1", "--format=%B")
	s.must(err)
	if !strings.Contains(msg, "This reverts commit "+bad+".") || !strings.Contains(msg, "Failed-Revision: "+bad) {
		t.Fatalf("unexpected revert commit:\n%s", msg)
	}
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=1m")
	s.kubectl("-n", s.ns, "wait", "--for=condition=Available", "deployment/web", "--timeout=1m")
	if img := s.image(); img != "ghcr.io/acme/web@"+digestV1 {
		t.Fatalf("after the revert the Deployment runs %s", img)
	}

	s.push("Try again", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + dead)})
	s.webhook()
	s.eventually(30*time.Second, func() string {
		if r := s.condition("Ready", "reason"); r != "QuarantinedDigest" {
			return "Ready reason is " + r
		}
		return ""
	})
	if img := s.image(); img != "ghcr.io/acme/web@"+digestV1 {
		t.Fatalf("a quarantined digest reached the Deployment: %s", img)
	}
}

// specGitServerDown: while the Git server is away the release says GitOperationFailed and
// the workloads stay; when it is back the release is Ready again without anyone acting.
func specGitServerDown(t *testing.T) {
	s := newStory(t, "1m")
	env.gitProxy.stop()
	restarted := false
	defer func() {
		if !restarted {
			_ = env.gitProxy.start()
		}
	}()
	out, err := kubectlRelease("-n", s.ns, "reconcile", "shop", "--timeout", "1m")
	if err == nil || !strings.Contains(out, "GitOperationFailed") {
		t.Fatalf("reconcile with the Git server down: %v %s", err, out)
	}
	if img := s.image(); img != "ghcr.io/acme/web@"+digestV1 {
		t.Fatalf("the Deployment changed while Git was down: %s", img)
	}
	s.must(env.gitProxy.start())
	restarted = true
	if resp, err := http.Get(s.url + "/info/refs?service=git-upload-pack"); err != nil {
		t.Logf("the Git server is not reachable through the proxy: %v", err)
	} else {
		resp.Body.Close()
		t.Logf("Git server back at %s (%s)", time.Now().Format("15:04:05.000"), resp.Status)
	}
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=2m")
}

// specOperatorKilledDuringRollback: the operator is killed with SIGKILL while a bad release
// rolls out; restarted, it reverts it exactly once and the previous digest runs again.
func specOperatorKilledDuringRollback(t *testing.T) {
	s := newStory(t, "5s")
	bad := s.push("Release a broken build", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + dead)})
	s.webhook()
	s.eventually(20*time.Second, func() string {
		if img := s.image(); img != "ghcr.io/acme/web@"+dead {
			return "the bad revision is not applied yet"
		}
		return ""
	})
	env.operator.kill()
	time.Sleep(6 * time.Second) // past the timeout, with nobody watching
	s.must(env.operator.start())
	s.eventually(time.Minute, func() string {
		if img := s.image(); img != "ghcr.io/acme/web@"+digestV1 {
			return "the Deployment runs " + img
		}
		return ""
	})
	s.must(s.repo.Git("pull", "-q", "--ff-only", "origin", "main"))
	log, err := s.repo.Output("log", "--format=%B", "main")
	s.must(err)
	if n := strings.Count(log, "Failed-Revision: "+bad); n != 1 {
		t.Fatalf("%d reverts of %s on the branch", n, bad)
	}
}

func TestPushThroughWebhook(t *testing.T)           { specPushThroughWebhook(t) }
func TestTagOnlyRefused(t *testing.T)               { specTagOnlyRefused(t) }
func TestFailedRolloutReverted(t *testing.T)        { specFailedRolloutReverted(t) }
func TestGitServerDown(t *testing.T)                { specGitServerDown(t) }
func TestOperatorKilledDuringRollback(t *testing.T) { specOperatorKilledDuringRollback(t) }
