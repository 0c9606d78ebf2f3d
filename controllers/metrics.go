package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/immutable-release/operator/api/v1alpha1"
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

	commitToApplied = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "immutable_release_commit_to_applied_seconds",
		Help:    "Time from a commit's author date to its revision being applied.",
		Buckets: prometheus.ExponentialBuckets(0.25, 2, 16),
	})
)

func init() {
	metrics.Registry.MustRegister(reconciles, readyGauge, driftCorrections, gitDuration, commitToApplied)
}

// recordReady sets the Ready gauge of a release, or removes its series once it is gone.
func recordReady(obj *v1alpha1.ImmutableRelease, ready, deleted bool) {
	if deleted {
		readyGauge.DeleteLabelValues(obj.Namespace, obj.Name)
		reconciles.DeleteLabelValues(obj.Namespace, obj.Name)
		driftCorrections.DeleteLabelValues(obj.Namespace, obj.Name)
		return
	}
	v := 0.0
	if ready {
		v = 1
	}
	readyGauge.WithLabelValues(obj.Namespace, obj.Name).Set(v)
}
