package controllers

import (
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
)

// BenchmarkDriftCorrection times image edits on a live Deployment, each from the edit's
// response to the moment a watch sees the Deployment back on the digest Git names, and
// reports p50, p99 and max (make bench-drift).
func BenchmarkDriftCorrection(b *testing.B) {
	t := &testing.T{}
	ns := newNamespace(t)
	good := "ghcr.io/acme/web@" + digestV1
	repo := newRepo(t, ns, sampleFiles("app", good))
	obj := newRelease(t, ns, repo, "app")
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	if t.Failed() {
		b.Fatal("the release did not become Ready")
	}
	wc, err := client.NewWithWatch(cfgForTests, client.Options{Scheme: scheme})
	if err != nil {
		b.Fatal(err)
	}

	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		edit := fmt.Sprintf("ghcr.io/acme/web@sha256:%064x", i+1)
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, d); err != nil {
			b.Fatal(err)
		}
		patch := client.MergeFrom(d.DeepCopy())
		d.Spec.Template.Spec.Containers[0].Image = edit
		if err := k8s.Patch(ctx, d, patch, client.FieldOwner("kubectl-set")); err != nil {
			b.Fatal(err)
		}
		edited := time.Now()
		// Watch from the edit on: the first event with Git's image is the correction.
		w, err := wc.Watch(ctx, &appsv1.DeploymentList{}, client.InNamespace(ns),
			client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", "web")},
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: d.ResourceVersion}})
		if err != nil {
			b.Fatal(err)
		}
		deadline := time.After(30 * time.Second)
	wait:
		for {
			select {
			case ev := <-w.ResultChan():
				if d, ok := ev.Object.(*appsv1.Deployment); ok && d.Spec.Template.Spec.Containers[0].Image == good {
					latencies = append(latencies, time.Since(edited))
					break wait
				}
			case <-deadline:
				b.Fatalf("edit %d was not corrected within 30s", i)
			}
		}
		w.Stop()
	}
	b.StopTimer()

	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) time.Duration { return latencies[int(p*float64(len(latencies)-1))] }
	b.ReportMetric(float64(pct(0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(latencies[len(latencies)-1].Microseconds())/1000, "max-ms")
	fmt.Fprintf(os.Stderr, "drift correction over %d edits: p50 %s, p99 %s, max %s\n",
		len(latencies), pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), latencies[len(latencies)-1].Round(time.Millisecond))
}
