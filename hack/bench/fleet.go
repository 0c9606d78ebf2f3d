package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
)

// namespace holds every object of the benchmark.
const namespace = "bench"

func appName(i int) string { return fmt.Sprintf("app-%04d", i) }

func appPath(i int) string { return "apps/" + appName(i) }

// digest is a stable, valid digest for version v of app i. A digest that starts with
// "dead" is an image that never pulls (the kwok stages of the local control plane).
func digest(i, v int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s-v%d", appName(i), v)))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func image(i, v int) string { return "registry.example/bench/" + appName(i) + "@" + digest(i, v) }

func deploymentYAML(i int, image string) string {
	name := appName(i)
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
spec:
  replicas: 1
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      containers:
        - name: app
          image: %[2]s
          ports: [{containerPort: 8080}]
`, name, image)
}

func serviceYAML(i int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %[1]s
spec:
  selector: {app: %[1]s}
  ports: [{port: 80, targetPort: 8080}]
`, appName(i))
}

// appFiles are the files of n apps, each at its own path.
func appFiles(n int) map[string]string {
	files := make(map[string]string, 2*n)
	for i := range n {
		files[appPath(i)+"/deployment.yaml"] = deploymentYAML(i, image(i, 1))
		files[appPath(i)+"/service.yaml"] = serviceYAML(i)
	}
	return files
}

func newClient(cfg *rest.Config) (client.WithWatch, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	// The benchmark's own client must not be what throttles.
	cfg.QPS, cfg.Burst = 2000, 4000
	return client.NewWithWatch(cfg, client.Options{Scheme: scheme})
}

func createNamespace(ctx context.Context, cl client.Client) error {
	return cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})
}

// tracker follows a kind in the namespace with a watch and keeps the last version of
// every object. One watch serves every question asked of it: the benchmark's own load on
// the API server and the cores stays small.
type tracker struct {
	mu   sync.Mutex
	last map[string]runtime.Object
}

// track lists and watches list's kind, re-listing when the watch ends, until ctx is done.
func track(ctx context.Context, cl client.WithWatch, newList func() client.ObjectList) *tracker {
	t := &tracker{last: map[string]runtime.Object{}}
	record := func(o runtime.Object, deleted bool) {
		m, err := apimeta.Accessor(o)
		if err != nil {
			return
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		if deleted {
			delete(t.last, m.GetName())
			return
		}
		t.last[m.GetName()] = o
	}
	go func() {
		for ctx.Err() == nil {
			list := newList()
			if err := cl.List(ctx, list, client.InNamespace(namespace)); err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			items, _ := apimeta.ExtractList(list)
			for _, o := range items {
				record(o, false)
			}
			rv := list.(metav1.ListInterface).GetResourceVersion()
			w, err := cl.Watch(ctx, newList(), client.InNamespace(namespace), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv}})
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			for ev := range w.ResultChan() {
				switch ev.Type {
				case watch.Added, watch.Modified:
					record(ev.Object, false)
				case watch.Deleted:
					record(ev.Object, true)
				}
			}
			w.Stop()
		}
	}()
	return t
}

// count returns how many objects are done and how many are known.
func (t *tracker) count(isDone func(runtime.Object) bool) (done, known int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range t.last {
		if isDone(o) {
			done++
		}
	}
	return done, len(t.last)
}

// get returns the last seen version of the named object.
func (t *tracker) get(name string) runtime.Object {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last[name]
}

// waitAll waits until n objects are done, printing progress every 10 s, and returns when.
func (t *tracker) waitAll(ctx context.Context, what string, n int, timeout time.Duration, isDone func(runtime.Object) bool) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	nextReport := time.Now().Add(10 * time.Second)
	for {
		done, known := t.count(isDone)
		if done >= n {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("only %d of %d %s after %s", done, n, what, timeout)
		}
		if time.Now().After(nextReport) {
			progress("    %d of %d %s (%d seen)", done, n, what, known)
			nextReport = time.Now().Add(10 * time.Second)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// whenAll notes, in the background, the first time n objects are done, checking as often
// as waitAll; the function returned gives that time, zero until then.
func (t *tracker) whenAll(ctx context.Context, n int, isDone func(runtime.Object) bool) func() time.Time {
	var mu sync.Mutex
	var at time.Time
	go func() {
		for {
			if done, _ := t.count(isDone); done >= n {
				mu.Lock()
				at = time.Now()
				mu.Unlock()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return at
	}
}

// deploymentAvailable: the current template is rolled out and available.
func deploymentAvailable(o runtime.Object) bool {
	d, ok := o.(*appsv1.Deployment)
	if !ok || d.Status.ObservedGeneration < d.Generation {
		return false
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	return d.Status.UpdatedReplicas == want && d.Status.AvailableReplicas == want && d.Status.Replicas == want
}

func deploymentImage(o runtime.Object) string {
	d, ok := o.(*appsv1.Deployment)
	if !ok || len(d.Spec.Template.Spec.Containers) == 0 {
		return ""
	}
	return d.Spec.Template.Spec.Containers[0].Image
}

// waitImage waits until the Deployment of app i shows the image, on the watch w opened
// before the action being timed. A watch the API server ends is opened again.
func waitImage(ctx context.Context, cl client.WithWatch, i int, w watch.Interface, want string, timeout time.Duration) (time.Time, error) {
	defer func() { w.Stop() }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				var err error
				if w, err = watchDeployment(ctx, cl, i); err != nil {
					return time.Time{}, err
				}
				d := &appsv1.Deployment{}
				if err := cl.Get(ctx, client.ObjectKey{Namespace: namespace, Name: appName(i)}, d); err == nil && deploymentImage(d) == want {
					return time.Now(), nil
				}
				continue
			}
			if deploymentImage(ev.Object) == want {
				return time.Now(), nil
			}
		case <-timer.C:
			return time.Time{}, fmt.Errorf("the Deployment did not show %s within %s", want, timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// watchDeployment opens a watch on one Deployment from its current version.
func watchDeployment(ctx context.Context, cl client.WithWatch, i int) (watch.Interface, error) {
	d := &appsv1.Deployment{}
	if err := cl.Get(ctx, client.ObjectKey{Namespace: namespace, Name: appName(i)}, d); err != nil {
		return nil, err
	}
	return cl.Watch(ctx, &appsv1.DeploymentList{}, client.InNamespace(namespace),
		client.MatchingFields{"metadata.name": appName(i)},
		&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: d.ResourceVersion}})
}

// releaseReady: Ready=True for the current generation.
func releaseReady(o runtime.Object) bool {
	r, ok := o.(*v1alpha1.ImmutableRelease)
	if !ok || r.Status.ObservedGeneration != r.Generation {
		return false
	}
	return apimeta.IsStatusConditionTrue(r.Status.Conditions, "Ready")
}

// releaseApplied: some revision is applied, healthy or not.
func releaseApplied(o runtime.Object) bool {
	r, ok := o.(*v1alpha1.ImmutableRelease)
	return ok && r.Status.LastAppliedRevision != ""
}

// releaseAt returns done-functions for "applied revision ends with hash".
func releaseAt(hash string) func(runtime.Object) bool {
	return func(o runtime.Object) bool {
		r, ok := o.(*v1alpha1.ImmutableRelease)
		return ok && strings.HasSuffix(r.Status.LastAppliedRevision, hash)
	}
}

func writeManifests(dir string, n int) (string, error) {
	var b strings.Builder
	for i := range n {
		b.WriteString("---\n")
		b.WriteString(deploymentYAML(i, image(i, 1)))
		b.WriteString("---\n")
		b.WriteString(serviceYAML(i))
	}
	path := filepath.Join(dir, "fleet.yaml")
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}
