// Package controlplane starts a local Kubernetes control plane for integration tests,
// `make demo` and e2e: etcd and kube-apiserver through controller-runtime's envtest and, on
// request, kube-controller-manager, kube-scheduler and kwok with one fake Node, so that
// Deployments really roll out and report availability as they would on a cluster.
//
// The binaries are built from the Go module proxy by `make control-plane`
// (hack/build-test-binaries.sh) into <module root>/bin. Unix only: Stop signals process
// groups.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// DefaultServiceClusterIPRange is wide enough for scale tests: envtest's own default, a
// /24, runs out of addresses at the 255th Service.
const DefaultServiceClusterIPRange = "10.96.0.0/12"

// apiServerStartTimeout bounds etcd's and kube-apiserver's start-up each. envtest's own
// default, 20 s, is tight on a busy 2-core machine.
const apiServerStartTimeout = time.Minute

// apiServerStopGrace is how long RestartAPIServer lets kube-apiserver shut down gracefully
// before killing it: short, so that the outage (this plus a start of a few seconds) stays
// within a client's leader-election renew deadline of 10s.
const apiServerStopGrace = 3 * time.Second

// ErrMissingBinaries is wrapped by the error Start returns when a binary it needs is not in
// the binary directory. Tests use it to skip under -short.
var ErrMissingBinaries = errors.New("control plane binaries are missing: run `make control-plane`")

// Options configures Start. The zero value starts etcd and kube-apiserver only.
type Options struct {
	// BinDir holds the binaries. Defaults to $KUBEBUILDER_ASSETS, else to the bin/ folder
	// of the Go module around the working directory.
	BinDir string

	// Workloads also starts kube-controller-manager, kube-scheduler and kwok with one fake
	// Node, so that Deployments roll out, pods become Ready and Deployments Available.
	Workloads bool

	// CRDDirectoryPaths are installed before Start returns; a missing path is an error.
	CRDDirectoryPaths []string

	// LogDir receives one <process>.log per child process (stdout and stderr). Defaults to
	// a temporary directory that Stop removes; pass your own to keep the logs.
	LogDir string

	// ServiceClusterIPRange is kube-apiserver's --service-cluster-ip-range. Defaults to
	// DefaultServiceClusterIPRange.
	ServiceClusterIPRange string
}

// ControlPlane is a running local control plane. Stop it when done.
type ControlPlane struct {
	// Config connects as an administrator (group system:masters).
	Config *rest.Config

	// KubeconfigPath is a kubeconfig file for the same administrator, for other processes
	// such as kubectl or the operator binary. Stop removes it; see WriteKubeconfig.
	KubeconfigPath string

	// LogDir holds one <process>.log per child process.
	LogDir string

	// NodeName is the fake Node's name when Options.Workloads is set.
	NodeName string

	env        *envtest.Environment
	kubeconfig []byte
	procs      []*process // in start order
	workDir    string     // kubeconfig and kwok stages
	ownsLogDir bool
	stopped    bool
}

// Start starts etcd and kube-apiserver, installs the CRDs and, with Options.Workloads, the
// components that run workloads. ctx bounds the start-up only: cancelling it later does not
// stop the control plane. If Start fails it stops what it had started, keeps the logs, and
// its error names the process that failed and its log file.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := checkBinaries(opts.BinDir, opts.requiredBinaries()); err != nil {
		return nil, err
	}

	c := &ControlPlane{LogDir: opts.LogDir}
	defer func() {
		if err != nil {
			c.ownsLogDir = false // the error points into it
			_ = c.Stop()
		}
	}()

	if c.workDir, err = os.MkdirTemp("", "controlplane-"); err != nil {
		return nil, fmt.Errorf("creating work directory: %w", err)
	}
	if c.LogDir == "" {
		if c.LogDir, err = os.MkdirTemp("", "controlplane-logs-"); err != nil {
			return nil, fmt.Errorf("creating log directory: %w", err)
		}
		c.ownsLogDir = true
	} else if err := os.MkdirAll(c.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating log directory: %w", err)
	}

	if err := c.startAPIServer(opts); err != nil {
		return nil, err
	}
	if opts.Workloads {
		if err := c.startWorkloads(ctx, opts.BinDir); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// startAPIServer starts etcd and kube-apiserver with envtest and writes the kubeconfig.
func (c *ControlPlane) startAPIServer(opts Options) error {
	etcdLog, err := os.Create(filepath.Join(c.LogDir, "etcd.log"))
	if err != nil {
		return fmt.Errorf("creating etcd log: %w", err)
	}
	defer etcdLog.Close() // the child holds its own descriptor
	apiLog, err := os.Create(filepath.Join(c.LogDir, "kube-apiserver.log"))
	if err != nil {
		return fmt.Errorf("creating kube-apiserver log: %w", err)
	}
	defer apiLog.Close()

	etcd := &envtest.Etcd{
		Path: filepath.Join(opts.BinDir, "etcd"),
		Out:  etcdLog,
		Err:  etcdLog,
	}
	// The data lives in a temporary directory that is thrown away: durability buys nothing
	// and fsync is what makes etcd slow on a laptop or a CI disk.
	etcd.Configure().Set("unsafe-no-fsync", "true")

	apiServer := &envtest.APIServer{
		// Set explicitly: envtest would otherwise let $KUBEBUILDER_ASSETS override BinDir.
		Path: filepath.Join(opts.BinDir, "kube-apiserver"),
		Out:  apiLog,
		Err:  apiLog,
		// Our own directory, not one envtest removes on Stop: the serving and
		// service-account signing keys then survive RestartAPIServer, so kubeconfigs and
		// tokens issued before a restart stay valid after it.
		CertDir: filepath.Join(c.workDir, "kube-apiserver"),
	}
	if err := os.MkdirAll(apiServer.CertDir, 0o700); err != nil {
		return fmt.Errorf("creating the kube-apiserver certificate directory: %w", err)
	}
	apiServer.Configure().Set("service-cluster-ip-range", opts.ServiceClusterIPRange)

	useExistingCluster := false
	c.env = &envtest.Environment{
		ControlPlane: envtest.ControlPlane{
			APIServer:   apiServer,
			Etcd:        etcd,
			KubectlPath: filepath.Join(opts.BinDir, "kubectl"),
		},
		CRDDirectoryPaths:        opts.CRDDirectoryPaths,
		ErrorIfCRDPathMissing:    true,
		UseExistingCluster:       &useExistingCluster, // ignore $USE_EXISTING_CLUSTER
		ControlPlaneStartTimeout: apiServerStartTimeout,
	}
	// envtest provisions an administrator in group system:masters with
	// ControlPlane.AddUser; its config and kubeconfig are that user's.
	cfg, err := c.env.Start()
	if err != nil {
		return fmt.Errorf("starting etcd and kube-apiserver (logs: %s, %s): %w", etcdLog.Name(), apiLog.Name(), err)
	}
	c.Config = cfg
	c.kubeconfig = c.env.KubeConfig
	c.KubeconfigPath = filepath.Join(c.workDir, "kubeconfig")
	return c.WriteKubeconfig(c.KubeconfigPath)
}

// RestartAPIServer stops kube-apiserver (SIGTERM, SIGKILL after a few seconds) and starts it
// again on the same port, with the same certificates and the same etcd, whose data is
// untouched: clients see the API server go away and come back, as in an upgrade or a crash.
// Linux only (it finds the process in /proc). It returns once the new one is healthy.
func (c *ControlPlane) RestartAPIServer() error {
	if err := c.StopAPIServer(); err != nil {
		return err
	}
	return c.StartAPIServer()
}

// StopAPIServer stops kube-apiserver only, as RestartAPIServer does; StartAPIServer brings it
// back. In between, clients find nothing listening on its port.
func (c *ControlPlane) StopAPIServer() error {
	if c.env == nil || c.stopped {
		return errors.New("stopping kube-apiserver: the control plane is not running")
	}
	api := c.env.ControlPlane.APIServer
	// envtest's Stop waits 20s for a graceful exit, which kube-apiserver with watches open
	// does not make in time; signal the process ourselves: SIGTERM, then SIGKILL after
	// apiServerStopGrace. envtest hides the process: find it by its certificate directory,
	// which is ours alone.
	pid, err := findProcess("--cert-dir=" + api.CertDir)
	if err != nil {
		return fmt.Errorf("restarting kube-apiserver: %w", err)
	}
	if err := terminate(pid, apiServerStopGrace); err != nil {
		return fmt.Errorf("stopping kube-apiserver: %w", err)
	}
	// It has exited: what is left is envtest's bookkeeping, which notes the exit in a
	// goroutine after reaping the process. Until that goroutine has run, Stop signals the
	// process and fails because it is gone; a moment later it finds it exited.
	var stopErr error
	for try := 0; try < 20; try++ {
		if stopErr = api.Stop(); stopErr == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if stopErr != nil {
		return fmt.Errorf("stopping kube-apiserver: %w", stopErr)
	}
	return nil
}

// StartAPIServer starts the kube-apiserver StopAPIServer stopped, on the same port, with the
// same certificates and etcd; it returns once it is healthy.
func (c *ControlPlane) StartAPIServer() error {
	if c.env == nil || c.stopped {
		return errors.New("starting kube-apiserver: the control plane is not running")
	}
	api := c.env.ControlPlane.APIServer
	// The first log file was closed once the first process held it; append to it.
	apiLog, err := os.OpenFile(filepath.Join(c.LogDir, "kube-apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening the kube-apiserver log: %w", err)
	}
	defer apiLog.Close()
	api.Out, api.Err = apiLog, apiLog
	if err := api.Start(); err != nil {
		return fmt.Errorf("starting kube-apiserver again (log: %s): %w", apiLog.Name(), err)
	}
	return nil
}

// findProcess returns the process whose command line holds arg.
func findProcess(arg string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("listing processes: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(cmdline), "\x00") {
			if a == arg {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no process has %s on its command line", arg)
}

// terminate sends SIGTERM, then SIGKILL after grace, and returns once the process is gone
// (reaped by its parent's Wait).
func terminate(pid int, grace time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("signalling process %d: %w", pid, err)
	}
	killAt := time.Now().Add(grace)
	for deadline := killAt.Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if !killAt.IsZero() && time.Now().After(killAt) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killAt = time.Time{}
		}
	}
	return fmt.Errorf("process %d did not exit", pid)
}

// WriteKubeconfig writes the administrator's kubeconfig to path, for a process that
// outlives Stop's clean-up of KubeconfigPath or that expects the file in a known place.
func (c *ControlPlane) WriteKubeconfig(path string) error {
	if len(c.kubeconfig) == 0 {
		return errors.New("writing kubeconfig: the control plane is not running")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	// It holds a client key for system:masters: readable by its owner only.
	if err := os.WriteFile(path, c.kubeconfig, 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	return nil
}

// Kubeconfig is the administrator's kubeconfig, with its credentials inline.
func (c *ControlPlane) Kubeconfig() []byte { return c.kubeconfig }

// Stop stops everything Start started, in reverse order, and waits until every process has
// exited. It removes the kubeconfig and, unless Options.LogDir was given, the logs. Calling
// it again does nothing.
func (c *ControlPlane) Stop() error {
	if c.stopped {
		return nil
	}
	c.stopped = true

	var errs []error
	for i := len(c.procs) - 1; i >= 0; i-- {
		errs = append(errs, c.procs[i].stop())
	}
	if c.env != nil {
		if err := c.env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping etcd and kube-apiserver (logs in %s): %w", c.LogDir, err))
		}
	}
	if c.workDir != "" {
		errs = append(errs, os.RemoveAll(c.workDir))
	}
	if c.ownsLogDir {
		errs = append(errs, os.RemoveAll(c.LogDir))
	}
	return errors.Join(errs...)
}

func (o *Options) setDefaults() error {
	if o.ServiceClusterIPRange == "" {
		o.ServiceClusterIPRange = DefaultServiceClusterIPRange
	}
	if o.BinDir == "" {
		o.BinDir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if o.BinDir == "" {
		root, err := ModuleRoot()
		if err != nil {
			return fmt.Errorf("finding the binaries: %w", err)
		}
		o.BinDir = filepath.Join(root, "bin")
	}
	return nil
}

func (o *Options) requiredBinaries() []string {
	bins := []string{"etcd", "kube-apiserver"}
	if o.Workloads {
		bins = append(bins, "kube-controller-manager", "kube-scheduler", "kwok")
	}
	return bins
}

// ModuleRoot walks up from the working directory to the folder that holds go.mod, so that
// tests, which run in their package's folder, and tools find <module root>/bin.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: set Options.BinDir or $KUBEBUILDER_ASSETS")
		}
		dir = parent
	}
}

// checkBinaries reports every missing binary at once, so one `make control-plane` fixes all.
func checkBinaries(dir string, names []string) error {
	var missing []string
	for _, name := range names {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %v not found in %s", ErrMissingBinaries, missing, dir)
	}
	return nil
}
