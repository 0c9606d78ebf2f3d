package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

func printReport(out io.Writer, c config, rows []coldStart, sharded []*shardedStart, l *latencies) {
	fmt.Fprintf(out, "\nImmutableRelease operator benchmark\n")
	fmt.Fprintf(out, "command:  %s\n", strings.Join(os.Args, " "))
	fmt.Fprintf(out, "machine:  %s\n", machine())
	fmt.Fprintf(out, "setup:    local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) and the Git server on the same machine; manager --concurrent=%d --kube-api-qps=%s; each release one Deployment and one Service at its own path of one repository; interval %s\n\n", c.concurrent, qpsFlag(c.qps), c.interval)

	fmt.Fprintln(out, "1. Cold start: N releases created at once")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, runHeader(c))
	fmt.Fprintln(tw, "N\tfloor (kubectl)\tall applied\tall Available\tall Ready\tReady/floor\tReady per release\tpeak RSS\tAPI requests\tper release\tgit lists\tgit fetches\treconciles\t")
	for _, r := range rows {
		ratio := "-"
		if r.floor > 0 {
			ratio = fmt.Sprintf("%.2f", float64(r.ready)/float64(r.floor))
		}
		fmt.Fprint(tw, runColumn(c, r))
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d MiB\t%.0f\t%.1f\t%.0f\t%.0f\t%.0f\t\n", r.n, secs(r.floor), secs(r.applied), secs(r.available), secs(r.ready), ratio,
			ms(r.ready/time.Duration(r.n)), r.peakRSS>>20, r.apiRequests, r.apiRequests/float64(r.n), r.gitLists, r.gitFetches, r.reconciles)
	}
	tw.Flush()
	fmt.Fprintln(out, "\n   Without rollouts (etcd and kube-apiserver only, health not awaited): N releases created at once, until all are applied")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, runHeader(c))
	fmt.Fprintln(tw, "N\tall applied\tper release\tAPI requests\tper release\t")
	for _, r := range rows {
		fmt.Fprint(tw, runColumn(c, r))
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.0f\t%.1f\t\n", r.n, secs(r.applyOnly), ms(r.applyOnly/time.Duration(r.n)), r.applyOnlyRequests, r.applyOnlyRequests/float64(r.n))
	}
	tw.Flush()
	fmt.Fprintln(out, "\n   CPU seconds used by each process (all share the two cores): the floor until every Deployment is Available; the operator's runs until every release is applied (without rollouts) and Ready")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, runHeader(c))
	fmt.Fprintln(tw, "N\trun\ttotal\tkube-apiserver\tetcd\tkube-controller-manager\tkube-scheduler\tkwok\tmanager\tbench\t")
	for _, r := range rows {
		for _, run := range []struct {
			name string
			cpu  cpuTimes
		}{{"floor", r.floorCPU}, {"without rollouts", r.applyOnlyCPU}, {"operator", r.readyCPU}} {
			if run.cpu == nil {
				continue
			}
			fmt.Fprint(tw, runColumn(c, r))
			fmt.Fprintf(tw, "%d\t%s\t%.1f\t", r.n, run.name, run.cpu.total().Seconds())
			for _, p := range []string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok", "manager", "bench"} {
				fmt.Fprintf(tw, "%.1f\t", run.cpu[p].Seconds())
			}
			fmt.Fprintln(tw)
		}
	}
	tw.Flush()
	if c.repeat > 1 {
		printMedians(out, c, rows)
	}
	printSharded(out, c, rows, sharded)
	if l == nil {
		return
	}
	fmt.Fprintf(out, "\n2. Steady state, N=%d, one quiet interval (%s): git lists %.0f, git fetches %.0f, API requests %.0f, manager CPU %s per release\n",
		l.n, l.steadyWindow, l.steadyLists, l.steadyFetches, l.steadyAPI, l.steadyCPUPerRelease)
	fmt.Fprintf(out, "\n3. A commit changing one release among %d\n", l.n)
	fmt.Fprintf(out, "   through the webhook, to its Deployment updated: p50 %s  p90 %s  max %s  (n=%d)\n", ms(percentile(l.webhook, .5)), ms(percentile(l.webhook, .9)), ms(percentile(l.webhook, 1)), len(l.webhook))
	fmt.Fprintf(out, "   through the webhook, to all %d releases at the new commit: p50 %s  max %s\n", l.n, ms(percentile(l.fleetCaughtUp, .5)), ms(percentile(l.fleetCaughtUp, 1)))
	fmt.Fprintf(out, "   through polling (interval %s): %s\n", c.interval, secs(l.polling))
	fmt.Fprintf(out, "\n4. Drift with %d releases live, from the edit to Git's image back: p50 %s  p99 %s  max %s  (n=%d)\n", l.n, ms(percentile(l.drift, .5)), ms(percentile(l.drift, .99)), ms(percentile(l.drift, 1)), len(l.drift))
	fmt.Fprintf(out, "   slowest: %s\n", slowest(l.drift, l.driftAt, l.driftApp, 3))
	fmt.Fprintf(out, "\n5. Rollback: health verdict to revert pushed %s (operator's histogram); webhook to revert on the branch %s (includes the 5 s timeout); to Ready on the revert %s\n",
		ms(l.rollbackVerdictToPush), secs(l.rollbackPushToRevert), secs(l.rollbackRecovered))
	if r := l.restart; r != nil {
		fmt.Fprintf(out, "\n6. Restart: a new manager process (new storage, as a new pod) with %d releases Ready and Git unchanged\n", l.n)
		fmt.Fprintf(out, "   every release looked at after %s, requests settled after %s; git lists %.0f, git fetches %.0f; API requests %.0f (%.1f per release)\n",
			secs(r.lookedAt), secs(r.settled), r.lists, r.fetches, r.api, r.api/float64(l.n))
		fmt.Fprintf(out, "   kube-apiserver served (deployments, services, pods, secrets, releases, events; watches aside): %s\n", counts(r.served))
		fmt.Fprintf(out, "   of which writes: %s\n", counts(r.writes))
		fmt.Fprintf(out, "   CPU seconds until settled: %s\n", r.cpu)
	}
}

func runHeader(c config) string {
	if c.repeat > 1 {
		return "#\t"
	}
	return ""
}

func runColumn(c config, r coldStart) string {
	if c.repeat > 1 {
		return fmt.Sprintf("%d\t", r.run)
	}
	return ""
}

// printMedians sums up -repeat: per N, the median of each run's figure, and every run's.
func printMedians(out io.Writer, c config, rows []coldStart) {
	fmt.Fprintf(out, "\n   Median of %d runs per N (each run's figure in brackets)\n", c.repeat)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "N\tReady/floor\tall Ready\tall applied without rollouts\t")
	for _, n := range c.sizes {
		var ratios, ready, applyOnly []float64
		for _, r := range rows {
			if r.n != n {
				continue
			}
			if r.floor > 0 {
				ratios = append(ratios, float64(r.ready)/float64(r.floor))
			}
			ready = append(ready, r.ready.Seconds())
			applyOnly = append(applyOnly, r.applyOnly.Seconds())
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t\n", n, medianOf(ratios, "%.2f"), medianOf(ready, "%.1f s"), medianOf(applyOnly, "%.1f s"))
	}
	tw.Flush()
}

// medianOf is "median (each value)" with format f, or "-" for no values.
func medianOf(v []float64, f string) string {
	if len(v) == 0 {
		return "-"
	}
	each := make([]string, len(v))
	for i, x := range v {
		each[i] = fmt.Sprintf(f, x)
	}
	return fmt.Sprintf(f+" (%s)", median(v), strings.Join(each, ", "))
}

// median is the median of v, which is not empty.
func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return m
}

// slowest names the k longest samples with when each began, from the first.
func slowest(samples, at []time.Duration, what []string, k int) string {
	order := make([]int, len(samples))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return samples[order[a]] > samples[order[b]] })
	var parts []string
	for _, i := range order[:min(k, len(order))] {
		parts = append(parts, fmt.Sprintf("%s (sample %d, %s into the series: %s)", ms(samples[i]), i+1, secs(at[i]), what[i]))
	}
	return strings.Join(parts, ", ")
}

func secs(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func qpsFlag(qps int) string {
	if qps == 0 {
		return "default"
	}
	return fmt.Sprint(qps)
}
