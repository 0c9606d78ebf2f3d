//go:build e2e

package e2e

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
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
	if log, _ := os.ReadFile(standby.log); strings.Contains(string(log), "Starting workers") {
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
