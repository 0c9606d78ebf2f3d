package controllers

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
)

// TestForgetWhatLeaves: a release this manager no longer finds (deleted without the
// operator's finalizer, or relabelled out of its shard) is forgotten by the reconcile that
// looks for it, metric series included.
func TestForgetWhatLeaves(t *testing.T) {
	g := NewWithT(t)
	key := types.NamespacedName{Namespace: newNamespace(t), Name: "gone"}
	operator.memories.of(key).addCorrections(1)
	reconciles.WithLabelValues(key.Namespace, key.Name).Inc()
	_, err := operator.Reconcile(ctx, ctrl.Request{NamespacedName: key})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(operator.memories.peek(key)).To(BeNil())
	g.Expect(reconciles.DeleteLabelValues(key.Namespace, key.Name)).To(BeFalse(), "its series is gone")
}

// TestForgetEveryRelease creates and deletes a thousand releases (LIFECYCLE_RELEASES
// changes how many) and shows that what the manager remembers goes back to where it
// started: no memory left for any of them, the Git store they shared evicted, and the heap
// back near its start.
func TestForgetEveryRelease(t *testing.T) {
	g := NewWithT(t)
	n := envInt("LIFECYCLE_RELEASES", 1000)
	ns := newNamespace(t)
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("r%d/config.yaml", i)] = fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-%d\ndata:\n  index: %q\n", i, fmt.Sprint(i))
	}
	repo := newRepo(t, ns, files)

	heapBefore := heapInUse()
	remembered, stores := operator.memories.len(), operator.Git.Stats().Repositories
	start := time.Now()
	releases := make([]*v1alpha1.ImmutableRelease, n)
	parallel(n, func(i int) {
		releases[i] = newRelease(t, ns, repo, fmt.Sprintf("r%d", i), func(o *v1alpha1.ImmutableRelease) { o.Name = fmt.Sprintf("release-%d", i) })
	})
	g.Eventually(func() int {
		var list v1alpha1.ImmutableReleaseList
		g.Expect(k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		ready := 0
		for _, rel := range list.Items {
			if c := condition(&rel, "Ready"); c.Status == metav1.ConditionTrue {
				ready++
			}
		}
		return ready
	}, 10*time.Minute, time.Second).Should(Equal(n))
	allReady := time.Since(start)
	g.Expect(operator.memories.len()).To(BeNumerically(">=", remembered+n))
	heapPeak := heapInUse()

	parallel(n, func(i int) { g.Expect(k8s.Delete(ctx, releases[i])).To(Succeed()) })
	g.Eventually(func() int {
		var list v1alpha1.ImmutableReleaseList
		g.Expect(k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		return len(list.Items)
	}, 10*time.Minute, time.Second).Should(BeZero())
	g.Eventually(operator.memories.len, 30*time.Second, 100*time.Millisecond).Should(BeNumerically("<=", remembered))
	operator.sweepStores(0)
	g.Expect(operator.Git.Stats().Repositories).To(BeNumerically("<=", stores), "the store nobody uses is evicted")
	heapAfter := heapInUse()
	fmt.Fprintf(os.Stderr, "lifecycle of %d releases: all Ready in %s; heap in use %d MiB before, %d MiB with them, %d MiB after; releases remembered %d before, %d after\n",
		n, allReady.Round(time.Second), heapBefore>>20, heapPeak>>20, heapAfter>>20, remembered, operator.memories.len())
	// The informers' copies of the deleted objects go too; what may stay is what any
	// process grows to (the work queue's, the API client's buffers): well under what the
	// releases cost.
	g.Expect(heapAfter).To(BeNumerically("<", heapBefore+(heapPeak-heapBefore)/4+8<<20), "the heap is back near where it started")
}

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// parallel runs f(0..n-1) on a few goroutines.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}
