// Command bench measures the operator at scale on the local control plane and prints one
// table: cold start of N releases against the floor (the same objects applied with kubectl,
// no operator, in the same run), then, with the largest N live, one quiet interval, a commit
// that changes one release (through the webhook and through polling), drift corrections and
// a rollback; and the largest N spread over several managers, one per shard (shards.go).
// `make bench` runs it; docs/benchmarks.md records the results.
//
// Every release is one Deployment and one Service at its own path of one Git repository
// served by the real Git server; the operator runs as its own process, as in production.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/immutable-release/operator/internal/controlplane"
)

type config struct {
	sizes      []int
	repeat     int
	concurrent int
	qps        int
	interval   time.Duration
	samples    int
	drifts     int
	skipFloor  bool
	latencies  bool
	requests   bool
	shards     []int
	root       string
	// managerBin is the manager built for this run (buildManager).
	managerBin string
}

func main() {
	var c config
	sizes := flag.String("n", "100,500,1000", "Comma-separated numbers of releases; the latency figures use the largest.")
	shards := flag.String("shards", "1,3", "Comma-separated numbers of shards for the sharded cold start of the largest N: as many managers, each with --watch-label-selector (\"\": none).")
	flag.IntVar(&c.repeat, "repeat", 1, "Cold starts per N (floor, without rollouts, with the operator, in turn); the summary gives the median of each figure, so that one slow minute of the machine does not decide a target.")
	flag.IntVar(&c.concurrent, "concurrent", 20, "The manager's --concurrent (Flux's benchmark runs kustomize-controller with 20).")
	flag.IntVar(&c.qps, "kube-api-qps", 300, "The manager's --kube-api-qps, with a burst of three times as many (0: the manager's defaults).")
	flag.DurationVar(&c.interval, "interval", time.Minute, "spec.interval of every release; the steady state is measured over one.")
	flag.IntVar(&c.samples, "samples", 20, "Samples for the webhook latency (each waits for the whole fleet to record the commit).")
	flag.IntVar(&c.drifts, "drift-samples", 100, "Samples for the drift latency.")
	flag.BoolVar(&c.latencies, "latencies", true, "Measure the steady state and the latencies with the largest fleet after its cold start (false: cold starts only).")
	flag.BoolVar(&c.skipFloor, "skip-floor", false, "Do not measure the floor (kubectl apply of the same objects).")
	flag.BoolVar(&c.requests, "request-costs", false, "Only measure the CPU each kind of request a release makes costs kube-apiserver and etcd.")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	var err error
	if c.sizes, err = positiveList(*sizes); err != nil || len(c.sizes) == 0 {
		fmt.Fprintln(os.Stderr, "bench: -n: give at least one positive number:", *sizes)
		os.Exit(2)
	}
	if c.shards, err = positiveList(*shards); err != nil {
		fmt.Fprintf(os.Stderr, "bench: -shards: %v\n", err)
		os.Exit(2)
	}
	if c.repeat < 1 {
		fmt.Fprintln(os.Stderr, "bench: -repeat must be at least 1")
		os.Exit(2)
	}
	if c.root, err = controlplane.ModuleRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	// Interrupted, it stops what it started on the way out: no control plane outlives it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, c)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	if c.requests {
		const n = 500
		progress("The CPU each kind of request costs kube-apiserver and etcd, %d of each", n)
		costs, err := measureRequestCosts(ctx, c, n)
		if err != nil {
			return err
		}
		printRequestCosts(os.Stdout, n, costs)
		return nil
	}
	var err error
	if c.managerBin, err = buildManager(c.root); err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Dir(c.managerBin))
	var rows []coldStart
	var live *latencies
	largest := 0
	for _, n := range c.sizes {
		largest = max(largest, n)
	}
	for _, n := range c.sizes {
		for run := 1; run <= c.repeat; run++ {
			row := coldStart{n: n, run: run}
			at := fmt.Sprintf("N=%d", n)
			if c.repeat > 1 {
				at = fmt.Sprintf("N=%d, run %d of %d", n, run, c.repeat)
			}
			if !c.skipFloor {
				progress("%s: the floor: kubectl apply --server-side of %d Deployments and Services, until all are Available", at, n)
				if err := measureFloor(ctx, c, n, &row); err != nil {
					return fmt.Errorf("floor at %s: %w", at, err)
				}
			}
			progress("%s: the operator without rollouts (etcd and kube-apiserver only): %d releases created, until all are applied", at, n)
			if err := measureApplyOnly(ctx, c, n, &row); err != nil {
				return fmt.Errorf("apply only at %s: %w", at, err)
			}
			progress("%s: the operator: %d releases created, until all are Ready", at, n)
			// The latencies are measured once, with the largest fleet, in its last run.
			lat, err := measureOperator(ctx, c, n, &row, c.latencies && n == largest && run == c.repeat && live == nil)
			if err != nil {
				return fmt.Errorf("operator at %s: %w", at, err)
			}
			if lat != nil {
				live = lat
			}
			rows = append(rows, row)
		}
	}
	var sharded []*shardedStart
	for _, s := range c.shards {
		at := fmt.Sprintf("N=%d over %d shards", largest, s)
		progress("%s: %d managers, each with --watch-label-selector=%s=shardK: %d releases created, labelled round-robin, until all are Ready", at, s, shardKey, largest)
		row, err := measureSharded(ctx, c, largest, s)
		if err != nil {
			return fmt.Errorf("sharded at %s: %w", at, err)
		}
		sharded = append(sharded, row)
	}
	printReport(os.Stdout, c, rows, sharded, live)
	return nil
}

// positiveList reads "100,500,1000"; "" is an empty list.
func positiveList(s string) ([]int, error) {
	var out []int
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func machine() string {
	cpus := runtime.NumCPU()
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.Atoi(f[1]); err == nil {
					mem = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
				}
			}
		}
	}
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d CPU (%s), %s, %s/%s, %s", cpus, model, mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}
