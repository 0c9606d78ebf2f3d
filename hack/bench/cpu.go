package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// cpuTimes is the CPU time (user and system) used so far by each running process that this
// benchmark started whose executable is in the bin/ folder or is the manager, by executable
// name: the control plane's components and the manager. Several processes of one name add
// up. Only this benchmark's own descendants count: other runs on the machine may start the
// same binaries (bin/ is often a link to one shared folder).
type cpuTimes map[string]time.Duration

func processCPU(c config) cpuTimes {
	bin := filepath.Join(c.root, "bin")
	if resolved, err := filepath.EvalSymlinks(bin); err == nil {
		bin = resolved
	}
	bin += string(filepath.Separator)
	out := cpuTimes{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || !(strings.HasPrefix(exe, bin) || c.managerBin != "" && exe == c.managerBin) || !descendsFromSelf(e.Name()) {
			continue
		}
		out[filepath.Base(exe)] += statCPU(filepath.Join("/proc", e.Name(), "stat"))
	}
	// The benchmark itself: its watches and the Git server share the cores too.
	out["bench"] = statCPU("/proc/self/stat")
	return out
}

// descendsFromSelf says whether the process pid was started by this one, or by one it started.
func descendsFromSelf(pid string) bool {
	self := strconv.Itoa(os.Getpid())
	for range 32 {
		b, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
		if err != nil {
			return false
		}
		ppid := ""
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PPid:"); ok {
				ppid = strings.TrimSpace(v)
				break
			}
		}
		switch ppid {
		case self:
			return true
		case "", "0", "1":
			return false
		}
		pid = ppid
	}
	return false
}

// statCPU reads utime and stime from a /proc/<pid>/stat file.
func statCPU(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	// Linux reports clock ticks of 1/100 s (USER_HZ) on every common architecture.
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// since is the CPU time used after before was taken.
func (c cpuTimes) since(before cpuTimes) cpuTimes {
	out := cpuTimes{}
	for name, d := range c {
		out[name] = d - before[name]
	}
	return out
}

func (c cpuTimes) total() time.Duration {
	var total time.Duration
	for _, d := range c {
		total += d
	}
	return total
}

func (c cpuTimes) String() string {
	names := make([]string, 0, len(c))
	for name := range c {
		names = append(names, name)
	}
	sort.Strings(names)
	parts := []string{fmt.Sprintf("total %.1f s", c.total().Seconds())}
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s %.1f s", name, c[name].Seconds()))
	}
	return strings.Join(parts, ", ")
}

// saveAPIMetrics writes kube-apiserver's metrics to $BENCH_API_METRICS/<phase>.txt when
// that folder is set: the requests every client made, by verb and resource, to compare a
// phase with the floor.
func saveAPIMetrics(ctx context.Context, cfg *rest.Config, phase string) error {
	dir := os.Getenv("BENCH_API_METRICS")
	if dir == "" {
		return nil
	}
	b, err := apiServerMetricsText(ctx, cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, phase+".txt"), b, 0o644)
}

// apiServerMetricsText is kube-apiserver's metrics, in the Prometheus text format.
func apiServerMetricsText(ctx context.Context, cfg *rest.Config) ([]byte, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	b, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading kube-apiserver's metrics: %w", err)
	}
	return b, nil
}

// apiServerProfile, when BENCH_API_PROFILES names a directory, takes a CPU profile of
// kube-apiserver for the next seconds into dir/name.pprof; wait returns when it is
// written. Without the variable it does nothing.
func apiServerProfile(ctx context.Context, cfg *rest.Config, name string, seconds int) (wait func() error) {
	dir := os.Getenv("BENCH_API_PROFILES")
	if dir == "" {
		return func() error { return nil }
	}
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return err
			}
			b, err := cs.RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", strconv.Itoa(seconds)).DoRaw(ctx)
			if err != nil {
				return fmt.Errorf("profiling kube-apiserver: %w", err)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, name+".pprof"), b, 0o644)
		}()
	}()
	return func() error { return <-done }
}
