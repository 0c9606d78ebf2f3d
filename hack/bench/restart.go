package main

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
)

// restartFigures are what a new manager process costs a fleet that is Ready.
type restartFigures struct {
	// lookedAt is when the new process had reconciled every release once, settled when
	// its requests stopped, both from its start.
	lookedAt, settled time.Duration
	api               float64 // requests the new process made
	lists, fetches    float64 // its Git listings and fetches
	// served counts what kube-apiserver served meanwhile for the kinds a release touches,
	// by kind of request ("GET secrets", "APPLY services (dry run)"); writes are those
	// that changed something.
	served, writes map[string]float64
	cpu            cpuTimes
}

// restartedKinds are the resources whose requests the restart counts: what a release
// applies, reads and writes.
var restartedKinds = map[string]bool{"deployments": true, "services": true, "pods": true, "secrets": true, "immutablereleases": true, "events": true}

// restart replaces the manager with a new process, as an upgrade or a rescheduled pod does
// (its storage is new, so the repository is cloned again), while every release is Ready
// and Git does not change: the time until the new process has looked at every release,
// and what it asked of the API server. A restart should write nothing: no apply, no status
// write, no event.
func (f *fleet) restart(ctx context.Context, c config, releases *tracker, lat *latencies) error {
	n := lat.n
	head, err := f.repo.Output("rev-parse", "HEAD")
	if err != nil {
		return err
	}
	head = strings.TrimSpace(head)
	progress("N=%d: a restart of the manager: waiting until every release is Ready at %.7s", n, head)
	atHead := releaseAt(head)
	if _, err := releases.waitAll(ctx, "releases Ready at the head", n, 3*c.interval, func(o runtime.Object) bool { return releaseReady(o) && atHead(o) }); err != nil {
		return f.op.explain(err)
	}
	// Let the last status writes and their watch events pass.
	if err := sleep(ctx, 5*time.Second); err != nil {
		return err
	}
	before, err := apiServerMetrics(ctx, f.cp.Config)
	if err != nil {
		return err
	}
	old := f.op
	f.op = nil
	old.stop()
	// After the old process is gone, so that the new one's CPU is counted from zero.
	cpu0 := processCPU(c)
	start := time.Now()
	if f.op, err = startManager(c, f.kubeconfig); err != nil {
		return err
	}
	progress("N=%d: the new manager is ready after %s; waiting until it has looked at every release", n, time.Since(start).Round(10*time.Millisecond))
	r := &restartFigures{}
	if err := waitFor(ctx, 10*time.Minute, func() bool {
		m, err := f.op.metrics()
		return err == nil && m.seriesAbove("immutable_release_reconcile_total", 0) >= n
	}); err != nil {
		return f.op.explain(fmt.Errorf("waiting for the new manager to look at every release: %w", err))
	}
	r.lookedAt = time.Since(start)
	// Settled: no request for two seconds.
	last, lastAt := -1.0, time.Now()
	if err := waitFor(ctx, 5*time.Minute, func() bool {
		m, err := f.op.metrics()
		if err != nil {
			return false
		}
		if api := m.api(); api != last {
			last, lastAt = api, time.Now()
			return false
		}
		return time.Since(lastAt) >= 2*time.Second
	}); err != nil {
		return f.op.explain(fmt.Errorf("waiting for the new manager's requests to settle: %w", err))
	}
	r.settled = lastAt.Sub(start)
	r.cpu = processCPU(c).since(cpu0)
	after, err := apiServerMetrics(ctx, f.cp.Config)
	if err != nil {
		return err
	}
	r.served, r.writes = servedSince(before, after)
	m, err := f.op.metrics()
	if err != nil {
		return err
	}
	r.api, r.lists, r.fetches = m.api(), m.sum("immutable_release_git_lists_total"), m.sum("immutable_release_git_fetches_total")
	lat.restart = r
	progress("N=%d: every release looked at after %s, requests settled after %s", n, r.lookedAt.Round(100*time.Millisecond), r.settled.Round(100*time.Millisecond))
	return nil
}

// apiServerMetrics scrapes kube-apiserver's metrics.
func apiServerMetrics(ctx context.Context, cfg *rest.Config) (metricSet, error) {
	b, err := apiServerMetricsText(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return parseMetrics(bytes.NewReader(b))
}

// servedSince counts the requests kube-apiserver served between two scrapes for
// restartedKinds, by verb, resource and subresource (watches aside: they last), and
// among them those that wrote.
func servedSince(before, after metricSet) (served, writes map[string]float64) {
	served, writes = map[string]float64{}, map[string]float64{}
	for series, v := range after {
		name, l := seriesLabels(series)
		if name != "apiserver_request_total" || !restartedKinds[l["resource"]] || l["verb"] == "WATCH" {
			continue
		}
		d := v - before[series]
		if d <= 0 {
			continue
		}
		kind := l["verb"] + " " + l["resource"]
		if l["subresource"] != "" {
			kind += "/" + l["subresource"]
		}
		if l["dry_run"] != "" {
			kind += " (dry run)"
		}
		served[kind] += d
		if l["dry_run"] == "" && l["verb"] != "GET" && l["verb"] != "LIST" {
			writes[kind] += d
		}
	}
	return served, writes
}

// seriesLabels splits `name{a="x",b="y"}` into its name and labels.
func seriesLabels(series string) (string, map[string]string) {
	name, rest, ok := strings.Cut(series, "{")
	labels := map[string]string{}
	if !ok {
		return name, labels
	}
	rest = strings.TrimSuffix(rest, "}")
	for rest != "" {
		k, after, ok := strings.Cut(rest, `="`)
		if !ok {
			break
		}
		v, next, _ := strings.Cut(after, `"`)
		labels[k] = v
		rest = strings.TrimPrefix(next, ",")
	}
	return name, labels
}

// seriesAbove counts the series of the metric name whose value is above v.
func (s metricSet) seriesAbove(name string, v float64) int {
	count := 0
	for series, value := range s {
		if strings.HasPrefix(series, name+"{") && value > v {
			count++
		}
	}
	return count
}

// counts lists kind counts, most first.
func counts(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	kinds := make([]string, 0, len(m))
	for k := range m {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool {
		if m[kinds[i]] != m[kinds[j]] {
			return m[kinds[i]] > m[kinds[j]]
		}
		return kinds[i] < kinds[j]
	})
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s %.0f", k, m[k])
	}
	return strings.Join(parts, ", ")
}
