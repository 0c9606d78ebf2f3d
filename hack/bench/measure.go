package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/controlplane"
	"github.com/immutable-release/operator/internal/receiver"
	"github.com/immutable-release/operator/internal/testgit"
)

// coldStart is one row of the table.
type coldStart struct {
	n       int
	run     int // of -repeat
	floor   time.Duration
	applied time.Duration // all releases applied, health not awaited
	ready   time.Duration // all releases Ready
	// available is when every Deployment was Available in the operator's run: what is
	// left of ready after it is the operator noticing and recording the verdicts.
	available   time.Duration
	peakRSS     int64 // bytes
	apiRequests float64
	// startRequests and startRSS are the manager's requests and peak RSS before the
	// releases were created: its fixed cost (the sharded table sets them beside).
	startRequests float64
	startRSS      int64
	// apiServed are the manager's requests as kube-apiserver counted them (managersServed).
	apiServed    float64
	gitLists     float64
	gitFetches   float64
	reconciles   float64
	createdAfter time.Duration // creating the N objects took this long
	// applyOnly is all releases applied on etcd and kube-apiserver alone (no rollouts),
	// with the API requests the manager made.
	applyOnly         time.Duration
	applyOnlyRequests float64
	// floorCPU, applyOnlyCPU and readyCPU are the CPU time each process used until the
	// floor's Deployments were all Available, until all releases were applied without
	// rollouts, and until all releases were Ready.
	floorCPU, applyOnlyCPU, readyCPU cpuTimes
}

// latencies are measured with the largest fleet live.
type latencies struct {
	n                     int
	steadyLists           float64
	steadyFetches         float64
	steadyAPI             float64
	steadyCPUPerRelease   time.Duration
	steadyWindow          time.Duration
	webhook               []time.Duration
	fleetCaughtUp         []time.Duration
	polling               time.Duration
	drift                 []time.Duration
	driftAt               []time.Duration // when each drift sample began, from the first
	driftApp              []string        // and on which release
	rollbackVerdictToPush time.Duration
	rollbackPushToRevert  time.Duration
	rollbackRecovered     time.Duration
	restart               *restartFigures
}

func startControlPlane(ctx context.Context, c config, workloads bool) (*controlplane.ControlPlane, error) {
	opts := controlplane.Options{
		Workloads:         workloads,
		BinDir:            filepath.Join(c.root, "bin"),
		CRDDirectoryPaths: []string{filepath.Join(c.root, "config", "crd", "bases")},
	}
	if os.Getenv("BENCH_KEEP_LOGS") != "" {
		// Kept after the run, with the manager's log, for finding what a request waited on.
		dir, err := os.MkdirTemp("", "bench-controlplane-")
		if err != nil {
			return nil, err
		}
		opts.LogDir = dir
		progress("The control plane's logs: %s", dir)
	}
	return controlplane.Start(ctx, opts)
}

// measureFloor applies the same Deployments and Services with kubectl, no operator, on a
// fresh control plane, and times until every Deployment is Available.
func measureFloor(ctx context.Context, c config, n int, row *coldStart) error {
	cp, err := startControlPlane(ctx, c, true)
	if err != nil {
		return err
	}
	defer cp.Stop()
	cl, err := newClient(cp.Config)
	if err != nil {
		return err
	}
	if err := createNamespace(ctx, cl); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "bench-floor-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file, err := writeManifests(dir, n)
	if err != nil {
		return err
	}
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deployments := track(tctx, cl, func() client.ObjectList { return &appsv1.DeploymentList{} })
	cpu0 := processCPU(c)
	start := time.Now()
	profiled := apiServerProfile(ctx, cp.Config, fmt.Sprintf("floor-%d", n), coldStartProfileSeconds(n))
	out, err := exec.CommandContext(ctx, filepath.Join(c.root, "bin", "kubectl"), "--kubeconfig", cp.KubeconfigPath,
		"apply", "--server-side", "-n", namespace, "-f", file).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl apply: %v: %s", err, tail(out))
	}
	end, err := deployments.waitAll(ctx, "Deployments Available", n, 30*time.Minute, deploymentAvailable)
	if err != nil {
		return err
	}
	row.floor, row.floorCPU = end.Sub(start), processCPU(c).since(cpu0)
	progress("N=%d: floor %s; CPU used: %s", n, row.floor.Round(100*time.Millisecond), row.floorCPU)
	if err := profiled(); err != nil {
		return err
	}
	return saveAPIMetrics(ctx, cp.Config, fmt.Sprintf("floor-%d", n))
}

// fleet is a fresh control plane, the Git server with one repository of n applications,
// their Secrets and the manager: everything but the releases.
type fleet struct {
	cp   *controlplane.ControlPlane
	cl   client.WithWatch
	srv  *testgit.Server
	repo *testgit.Repo
	op   *manager
	// shards are the managers of a sharded fleet (startShardedFleet), one per selector,
	// instead of op.
	shards []*manager
	// kubeconfig is the manager's identity, for starting it again.
	kubeconfig string
}

// startFleet starts a fleet whose one manager reconciles every release.
func startFleet(ctx context.Context, c config, n int, workloads bool) (*fleet, error) {
	return startFleetOf(ctx, c, n, workloads, nil)
}

// startFleetOf starts a fleet with one manager per selector (its --watch-label-selector),
// or, without selectors, one manager for every release.
func startFleetOf(ctx context.Context, c config, n int, workloads bool, selectors []string) (_ *fleet, err error) {
	f := &fleet{}
	defer func() {
		if err != nil {
			f.stop()
		}
	}()
	if f.cp, err = startControlPlane(ctx, c, workloads); err != nil {
		return nil, err
	}
	if f.cl, err = newClient(f.cp.Config); err != nil {
		return nil, err
	}
	if err := createNamespace(ctx, f.cl); err != nil {
		return nil, err
	}
	if f.srv, err = testgit.NewServer(); err != nil {
		return nil, err
	}
	if f.repo, err = f.srv.CreateRepo("fleet.git", "main"); err != nil {
		return nil, err
	}
	if err := f.repo.Write(appFiles(n)); err != nil {
		return nil, err
	}
	if _, err := f.repo.CommitAndPush(fmt.Sprintf("%d apps", n)); err != nil {
		return nil, err
	}
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: namespace}, StringData: map[string]string{"username": f.srv.Username, "password": f.srv.Password}},
		{ObjectMeta: metav1.ObjectMeta{Name: "webhook", Namespace: namespace}, StringData: map[string]string{"token": webhookSecret}},
	} {
		if err := f.cl.Create(ctx, s); err != nil {
			return nil, err
		}
	}
	if f.kubeconfig, err = managerIdentity(ctx, c.root, f.cp.Config, f.cl, f.cp.LogDir); err != nil {
		return nil, err
	}
	if len(selectors) == 0 {
		if f.op, err = startManager(c, f.kubeconfig); err != nil {
			return nil, err
		}
	}
	for _, sel := range selectors {
		op, err := startManager(c, f.kubeconfig, "--watch-label-selector="+sel)
		if err != nil {
			return nil, fmt.Errorf("starting the manager of %s: %w", sel, err)
		}
		f.shards = append(f.shards, op)
	}
	if err := crdSettled(ctx, f.cl); err != nil {
		return nil, err
	}
	if err := createReceiver(ctx, f.cl); err != nil {
		return nil, err
	}
	return f, nil
}

// receiverName is the benchmark namespace's Receiver, whose token is webhookSecret.
const receiverName = "bench"

// createReceiver creates the namespace's Receiver and waits until it serves its path.
func createReceiver(ctx context.Context, cl client.Client) error {
	obj := &v1alpha1.Receiver{
		ObjectMeta: metav1.ObjectMeta{Name: receiverName, Namespace: namespace},
		Spec:       v1alpha1.ReceiverSpec{Type: v1alpha1.GitHubReceiver, SecretRef: meta.LocalObjectReference{Name: "webhook"}},
	}
	if err := cl.Create(ctx, obj); err != nil {
		return fmt.Errorf("creating the Receiver: %w", err)
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		if err := cl.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		if obj.Status.WebhookPath == receiver.WebhookPath([]byte(webhookSecret), receiverName, namespace) {
			return nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("the Receiver did not become Ready: %+v", obj.Status.Conditions)
}

// crdSettled waits until the ImmutableRelease CRD has been Established for two seconds:
// kube-apiserver holds any create of a custom resource for 2 s while its CRD is that new
// (so that the other API servers of a highly available control plane have seen it too).
// In a cluster the CRDs are installed with the operator, long before the first release;
// without this wait a cold start on a fresh control plane would count that hold.
func crdSettled(ctx context.Context, cl client.Client) error {
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	if err := cl.Get(ctx, client.ObjectKey{Name: "immutablereleases." + v1alpha1.GroupVersion.Group}, crd); err != nil {
		return err
	}
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] != "Established" || m["status"] != "True" {
			continue
		}
		at, err := time.Parse(time.RFC3339, fmt.Sprint(m["lastTransitionTime"]))
		if err != nil {
			return fmt.Errorf("the CRD's Established condition: %w", err)
		}
		// Whole seconds: the condition's time is rounded down.
		return sleep(ctx, time.Until(at.Add(3*time.Second)))
	}
	return errors.New("the ImmutableRelease CRD is not Established")
}

func (f *fleet) stop() {
	if f.op != nil {
		f.op.stop()
	}
	for _, op := range f.shards {
		op.stop()
	}
	if f.srv != nil {
		f.srv.Stop()
	}
	if f.cp != nil {
		_ = f.cp.Stop()
	}
}

// measureApplyOnly creates n releases on etcd and kube-apiserver alone, no rollouts, and
// times until all have applied their revision: the operator's own pace, without the
// controllers that roll the Deployments out competing for the two cores.
func measureApplyOnly(ctx context.Context, c config, n int, row *coldStart) error {
	f, err := startFleet(ctx, c, n, false)
	if err != nil {
		return err
	}
	defer f.stop()
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	releases := track(tctx, f.cl, func() client.ObjectList { return &v1alpha1.ImmutableReleaseList{} })
	cpu0 := processCPU(c)
	start := time.Now()
	if err := createReleases(ctx, f.cl, f.repo.URL(), n, c.interval, nil); err != nil {
		return err
	}
	appliedAt, err := releases.waitAll(ctx, "releases applied", n, 30*time.Minute, releaseApplied)
	if err != nil {
		return f.op.explain(err)
	}
	row.applyOnly, row.applyOnlyCPU = appliedAt.Sub(start), processCPU(c).since(cpu0)
	m, err := f.op.metrics()
	if err != nil {
		return err
	}
	row.applyOnlyRequests = m.api()
	progress("N=%d: all applied after %s without rollouts; CPU used: %s", n, row.applyOnly.Round(100*time.Millisecond), row.applyOnlyCPU)
	return nil
}

// measureOperator creates n releases on a fresh control plane with the operator running,
// times until all are applied and Ready, and, when asked, measures the latencies.
func measureOperator(ctx context.Context, c config, n int, row *coldStart, measureLatencies bool) (*latencies, error) {
	f, err := startFleet(ctx, c, n, true)
	if err != nil {
		return nil, err
	}
	defer f.stop()
	cl, repo, op := f.cl, f.repo, f.op

	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	releases := track(tctx, cl, func() client.ObjectList { return &v1alpha1.ImmutableReleaseList{} })
	deployments := track(tctx, cl, func() client.ObjectList { return &appsv1.DeploymentList{} })
	availableAt := deployments.whenAll(tctx, n, deploymentAvailable)

	m, err := op.metrics()
	if err != nil {
		return nil, err
	}
	row.startRequests, row.startRSS = m.api(), op.peakRSS()
	cpu0 := processCPU(c)
	start := time.Now()
	profiled := apiServerProfile(ctx, f.cp.Config, fmt.Sprintf("operator-%d", n), coldStartProfileSeconds(n))
	if err := createReleases(ctx, cl, repo.URL(), n, c.interval, nil); err != nil {
		return nil, err
	}
	row.createdAfter = time.Since(start)
	progress("N=%d: %d releases created in %s", n, n, row.createdAfter.Round(10*time.Millisecond))
	appliedAt, err := releases.waitAll(ctx, "releases applied", n, 30*time.Minute, releaseApplied)
	if err != nil {
		return nil, op.explain(err)
	}
	row.applied = appliedAt.Sub(start)
	readyAt, err := releases.waitAll(ctx, "releases Ready", n, 30*time.Minute, releaseReady)
	if err != nil {
		return nil, op.explain(err)
	}
	row.ready = readyAt.Sub(start)
	if at := availableAt(); !at.IsZero() {
		row.available = at.Sub(start)
	}
	row.readyCPU = processCPU(c).since(cpu0)
	progress("N=%d: CPU used until all were Ready: %s", n, row.readyCPU)
	if err := profiled(); err != nil {
		return nil, err
	}
	if err := saveAPIMetrics(ctx, f.cp.Config, fmt.Sprintf("operator-%d", n)); err != nil {
		return nil, err
	}
	served, err := apiServerMetrics(ctx, f.cp.Config)
	if err != nil {
		return nil, err
	}
	row.apiServed = managersServed(served)
	if m, err = op.metrics(); err != nil {
		return nil, err
	}
	row.apiRequests, row.gitLists, row.gitFetches, row.reconciles = m.api(), m.sum("immutable_release_git_lists_total"), m.sum("immutable_release_git_fetches_total"), m.sum("immutable_release_reconcile_total")
	row.peakRSS = op.peakRSS()
	progress("N=%d: all applied after %s, Deployments all Available after %s, releases Ready after %s; manager peak RSS %d MiB", n, row.applied.Round(100*time.Millisecond), row.available.Round(100*time.Millisecond), row.ready.Round(100*time.Millisecond), row.peakRSS>>20)
	if !measureLatencies {
		return nil, nil
	}

	lat := &latencies{n: n}
	if err := steadyState(ctx, c, op, lat); err != nil {
		return nil, err
	}
	l := &live{cl: cl, repo: repo, op: op, n: n, releases: releases}
	if err := l.webhookChanges(ctx, c.samples, lat); err != nil {
		return nil, op.explain(err)
	}
	if err := l.pollingChange(ctx, c.interval, lat); err != nil {
		return nil, op.explain(err)
	}
	if err := l.driftCorrections(ctx, c.drifts, c.interval, lat); err != nil {
		return nil, op.explain(err)
	}
	if err := l.rollback(ctx, lat); err != nil {
		return nil, op.explain(err)
	}
	if err := f.restart(ctx, c, releases, lat); err != nil {
		return nil, err
	}
	return lat, nil
}

// coldStartProfileSeconds is how long kube-apiserver is profiled from the start of a cold
// start of n (BENCH_API_PROFILES): about half of what the floor takes on this machine, so
// that the floor's and the operator's profiles cover the same work.
func coldStartProfileSeconds(n int) int {
	return max(5, n/20)
}

// createReleases creates releases 0 to n-1, release i with labels(i) (none when labels is nil).
func createReleases(ctx context.Context, cl client.Client, url string, n int, interval time.Duration, labels func(i int) map[string]string) error {
	return inParallel(n, 8, func(i int) error {
		r := &v1alpha1.ImmutableRelease{
			ObjectMeta: metav1.ObjectMeta{Name: appName(i), Namespace: namespace},
			Spec: v1alpha1.ImmutableReleaseSpec{
				Git: v1alpha1.GitSource{URL: url, Ref: v1alpha1.GitReference{Branch: "main"},
					SecretRef: &meta.LocalObjectReference{Name: "git"}},
				Path:     appPath(i),
				Interval: metav1.Duration{Duration: interval},
				Timeout:  &metav1.Duration{Duration: 5 * time.Minute},
				Prune:    true,
			},
		}
		if labels != nil {
			r.Labels = labels(i)
		}
		if err := cl.Create(ctx, r); err != nil {
			return fmt.Errorf("creating release %s: %w", r.Name, err)
		}
		return nil
	})
}

// inParallel calls do(i) for i in [0, n), workers at a time, and returns the first error;
// a worker stops at its first error.
func inParallel(n, workers int, do func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := do(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// steadyState watches one quiet interval: what the manager asks of Git and the API server
// and the CPU it burns, while nothing changes.
func steadyState(ctx context.Context, c config, op *manager, lat *latencies) error {
	// Let the reconciles of the cold start settle first.
	if err := sleep(ctx, 5*time.Second); err != nil {
		return err
	}
	before, err := op.metrics()
	if err != nil {
		return err
	}
	cpu0 := op.cpuTime()
	// One interval plus the jitter the operator adds to it.
	lat.steadyWindow = c.interval + c.interval/10
	progress("N=%d: steady state: watching one quiet interval (%s)", lat.n, lat.steadyWindow)
	if err := sleep(ctx, lat.steadyWindow); err != nil {
		return err
	}
	after, err := op.metrics()
	if err != nil {
		return err
	}
	lat.steadyLists = after.sum("immutable_release_git_lists_total") - before.sum("immutable_release_git_lists_total")
	lat.steadyFetches = after.sum("immutable_release_git_fetches_total") - before.sum("immutable_release_git_fetches_total")
	lat.steadyAPI = after.api() - before.api()
	lat.steadyCPUPerRelease = (op.cpuTime() - cpu0) / time.Duration(lat.n)
	return nil
}

// live is the fleet, up and Ready, on which the latencies are measured.
type live struct {
	cl       client.WithWatch
	repo     *testgit.Repo
	op       *manager
	n        int
	releases *tracker
	version  int
}

// change commits a new digest for app i and pushes it; returns the commit hash.
func (l *live) change(i int, image string) (string, error) {
	if err := l.repo.Write(map[string]string{appPath(i) + "/deployment.yaml": deploymentYAML(i, image)}); err != nil {
		return "", err
	}
	return l.repo.CommitAndPush(fmt.Sprintf("%s: %s", appName(i), image))
}

// webhookChanges: a commit changes one release among n; a signed push event announces it.
// Timed from the webhook call to the Deployment showing the new image.
func (l *live) webhookChanges(ctx context.Context, samples int, lat *latencies) error {
	progress("N=%d: %d commits each changing one release, announced by the webhook", l.n, samples)
	for s := range samples {
		i := (s*7919 + 13) % l.n
		l.version++
		want := image(i, 100+l.version)
		w, err := watchDeployment(ctx, l.cl, i)
		if err != nil {
			return err
		}
		hash, err := l.change(i, want)
		if err != nil {
			w.Stop()
			return err
		}
		start := time.Now()
		if err := l.op.webhook(l.repo.URL()); err != nil {
			w.Stop()
			return err
		}
		at, err := waitImage(ctx, l.cl, i, w, want, time.Minute)
		if err != nil {
			return err
		}
		lat.webhook = append(lat.webhook, at.Sub(start))
		all, err := l.releases.waitAll(ctx, "releases at the new commit", l.n, 10*time.Minute, releaseAt(hash))
		if err != nil {
			return err
		}
		lat.fleetCaughtUp = append(lat.fleetCaughtUp, all.Sub(start))
	}
	return nil
}

// pollingChange: the same, with no webhook: the interval finds it.
func (l *live) pollingChange(ctx context.Context, interval time.Duration, lat *latencies) error {
	progress("N=%d: one commit found by polling (interval %s)", l.n, interval)
	i := l.n / 2
	l.version++
	want := image(i, 100+l.version)
	w, err := watchDeployment(ctx, l.cl, i)
	if err != nil {
		return err
	}
	start := time.Now()
	if _, err := l.change(i, want); err != nil {
		return err
	}
	at, err := waitImage(ctx, l.cl, i, w, want, 3*interval)
	if err != nil {
		return err
	}
	lat.polling = at.Sub(start)
	return nil
}

// driftCorrections: someone changes a Deployment's image; timed from the change's response
// to the watch seeing Git's image again.
func (l *live) driftCorrections(ctx context.Context, samples int, interval time.Duration, lat *latencies) error {
	// The samples are spread over one interval, so that they meet the fleet both quiet and
	// busy with its interval's look (which a commit to the shared repository turns into a
	// status write of every release) in proportion.
	pace := max(interval/time.Duration(samples), 100*time.Millisecond)
	progress("N=%d: %d drift corrections, one every %s", l.n, samples, pace)
	first := time.Now()
	for s := range samples {
		if err := sleep(ctx, time.Until(first.Add(time.Duration(s)*pace))); err != nil {
			return err
		}
		i := (s*104729 + 7) % l.n
		d := &appsv1.Deployment{}
		if err := l.cl.Get(ctx, client.ObjectKey{Namespace: namespace, Name: appName(i)}, d); err != nil {
			return err
		}
		gitImage := deploymentImage(d)
		w, err := watchDeployment(ctx, l.cl, i)
		if err != nil {
			return err
		}
		patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"registry.example/bench/%s:hotfix"}]}}}}`, appName(i))
		if err := l.cl.Patch(ctx, d, client.RawPatch(types.StrategicMergePatchType, []byte(patch)), client.FieldOwner("kubectl-set")); err != nil {
			w.Stop()
			return err
		}
		start := time.Now()
		at, err := waitImage(ctx, l.cl, i, w, gitImage, 30*time.Second)
		if err != nil {
			return err
		}
		lat.drift = append(lat.drift, at.Sub(start))
		lat.driftAt = append(lat.driftAt, start.Sub(first))
		lat.driftApp = append(lat.driftApp, fmt.Sprintf("%s at %s", appName(i), start.Format("15:04:05.000")))
	}
	return nil
}

// rollback: a digest that never pulls is pushed for one release with a short timeout; the
// operator reverts the commit in Git and the previous digest runs again.
func (l *live) rollback(ctx context.Context, lat *latencies) error {
	i := l.n / 3
	progress("N=%d: a failed release of %s, rolled back by a revert in Git", l.n, appName(i))
	r := &v1alpha1.ImmutableRelease{}
	key := client.ObjectKey{Namespace: namespace, Name: appName(i)}
	if err := l.cl.Get(ctx, key, r); err != nil {
		return err
	}
	base := r.DeepCopy()
	r.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Second}
	if err := l.cl.Patch(ctx, r, client.MergeFrom(base)); err != nil {
		return err
	}
	if err := waitFor(ctx, time.Minute, func() bool { return releaseReady(l.releases.get(appName(i))) }); err != nil {
		return fmt.Errorf("%s after the timeout change: %w", appName(i), err)
	}
	d := &appsv1.Deployment{}
	if err := l.cl.Get(ctx, key, d); err != nil {
		return err
	}
	good := deploymentImage(d)
	bad := "registry.example/bench/" + appName(i) + "@sha256:dead" + strings.Repeat("0", 60)
	pushed, err := l.change(i, bad)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := l.op.webhook(l.repo.URL()); err != nil {
		return err
	}
	var revert string
	if err := waitFor(ctx, 2*time.Minute, func() bool {
		out, err := l.repo.Output("ls-remote", "origin", "refs/heads/main")
		if head, _, _ := strings.Cut(out, "\t"); err == nil && head != "" && head != pushed {
			revert = head
			return true
		}
		return false
	}); err != nil {
		return fmt.Errorf("waiting for the revert commit: %w", err)
	}
	lat.rollbackPushToRevert = time.Since(start)
	if err := waitFor(ctx, 2*time.Minute, func() bool {
		o := l.releases.get(appName(i))
		rel, ok := o.(*v1alpha1.ImmutableRelease)
		return ok && releaseReady(o) && strings.HasSuffix(rel.Status.LastAppliedRevision, revert)
	}); err != nil {
		return fmt.Errorf("waiting for %s to be Ready on the revert: %w", appName(i), err)
	}
	lat.rollbackRecovered = time.Since(start)
	if err := l.cl.Get(ctx, key, d); err != nil {
		return err
	}
	if img := deploymentImage(d); img != good {
		return fmt.Errorf("after the rollback %s runs %s, not %s", appName(i), img, good)
	}
	if err := l.repo.Git("pull", "--quiet", "--rebase", "origin", "main"); err != nil {
		return err
	}
	m, err := l.op.metrics()
	if err != nil {
		return err
	}
	if count := m.sum("immutable_release_rollback_seconds_count"); count > 0 {
		lat.rollbackVerdictToPush = time.Duration(m.sum("immutable_release_rollback_seconds_sum") / count * float64(time.Second))
	}
	return nil
}

const webhookSecret = "bench-webhook-secret"

// webhook posts a signed GitHub push event for the repository's main branch.
func (m *manager) webhook(repoURL string) error {
	body := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","repository":{"clone_url":%q}}`, repoURL))
	mac := hmac.New(sha256.New, []byte(webhookSecret))
	mac.Write(body)
	path := receiver.WebhookPath([]byte(webhookSecret), receiverName, namespace)
	req, err := http.NewRequest(http.MethodPost, "http://"+m.webhookAddr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("the webhook answered %s", resp.Status)
	}
	return nil
}

// sleep waits for d, or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(p*float64(len(s))+0.5) - 1
	return s[min(max(idx, 0), len(s)-1)]
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
