package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
)

// Metrics on the controller-runtime registry, served at the manager's metrics address
// beside controller-runtime's own (reconcile time and errors per controller, work queues).
var (
	reconciles = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "immutable_release_reconcile_total",
		Help: "Reconciles run, by release.",
	}, []string{"namespace", "name"})

	readyGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "immutable_release_ready",
		Help: "1 when the release is Ready, 0 otherwise.",
	}, []string{"namespace", "name"})

	driftCorrections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "immutable_release_drift_corrections_total",
		Help: "Live objects put back to what Git says, by release.",
	}, []string{"namespace", "name"})

	gitDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "immutable_release_git_duration_seconds",
		Help:    "Time spent listing the remote (list) and fetching and checking out (checkout).",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
	}, []string{"operation"})

	rollbackDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "immutable_release_rollback_seconds",
		Help:    "Time from a failed health verdict to its revert being in Git.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
	})

	commitToApplied = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "immutable_release_commit_to_applied_seconds",
		Help:    "Time from a commit's author date to its revision being applied.",
		Buckets: prometheus.ExponentialBuckets(0.25, 2, 16),
	})

	remoteClusters = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "immutable_release_remote_clusters",
		Help: "Remote clusters (one per kubeconfig and namespace scope) whose objects this manager watches for its releases.",
	})

	attestations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "immutable_release_attestations_total",
		Help: "Deployment records (spec.attest) written to Git (result recorded) or not (failed: no usable key, a push refused).",
	}, []string{"result"})
)

func init() {
	metrics.Registry.MustRegister(reconciles, readyGauge, driftCorrections, gitDuration, rollbackDuration, commitToApplied, remoteClusters, attestations)
}

// GitMetrics counts the remote operations of the shared Git cache: lists (ls-remote),
// fetches and the clones that build reverts. Steady state should show one list per
// repository and reference per interval and no fetch; more revert clones than rollbacks
// mean the branch moved while a revert was being pushed. Register it once, with the cache
// the reconciler uses.
func GitMetrics(cache *git.Cache) prometheus.Collector {
	return gitCollector{cache: cache, lists: prometheus.NewDesc("immutable_release_git_lists_total",
		"Remote reference listings (ls-remote) made by the shared Git cache.", nil, nil),
		fetches: prometheus.NewDesc("immutable_release_git_fetches_total",
			"Fetches (the first one is a clone) made by the shared Git cache.", nil, nil),
		reverts: prometheus.NewDesc("immutable_release_git_revert_clones_total",
			"Clones made to build a revert, one per attempt to push it: a push that loses a race with another push is built again on the new head.", nil, nil),
		stores: prometheus.NewDesc("immutable_release_git_stores",
			"Repository stores (one per URL and credentials) the shared Git cache holds; those no release uses are evicted after 10 minutes.", nil, nil),
		notes: prometheus.NewDesc("immutable_release_git_note_pushes_total",
			"Pushes of deployment notes (spec.attest), one per attempt: the records waiting together go in one push, and a push that loses a race with another writer is made again.", nil, nil)}
}

type gitCollector struct {
	cache                                  *git.Cache
	lists, fetches, reverts, stores, notes *prometheus.Desc
}

func (c gitCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lists
	ch <- c.fetches
	ch <- c.reverts
	ch <- c.stores
	ch <- c.notes
}

func (c gitCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.cache.Stats()
	ch <- prometheus.MustNewConstMetric(c.lists, prometheus.CounterValue, float64(s.Lists))
	ch <- prometheus.MustNewConstMetric(c.fetches, prometheus.CounterValue, float64(s.Fetches))
	ch <- prometheus.MustNewConstMetric(c.reverts, prometheus.CounterValue, float64(s.Reverts))
	ch <- prometheus.MustNewConstMetric(c.stores, prometheus.GaugeValue, float64(s.Repositories))
	ch <- prometheus.MustNewConstMetric(c.notes, prometheus.CounterValue, float64(s.NotePushes))
}

// recordReady sets the Ready gauge of a release.
func recordReady(obj *v1alpha1.ImmutableRelease, ready bool) {
	v := 0.0
	if ready {
		v = 1
	}
	readyGauge.WithLabelValues(obj.Namespace, obj.Name).Set(v)
}

// forgetMetrics removes the series of a release that left this manager: another shard's
// manager, or none, reports it now.
func forgetMetrics(key types.NamespacedName) {
	readyGauge.DeleteLabelValues(key.Namespace, key.Name)
	reconciles.DeleteLabelValues(key.Namespace, key.Name)
	driftCorrections.DeleteLabelValues(key.Namespace, key.Name)
}
