package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// manager is the operator running as its own process.
type manager struct {
	cmd                                 *exec.Cmd
	exited                              chan error
	log                                 string
	metricsAddr, probeAddr, webhookAddr string
	dir                                 string
}

// buildManager builds the manager into a folder of its own and returns its path: bin/ may be
// shared with other checkouts (a link to one folder of prebuilt binaries) whose runs must not
// find their manager replaced under them.
func buildManager(root string) (string, error) {
	progress("Building the manager")
	dir, err := os.MkdirTemp("", "bench-bin-")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "manager")
	cmd := exec.Command("go", "build", "-o", path, "./cmd/manager")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("building the manager: %v: %s", err, out)
	}
	return path, nil
}

// errPortTaken: a port picked free was taken by another process before the manager bound it.
var errPortTaken = errors.New("a port picked for the manager was taken before it could listen")

// startManager runs the manager built by buildManager against the control plane, as its
// service account (see managerIdentity), with the flags args added, and waits until it is
// ready. Its ports are picked free just before it starts; when another process takes one in
// between, it starts again on new ones.
func startManager(c config, kubeconfig string, args ...string) (*manager, error) {
	for attempt := 1; ; attempt++ {
		m, err := startManagerOnce(c, kubeconfig, args)
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			return m, err
		}
		progress("%v; starting it again", err)
	}
}

func startManagerOnce(c config, kubeconfig string, args []string) (*manager, error) {
	dir, err := os.MkdirTemp("", "bench-manager-")
	if err != nil {
		return nil, err
	}
	m := &manager{dir: dir, log: filepath.Join(dir, "manager.log"), metricsAddr: freeAddr(), probeAddr: freeAddr(), webhookAddr: freeAddr()}
	logf, err := os.Create(m.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	m.cmd = exec.Command(c.managerBin,
		"--kubeconfig="+kubeconfig, "--leader-elect=false",
		"--metrics-bind-address="+m.metricsAddr, "--metrics-secure=false", "--health-probe-bind-address="+m.probeAddr,
		"--webhook-bind-address="+m.webhookAddr,
		"--storage-path="+filepath.Join(dir, "storage"), fmt.Sprintf("--concurrent=%d", c.concurrent), "--zap-log-level="+logLevel(), "--zap-time-encoding=rfc3339nano")
	if addr := os.Getenv("BENCH_PPROF_ADDR"); addr != "" {
		m.cmd.Args = append(m.cmd.Args, "--pprof-bind-address="+addr)
	}
	if c.qps > 0 {
		m.cmd.Args = append(m.cmd.Args, fmt.Sprintf("--kube-api-qps=%d", c.qps), fmt.Sprintf("--kube-api-burst=%d", 3*c.qps))
	}
	m.cmd.Args = append(m.cmd.Args, args...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	m.exited = make(chan error, 1)
	go func() { m.exited <- m.cmd.Wait() }()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-m.exited:
			if log, _ := os.ReadFile(m.log); strings.Contains(string(log), "address already in use") {
				os.RemoveAll(dir)
				return nil, errPortTaken
			}
			return nil, fmt.Errorf("the manager exited: %v (log: %s)", err, m.log)
		default:
		}
		if resp, err := http.Get("http://" + m.probeAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m, nil
			}
		}
	}
	m.stop()
	return nil, fmt.Errorf("the manager was not ready within a minute (log: %s)", m.log)
}

func (m *manager) stop() {
	if m.cmd.Process != nil {
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
	if os.Getenv("BENCH_KEEP_LOGS") != "" {
		progress("The manager's log: %s", m.log)
		return
	}
	os.RemoveAll(m.dir)
}

func logLevel() string {
	if os.Getenv("BENCH_KEEP_LOGS") != "" {
		return "debug"
	}
	return "info"
}

// explain adds the end of the manager's log to an error.
func (m *manager) explain(err error) error {
	b, _ := os.ReadFile(m.log)
	return fmt.Errorf("%w\nthe manager's log ends with:\n%s", err, tail(b))
}

// peakRSS is the manager's resident set high-water mark.
func (m *manager) peakRSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuTime is the user and system CPU time the manager used so far.
func (m *manager) cpuTime() time.Duration {
	return statCPU(fmt.Sprintf("/proc/%d/stat", m.cmd.Process.Pid))
}

// metricSet is a scrape of the manager's metrics endpoint: series -> value.
type metricSet map[string]float64

func (m *manager) metrics() (metricSet, error) {
	resp, err := http.Get("http://" + m.metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return parseMetrics(resp.Body)
}

// parseMetrics reads the Prometheus text format: series -> value.
func parseMetrics(r io.Reader) (metricSet, error) {
	out := metricSet{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// sum adds every series of the metric name.
func (s metricSet) sum(name string) float64 {
	total := 0.0
	for series, v := range s {
		if series == name || strings.HasPrefix(series, name+"{") {
			total += v
		}
	}
	return total
}

// api is the number of requests the manager's clients made to the API server.
func (s metricSet) api() float64 { return s.sum("rest_client_requests_total") }

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}
