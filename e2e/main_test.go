//go:build e2e

// Package e2e runs user stories against the operator running as its own process, installed
// the way a user installs it (kubectl apply of the CRD and RBAC, the manager's flags from
// config/manager), on the full local control plane with a real Git server, driven with
// kubectl, git and the kubectl-release plugin. `make e2e` runs them.
package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/immutable-release/operator/internal/controlplane"
	"github.com/immutable-release/operator/internal/testgit"
)

// env is what every story shares.
var env struct {
	root       string // the module root
	bin        string // kubectl, manager, kubectl-release
	kubeconfig string // an administrator's
	git        *testgit.Server
	gitProxy   *proxy // the Git server's address as releases see it; can be stopped
	cp         *controlplane.ControlPlane
	operator   *operator  // the replica the stories talk to; faults may replace it
	webhookURL string     // the webhook receiver of env.operator: its address, before each Receiver's path
	events     *eventSink // every operator's --events-addr: what a Flux notification-controller would get
	// operatorDirs hold the operators' logs and storage: removed when every story passed,
	// kept for reading when one failed.
	operatorDirs []string
}

// webhookSecret is the token of every story's Receiver (each in its own namespace, so each
// serves its own path).
const webhookSecret = "e2e-webhook-secret"

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx := context.Background()
	wd, _ := os.Getwd()
	env.root = filepath.Dir(wd)
	env.bin = filepath.Join(env.root, "bin")
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "e2e:", err); return 1 }

	for _, cmd := range []string{"manager", "kubectl-release"} {
		build := exec.Command("go", "build", "-o", filepath.Join(env.bin, cmd), "./cmd/"+cmd)
		build.Dir = env.root
		out, err := build.CombinedOutput()
		if err != nil {
			return fail(fmt.Errorf("building %s: %v: %s", cmd, err, out))
		}
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{Workloads: true, BinDir: env.bin})
	if err != nil {
		return fail(err)
	}
	defer cp.Stop()
	env.cp = cp
	env.kubeconfig = cp.KubeconfigPath

	if env.git, err = testgit.NewServer(); err != nil {
		return fail(err)
	}
	defer env.git.Stop()
	defer giteaServer.Stop()
	if env.gitProxy, err = newProxy(strings.TrimPrefix(env.git.HTTPAddress(), "http://")); err != nil {
		return fail(err)
	}
	defer env.gitProxy.stop()

	// Install as a user does: the CRD and the operator's RBAC with kubectl.
	if _, err := kubectl("apply", "--server-side", "-k", filepath.Join(env.root, "hack/demo/install")); err != nil {
		return fail(err)
	}
	if _, err := kubectl("wait", "--for=condition=Established", "crd/immutablereleases.release.immutable.dev", "crd/receivers.release.immutable.dev", "--timeout=60s"); err != nil {
		return fail(err)
	}
	passed := false
	defer func() { // after the operator has stopped
		if passed {
			for _, dir := range env.operatorDirs {
				_ = os.RemoveAll(dir)
			}
		}
	}()
	env.events = newEventSink()
	defer env.events.Close()
	if env.operator, err = startOperator(); err != nil {
		return fail(err)
	}
	env.webhookURL = env.operator.webhookURL
	defer func() { env.operator.stop() }()
	code := m.Run()
	passed = code == 0
	return code
}

// kubectl runs the built kubectl as the administrator.
func kubectl(args ...string) (string, error) {
	return runCmd(filepath.Join(env.bin, "kubectl"), append([]string{"--kubeconfig", env.kubeconfig}, args...)...)
}

// kubectlRelease runs the plugin binary.
func kubectlRelease(args ...string) (string, error) {
	return runCmd(filepath.Join(env.bin, "kubectl-release"), append([]string{"--kubeconfig", env.kubeconfig}, args...)...)
}

func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// operator is the manager binary, run as the ServiceAccount config/rbac creates, with the
// flags of config/manager.
type operator struct {
	cmd     *exec.Cmd
	log     string
	storage string
	config  string
	probe   string
	metrics string
	args    []string
	exited  chan error
	// webhookURL is this replica's webhook receiver, before a Receiver's path.
	webhookURL string
}

// startOperator starts a replica; extra flags follow (and so override) config/manager's.
func startOperator(extra ...string) (*operator, error) {
	token, err := kubectl("-n", "immutable-release-system", "create", "token", "immutable-release-controller-manager", "--duration=24h")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "e2e-operator-")
	if err != nil {
		return nil, err
	}
	env.operatorDirs = append(env.operatorDirs, dir)
	o := &operator{log: filepath.Join(dir, "operator.log"), storage: filepath.Join(dir, "storage"), config: filepath.Join(dir, "kubeconfig")}
	kc, err := os.ReadFile(env.kubeconfig)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(o.config, kc, 0o600); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"config", "set-credentials", "operator", "--token=" + strings.TrimSpace(token)},
		{"config", "set-context", "--current", "--user=operator"},
	} {
		if _, err := runCmd(filepath.Join(env.bin, "kubectl"), append([]string{"--kubeconfig", o.config}, args...)...); err != nil {
			return nil, err
		}
	}
	webhook := freeAddr()
	o.webhookURL = "http://" + webhook
	o.probe, o.metrics = freeAddr(), freeAddr()
	o.args = []string{"--leader-elect", "--leader-election-namespace=immutable-release-system",
		"--metrics-bind-address=" + o.metrics, "--metrics-secure=false", "--health-probe-bind-address=" + o.probe,
		"--storage-path=" + o.storage, "--webhook-bind-address=" + webhook, "--kubeconfig=" + o.config,
		"--events-addr=" + env.events.URL,
		// Deployment records (spec.attest): the key a story creates, and the cluster's name.
		"--attestation-key-secret=" + attestationKeySecret, "--cluster-name=" + e2eClusterName}
	o.args = append(o.args, extra...)
	return o, o.start()
}

func (o *operator) start() error {
	logf, err := os.OpenFile(o.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	o.cmd = exec.Command(filepath.Join(env.bin, "manager"), o.args...)
	o.cmd.Stdout, o.cmd.Stderr = logf, logf
	if err := o.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- o.cmd.Wait() }()
	// Ready when its readiness probe answers; a start-up failure shows its log.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(o.log)
			return fmt.Errorf("the operator exited: %v: %s", err, tail(string(log), 2000))
		default:
		}
		if resp, err := http.Get("http://" + o.probe + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				o.exited = exited
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the operator was not ready within 30s; log: %s", o.log)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// kill stops the operator with SIGKILL, as a node failure would.
func (o *operator) kill() {
	_ = o.cmd.Process.Kill()
	if o.exited != nil {
		<-o.exited
	}
}

func (o *operator) stop() {
	if o != nil && o.cmd != nil && o.cmd.Process != nil {
		o.kill()
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proxy forwards a fixed loopback port to the Git server, and can stop and start again on
// the same port: the Git server going away and coming back.
type proxy struct {
	addr, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]bool
}

func newProxy(target string) (*proxy, error) {
	p := &proxy{addr: freeAddr(), target: target, conns: map[net.Conn]bool{}}
	return p, p.start()
}

func (p *proxy) start() error {
	var err error
	for i := 0; i < 50; i++ {
		var ln net.Listener
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.mu.Lock()
			p.ln = ln
			p.mu.Unlock()
			go p.serve(ln)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func (p *proxy) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				return
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			_, _ = io.Copy(c, up)
			c.Close()
		}()
	}
}

func (p *proxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}
