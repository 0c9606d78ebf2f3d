//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/immutable-release/operator/internal/testgit"
)

const leaseName = "immutable-release.release.immutable.dev"

// alive says whether the operator process is still running.
func (o *operator) alive() bool {
	select {
	case err := <-o.exited:
		o.exited <- err // kill reads it again
		return false
	default:
		return true
	}
}

func leaseHolder() string {
	out, _ := kubectl("-n", "immutable-release-system", "get", "lease", leaseName, "-o", "jsonpath={.spec.holderIdentity}")
	return out
}

// pushV2 pushes web 2.0, announces it, and waits until it runs.
func (s *story) pushV2(timeout time.Duration) {
	s.t.Helper()
	s.push("Release web 2.0", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + digestV2)})
	if code := s.webhook(); code != http.StatusAccepted {
		s.t.Logf("webhook answered %d", code)
	}
	s.runs(timeout, "ghcr.io/acme/web@"+digestV2)
}

// specAPIServerRestart: kube-apiserver stops and starts again on the same port and etcd;
// the operator reconnects on its own, and a push after the restart is applied.
func specAPIServerRestart(t *testing.T) {
	s := newStory(t, "1m")
	start := time.Now()
	s.must(env.cp.RestartAPIServer())
	t.Logf("kube-apiserver restarted in %s", time.Since(start).Round(time.Millisecond))
	if !env.operator.alive() {
		// An outage longer than the lease's renew deadline (10s) makes the manager give up
		// leadership and exit, by design, and a kubelet starts it again. Any other exit is a
		// failure.
		log, _ := os.ReadFile(env.operator.log)
		if !strings.Contains(string(log), "leader election lost") {
			t.Fatalf("the operator exited during the restart:\n%s", tail(string(log), 3000))
		}
		t.Logf("the outage outlasted the lease's renew deadline: the operator exited (leader election lost) and is started again, as a kubelet would")
		env.operator.kill()
		s.must(env.operator.start())
	}
	s.pushV2(time.Minute)
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=1m")
	if !env.operator.alive() {
		t.Fatal("the operator exited after the restart")
	}
}

// specLeaderFailover: a second replica waits; the leader is killed with SIGKILL; the second
// takes the lease once it expires, and applies a push. It stays the operator of the stories
// after.
func specLeaderFailover(t *testing.T) {
	s := newStory(t, "1m")
	standby, err := startOperator()
	s.must(err)
	leader := leaseHolder()
	if leader == "" {
		t.Fatal("no lease holder")
	}
	// The standby must not act while the leader lives: its log says it is waiting.
	time.Sleep(2 * time.Second)
	if h := leaseHolder(); h != leader {
		t.Fatalf("the lease moved from %s to %s with the leader alive", leader, h)
	}
	// (The Receiver controller runs on every replica, since every replica serves webhooks;
	// the release controller's workers must wait.)
	if log, _ := os.ReadFile(standby.log); strings.Contains(string(log), `"msg":"Starting workers","controller":"immutablerelease"`) {
		t.Fatalf("the standby started its workers while the leader held the lease:\n%s", tail(string(log), 1500))
	}

	env.operator.kill()
	killed := time.Now()
	env.operator, env.webhookURL = standby, standby.webhookURL
	s.eventually(30*time.Second, func() string {
		if h := leaseHolder(); h == leader {
			return "the lease is still held by the killed leader " + h
		}
		return ""
	})
	t.Logf("the standby took the lease %s after the leader was killed (lease duration 15s)", time.Since(killed).Round(time.Millisecond))
	s.pushV2(30 * time.Second)
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=1m")
}

func TestAPIServerRestart(t *testing.T) { specAPIServerRestart(t) }
func TestLeaderFailover(t *testing.T)   { specLeaderFailover(t) }

// specKilledInALoop: the operator is killed with SIGKILL at a random moment after each of
// 20 pushes, half of them good digests (killed during the apply) and half digests whose
// rollout fails (killed during the health check, the revert or its apply), and started again
// on the same storage. After each restart it converges; at the end every failed revision was
// reverted exactly once and no pushed commit is lost. Leader election is off for this
// replica: each restart would otherwise wait out the dead process's lease.
func specKilledInALoop(t *testing.T) {
	s := newStory(t, "3s")
	seed := time.Now().UnixNano()
	rnd := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("random seed %d", seed)

	env.operator.kill()
	solo, err := startOperator("--leader-elect=false")
	s.must(err)
	main, mainURL := env.operator, env.webhookURL
	env.operator, env.webhookURL = solo, solo.webhookURL
	defer func() {
		solo.kill()
		env.operator, env.webhookURL = main, mainURL
		// The lease still names the replica killed at the start. client-go counts a lease's
		// age from when a candidate first sees it, so a new process would wait a full lease
		// duration; the holder is certainly dead, so free it.
		_, _ = kubectl("-n", "immutable-release-system", "delete", "lease", leaseName, "--ignore-not-found")
		s.must(main.start())
	}()

	good := "ghcr.io/acme/web@" + digestV1
	var pushed, failed []string
	moments := map[string]int{}
	for i := range 20 {
		s.must(s.repo.Git("pull", "-q", "--ff-only", "origin", "main"))
		bad := i%2 == 1
		image := fmt.Sprintf("ghcr.io/acme/web@sha256:%064x", 0xa000+i)
		window := 600 * time.Millisecond
		if bad {
			image = fmt.Sprintf("ghcr.io/acme/web@sha256:dead%060x", i)
			window = 6 * time.Second // past the 3s timeout: into the revert
		}
		h := s.push(fmt.Sprintf("Release %d", i), map[string]string{"deploy/prod/deployment.yaml": deployment(image)})
		pushed = append(pushed, h)
		s.webhook()
		time.Sleep(time.Duration(rnd.Int64N(int64(window))))
		env.operator.kill()
		moments[s.killedAt(h, image)]++
		s.must(env.operator.start())

		if bad {
			failed = append(failed, h)
			s.eventually(time.Minute, func() string {
				out, _ := s.repo.Output("ls-remote", "origin", "refs/heads/main")
				if strings.HasPrefix(out, h) {
					return fmt.Sprintf("push %d: no revert of %s yet", i, h)
				}
				return ""
			})
		} else {
			good = image
		}
		s.eventually(time.Minute, func() string {
			if img := s.image(); img != good {
				return fmt.Sprintf("push %d: the Deployment runs %s, not %s", i, img, good)
			}
			if st := s.condition("Ready", "status"); st != "True" {
				return fmt.Sprintf("push %d: Ready is %s: %s", i, st, s.condition("Ready", "message"))
			}
			return ""
		})
	}

	t.Logf("where the kills landed: %v", moments)
	s.must(s.repo.Git("pull", "-q", "--ff-only", "origin", "main"))
	hashes, err := s.repo.Output("log", "--format=%H", "main")
	s.must(err)
	for _, h := range append([]string{s.first}, pushed...) {
		if !strings.Contains(hashes, h) {
			t.Errorf("commit %s is no longer on the branch", h)
		}
	}
	bodies, err := s.repo.Output("log", "--format=%B", "main")
	s.must(err)
	for _, h := range failed {
		if n := strings.Count(bodies, "Failed-Revision: "+h); n != 1 {
			t.Errorf("%d reverts of %s on the branch", n, h)
		}
	}
	if n := strings.Count(bodies, "Failed-Revision: "); n != len(failed) {
		t.Errorf("%d revert commits for %d failed revisions", n, len(failed))
	}
}

// killedAt says, with the operator dead, how far it got with pushed commit h of image.
func (s *story) killedAt(h, image string) string {
	switch head, _ := s.repo.Output("ls-remote", "origin", "refs/heads/main"); {
	case !strings.HasPrefix(head, h):
		return "after the revert was pushed"
	case s.image() != image:
		return "before the apply"
	case s.condition("Ready", "status") == "True":
		return "applied, Ready"
	default:
		return "applied, not Ready"
	}
}

func TestKilledInALoop(t *testing.T) { specKilledInALoop(t) }

// specPushRaceDuringRevert: a teammate keeps pushing documentation (outside the release's
// path) while a failed rollout is being reverted, so the operator's revert push races
// theirs. A lost race is built again on the new head: one revert lands, every commit of
// the teammate stays on the branch (nothing is force-pushed), and web 1.0 runs again. The
// race is likely, not forced (the integration test TestRevertPushRace forces it); the
// attempts it took are logged from the operator's metrics.
func specPushRaceDuringRevert(t *testing.T) {
	s := newStory(t, "3s")
	mate, err := testgit.NewClone(filepath.Join(t.TempDir(), "mate"), s.repo.URL(), s.repo.PushURL(), "main")
	s.must(err)
	s.must(mate.Git("pull", "-q", "origin", "main"))
	clones := revertClones(t)

	bad := s.push("Release a broken build", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + dead)})
	s.webhook()
	// The teammate starts once the broken revision is the one being rolled out, so that it
	// is the revision that fails.
	s.eventually(30*time.Second, func() string {
		out, _ := kubectl("-n", s.ns, "get", "immutablerelease", "shop", "-o", "jsonpath={.status.lastAttemptedRevision}")
		if !strings.HasSuffix(out, bad) {
			return "the release attempts " + out + ", not " + bad
		}
		return ""
	})
	s.must(mate.Git("pull", "-q", "--rebase", "origin", "main"))
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	var theirs []string
	rejected, after := 0, 0
	for deadline := time.Now().Add(90 * time.Second); after < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("no revert of %s on the branch after 90s; operator log: %s", bad, env.operator.log)
		}
		time.Sleep(time.Duration(rnd.Int64N(int64(150 * time.Millisecond))))
		s.must(mate.Write(map[string]string{fmt.Sprintf("docs/note-%d.md", len(theirs)): "A note.\n"}))
		s.must(mate.Git("add", "--all"))
		s.must(mate.Git("commit", "-q", "-m", fmt.Sprintf("Add note %d", len(theirs))))
		for mate.Git("push", "-q", "origin", "HEAD") != nil {
			rejected++
			s.must(mate.Git("pull", "-q", "--rebase", "origin", "main"))
		}
		h, err := mate.Head()
		s.must(err)
		theirs = append(theirs, h)
		if log, _ := mate.Output("log", "--format=%B", "main"); strings.Contains(log, "Failed-Revision: "+bad) {
			after++
		}
	}
	t.Logf("the teammate pushed %d commits, %d of them after losing a race; the operator cloned %d times to push its revert",
		len(theirs), rejected, revertClones(t)-clones)

	s.runs(time.Minute, "ghcr.io/acme/web@"+digestV1)
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=1m")
	s.must(mate.Git("pull", "-q", "--rebase", "origin", "main"))
	hashes, err := mate.Output("log", "--format=%H", "main")
	s.must(err)
	for _, h := range append([]string{s.first, bad}, theirs...) {
		if !strings.Contains(hashes, h) {
			t.Errorf("commit %s is no longer on the branch", h)
		}
	}
	bodies, err := mate.Output("log", "--format=%B", "main")
	s.must(err)
	if n := strings.Count(bodies, "Failed-Revision: "); n != 1 {
		t.Errorf("%d revert commits for one failed revision", n)
	}
}

// revertClones reads immutable_release_git_revert_clones_total from the operator.
func revertClones(t *testing.T) int {
	t.Helper()
	resp, err := http.Get("http://" + env.operator.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "immutable_release_git_revert_clones_total "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatalf("no immutable_release_git_revert_clones_total in the operator's metrics")
	return 0
}

func TestPushRaceDuringRevert(t *testing.T) { specPushRaceDuringRevert(t) }
