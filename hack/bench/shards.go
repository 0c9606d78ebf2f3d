package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
)

// The sharded cold start: N releases spread over S managers, each started with
// --watch-label-selector=sharding.fluxcd.io/key=shardK as Flux shards its controllers, and
// the releases labelled round-robin. Splitting the fleet must not cost requests (the
// managers together make what one makes), and each manager's memory must follow its share.

// shardKey is Flux's sharding label.
const shardKey = "sharding.fluxcd.io/key"

func shardValue(k int) string { return fmt.Sprintf("shard%d", k) }

// shardSelector is the --watch-label-selector of shard k.
func shardSelector(k int) string { return shardKey + "=" + shardValue(k) }

// shardOf is the shard of release i among s: round-robin.
func shardOf(i, s int) int { return i % s }

// shardedStart is one sharded cold start of n releases over shards managers.
type shardedStart struct {
	n, shards      int
	applied, ready time.Duration
	// apiRequests are the requests the managers counted themselves
	// (rest_client_requests_total), all shards together, startRequests those made before
	// the releases were created (caches filled, the Receiver reconciled): a manager's fixed
	// cost, which more managers multiply. served are the requests kube-apiserver dispatched
	// for the managers' service account (see managersServed), a check on apiRequests.
	apiRequests, startRequests, served float64
	reconciles                         float64
	// peakRSS and startRSS (bytes: the peak at the end, and before the releases were
	// created) and releases (those it reconciled) are by shard.
	peakRSS, startRSS []int64
	releases          []int
	// cpu is what each process used until all were Ready ("manager": all of them).
	cpu cpuTimes
}

// measureSharded creates n releases, labelled round-robin over s shards, on a fresh control
// plane with one manager per shard, and times until all are applied and Ready.
func measureSharded(ctx context.Context, c config, n, s int) (*shardedStart, error) {
	selectors := make([]string, s)
	for k := range selectors {
		selectors[k] = shardSelector(k)
	}
	f, err := startFleetOf(ctx, c, n, true, selectors)
	if err != nil {
		return nil, err
	}
	defer f.stop()
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	releases := track(tctx, f.cl, func() client.ObjectList { return &v1alpha1.ImmutableReleaseList{} })
	// Watched as in the single manager's run, so that the benchmark's own load is the same.
	track(tctx, f.cl, func() client.ObjectList { return &appsv1.DeploymentList{} })

	row := &shardedStart{n: n, shards: s}
	for _, op := range f.shards {
		m, err := op.metrics()
		if err != nil {
			return nil, err
		}
		row.startRequests += m.api()
		row.startRSS = append(row.startRSS, op.peakRSS())
	}
	cpu0 := processCPU(c)
	start := time.Now()
	labels := func(i int) map[string]string { return map[string]string{shardKey: shardValue(shardOf(i, s))} }
	if err := createReleases(ctx, f.cl, f.repo.URL(), n, c.interval, labels); err != nil {
		return nil, err
	}
	appliedAt, err := releases.waitAll(ctx, "releases applied", n, 30*time.Minute, releaseApplied)
	if err != nil {
		return nil, f.explainShards(err)
	}
	row.applied = appliedAt.Sub(start)
	readyAt, err := releases.waitAll(ctx, "releases Ready", n, 30*time.Minute, releaseReady)
	if err != nil {
		return nil, f.explainShards(err)
	}
	row.ready = readyAt.Sub(start)
	row.cpu = processCPU(c).since(cpu0)
	if err := saveAPIMetrics(ctx, f.cp.Config, fmt.Sprintf("sharded-%d-over-%d", n, s)); err != nil {
		return nil, err
	}
	served, err := apiServerMetrics(ctx, f.cp.Config)
	if err != nil {
		return nil, err
	}
	row.served = managersServed(served)
	for k, op := range f.shards {
		m, err := op.metrics()
		if err != nil {
			return nil, err
		}
		mine, err := shardReleases(m, n, s, k)
		if err != nil {
			return nil, op.explain(err)
		}
		row.releases = append(row.releases, mine)
		row.apiRequests += m.api()
		row.reconciles += m.sum("immutable_release_reconcile_total")
		row.peakRSS = append(row.peakRSS, op.peakRSS())
	}
	progress("N=%d over %d shards: all applied after %s, Ready after %s; %.1f requests per release (%.1f after the managers' start); peak RSS by shard %s (%s before the releases)",
		n, s, row.applied.Round(100*time.Millisecond), row.ready.Round(100*time.Millisecond), row.apiRequests/float64(n), (row.apiRequests-row.startRequests)/float64(n), mebibytes(row.peakRSS), mebibytes(row.startRSS))
	return row, nil
}

// shardReleases counts the releases shard k of s reconciled, from its reconcile_total series,
// and fails if it reconciled one of another shard: the figures would then not be a shard's.
func shardReleases(m metricSet, n, s, k int) (int, error) {
	count := 0
	for series, v := range m {
		name, l := seriesLabels(series)
		if name != "immutable_release_reconcile_total" || v <= 0 {
			continue
		}
		var i int
		if _, err := fmt.Sscanf(l["name"], "app-%d", &i); err != nil || i >= n || shardOf(i, s) != k {
			return 0, fmt.Errorf("the manager of %s reconciled %s/%s, which is not its release", shardSelector(k), l["namespace"], l["name"])
		}
		count++
	}
	return count, nil
}

// managersServed is the number of requests kube-apiserver dispatched for service accounts
// (API Priority and Fairness' flow schema "service-accounts"): on the benchmark's control
// plane only the managers authenticate as one (every other component and the benchmark
// itself are administrators, exempt), so this is the managers' requests as the API server
// counts them, watches included, whichever process made them.
func managersServed(m metricSet) float64 {
	total := 0.0
	for series, v := range m {
		if name, l := seriesLabels(series); name == "apiserver_flowcontrol_dispatched_requests_total" && l["flow_schema"] == "service-accounts" {
			total += v
		}
	}
	return total
}

// explainShards adds the end of every shard's log to an error.
func (f *fleet) explainShards(err error) error {
	for _, op := range f.shards {
		err = op.explain(err)
	}
	return err
}

// printSharded prints the sharded cold starts beside the single manager's of the same N.
func printSharded(out io.Writer, c config, rows []coldStart, sharded []*shardedStart) {
	if len(sharded) == 0 {
		return
	}
	fmt.Fprintf(out, "\n   Sharded: N releases over S managers, each with --watch-label-selector=%s=shardK, releases labelled round-robin; beside the single manager's run (no selector) of the same N\n", shardKey)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "N\tmanagers\tall applied\tall Ready\tReady/floor\tAPI requests\tper release\tbefore the releases\tper release after\tkube-apiserver's count\treconciles\tpeak RSS by manager\t(before the releases)\treleases by manager\tmanagers' CPU\tall CPU\t")
	for _, n := range shardedSizes(sharded) {
		floors := []float64{}
		for _, r := range rows {
			if r.n != n {
				continue
			}
			if r.floor > 0 {
				floors = append(floors, r.floor.Seconds())
			}
			fmt.Fprintf(tw, "%d\t1 (no selector)\t%s\t%s\t%s\t%.0f\t%.1f\t%.0f\t%.1f\t%s\t%.0f\t%d MiB\t(%d MiB)\t%d\t%.1f s\t%.1f s\t\n", n, secs(r.applied), secs(r.ready), ratio(r.ready, r.floor),
				r.apiRequests, r.apiRequests/float64(n), r.startRequests, (r.apiRequests-r.startRequests)/float64(n), count(r.apiServed), r.reconciles, r.peakRSS>>20, r.startRSS>>20, n, r.readyCPU["manager"].Seconds(), r.readyCPU.total().Seconds())
		}
		// The floor of the same N, the median of its runs when there are several.
		var floor time.Duration
		if len(floors) > 0 {
			floor = time.Duration(median(floors) * float64(time.Second))
		}
		for _, s := range sharded {
			if s.n != n {
				continue
			}
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%.0f\t%.1f\t%.0f\t%.1f\t%s\t%.0f\t%s\t(%s)\t%s\t%.1f s\t%.1f s\t\n", n, s.shards, secs(s.applied), secs(s.ready), ratio(s.ready, floor),
				s.apiRequests, s.apiRequests/float64(n), s.startRequests, (s.apiRequests-s.startRequests)/float64(n), count(s.served), s.reconciles, mebibytes(s.peakRSS), mebibytes(s.startRSS), ints(s.releases), s.cpu["manager"].Seconds(), s.cpu.total().Seconds())
		}
	}
	tw.Flush()
}

func shardedSizes(sharded []*shardedStart) []int {
	var sizes []int
	seen := map[int]bool{}
	for _, s := range sharded {
		if !seen[s.n] {
			seen[s.n] = true
			sizes = append(sizes, s.n)
		}
	}
	return sizes
}

func ratio(ready, floor time.Duration) string {
	if floor <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(ready)/float64(floor))
}

func count(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

// mebibytes is "52, 51, 50 MiB".
func mebibytes(b []int64) string {
	parts := make([]string, len(b))
	for i, v := range b {
		parts[i] = fmt.Sprint(v >> 20)
	}
	return strings.Join(parts, ", ") + " MiB"
}

func ints(v []int) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprint(x)
	}
	return strings.Join(parts, ", ")
}
