package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/apply"
)

// requestCost is the CPU one kind of request costs kube-apiserver and etcd, on average.
type requestCost struct {
	what            string
	perRelease      string
	apiServer, etcd time.Duration
}

// measureRequestCosts makes, on etcd and kube-apiserver alone, each kind of request the
// operator makes for a release, n times with 10 at once, and measures the CPU each costs the
// two processes: what the operator's part of a cold start is made of.
func measureRequestCosts(ctx context.Context, c config, n int) ([]requestCost, error) {
	cp, err := startControlPlane(ctx, c, false)
	if err != nil {
		return nil, err
	}
	defer cp.Stop()
	cl, err := newClient(cp.Config)
	if err != nil {
		return nil, err
	}
	if err := createNamespace(ctx, cl); err != nil {
		return nil, err
	}
	if err := cl.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: namespace}, StringData: map[string]string{"username": "u", "password": "p"}}); err != nil {
		return nil, err
	}
	owner := client.FieldOwner(apply.FieldManager)
	object := func(manifest string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		_ = yaml.Unmarshal([]byte(manifest), &u.Object)
		u.SetNamespace(namespace)
		u.SetLabels(apply.OwnerLabels(client.ObjectKey{Namespace: namespace, Name: u.GetName()}))
		return u
	}
	deployment := func(i int) *unstructured.Unstructured { return object(deploymentYAML(i, image(i, 1))) }
	service := func(i int) *unstructured.Unstructured { return object(serviceYAML(i)) }
	release := func(i int) *v1alpha1.ImmutableRelease {
		return &v1alpha1.ImmutableRelease{ObjectMeta: metav1.ObjectMeta{Name: appName(i), Namespace: namespace}}
	}
	revision := "main@sha1:ebe534433b32cd19fc569d3d818180da03c5849e"
	firstStatus := func(i int) []byte {
		return []byte(fmt.Sprintf(`{"status":{"observedGeneration":1,"lastAttemptedRevision":%[2]q,"lastAppliedRevision":%[2]q,
"conditions":[{"type":"Ready","status":"Unknown","reason":"Progressing","message":"rolling out %[2]s: Deployment/bench/%[1]s: Replicas: 0/1","lastTransitionTime":"2026-11-27T07:42:34Z","observedGeneration":1},
{"type":"Reconciling","status":"True","reason":"Progressing","message":"rolling out %[2]s","lastTransitionTime":"2026-11-27T07:42:34Z","observedGeneration":1},
{"type":"Healthy","status":"Unknown","reason":"Progressing","message":"rolling out %[2]s","lastTransitionTime":"2026-11-27T07:42:34Z","observedGeneration":1}],
"history":[{"appliedAt":"2026-11-27T07:42:34Z","author":"Ada <ada@example.com>","commitTime":"2026-11-27T07:40:18Z","imagesChecksum":"sha256:edfe3b0b4639d3b9e56e0e79c6c912f66caf5081d33f66cf28feb51791b00072","revision":%[2]q,"result":"Applied","subject":"apps"}],
"images":[{"container":"app","image":%[3]q,"workload":"Deployment/bench/%[1]s"}],
"inventory":{"entries":[{"id":"bench_%[1]s__Service","v":"v1"},{"id":"bench_%[1]s_apps_Deployment","v":"v1"}]}}}`, appName(i), revision, image(i, 1)))
	}
	healthyStatus := []byte(`{"status":{"conditions":[{"type":"Ready","status":"True","reason":"ReconciliationSucceeded","message":"Applied","lastTransitionTime":"2026-11-27T07:42:35Z","observedGeneration":1},{"type":"Healthy","status":"True","reason":"Succeeded","message":"all healthy","lastTransitionTime":"2026-11-27T07:42:35Z","observedGeneration":1}]}}`)

	// The releases as read once, for the writes that send whole objects (update, not patch).
	releases := make([]*v1alpha1.ImmutableRelease, n)
	readReleases := func() error {
		list := &v1alpha1.ImmutableReleaseList{}
		if err := cl.List(ctx, list, client.InNamespace(namespace)); err != nil {
			return err
		}
		for i := range list.Items {
			var k int
			if _, err := fmt.Sscanf(list.Items[i].Name, "app-%d", &k); err == nil && k < n {
				releases[k] = &list.Items[i]
			}
		}
		return nil
	}
	steps := []struct {
		what, perRelease string
		setup            func() error // not measured
		do               func(i int) error
	}{
		{"read of an object that does not exist yet (ssa; none when the watch cache shows it absent)", "0", nil, func(i int) error {
			u := deployment(i)
			return client.IgnoreNotFound(cl.Get(ctx, client.ObjectKeyFromObject(u), u))
		}},
		{"dry-run apply creating a Deployment (ssa)", "1", nil, func(i int) error {
			return cl.Patch(ctx, deployment(i), client.Apply, client.DryRunAll, client.ForceOwnership, owner)
		}},
		{"dry-run apply creating a Service (ssa)", "1", nil, func(i int) error {
			return cl.Patch(ctx, service(i), client.Apply, client.DryRunAll, client.ForceOwnership, owner)
		}},
		{"apply creating a Deployment (kubectl's too)", "1", nil, func(i int) error {
			return cl.Patch(ctx, deployment(i), client.Apply, client.ForceOwnership, owner)
		}},
		{"apply creating a Service (kubectl's too)", "1", nil, func(i int) error {
			return cl.Patch(ctx, service(i), client.Apply, client.ForceOwnership, owner)
		}},
		{"read of the Git Secret", "1", nil, func(int) error {
			return cl.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "git"}, &corev1.Secret{})
		}},
		{"read of a Deployment (none since it is watched whole)", "0", nil, func(i int) error {
			u := deployment(i)
			return cl.Get(ctx, client.ObjectKeyFromObject(u), u)
		}},
		{"one pod, for the listing below", "-", nil, func(i int) error {
			return cl.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: appName(i), Labels: map[string]string{"app": appName(i)}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image(i, 1)}}}})
		}},
		{"pods of a Deployment, listed once healthy", "1", nil, func(i int) error {
			return cl.List(ctx, &corev1.PodList{}, client.InNamespace(namespace), client.MatchingLabels{"app": appName(i)})
		}},
		{"create of an ImmutableRelease (the user's)", "-", nil, func(i int) error {
			r := release(i)
			r.Spec = v1alpha1.ImmutableReleaseSpec{Git: v1alpha1.GitSource{URL: "http://127.0.0.1:1/fleet.git", Ref: v1alpha1.GitReference{Branch: "main"},
				SecretRef: &meta.LocalObjectReference{Name: "git"}}, Path: appPath(i), Interval: metav1.Duration{Duration: time.Minute}, Prune: true}
			return cl.Create(ctx, r)
		}},
		{"patch adding the finalizer", "1", nil, func(i int) error {
			return cl.Patch(ctx, release(i), client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":["`+v1alpha1.Finalizer+`"]}}`)))
		}},
		{"status patch: revision applied, rolling out", "1", nil, func(i int) error {
			return cl.Status().Patch(ctx, release(i), client.RawPatch("application/merge-patch+json", firstStatus(i)))
		}},
		{"status patch: healthy", "1", nil, func(i int) error {
			return cl.Status().Patch(ctx, release(i), client.RawPatch("application/merge-patch+json", healthyStatus))
		}},
		{"the same status written whole (update, not patch): no change", "-", readReleases, func(i int) error {
			return cl.Status().Update(ctx, releases[i])
		}},
		{"status written whole (update, not patch): healthy again, new time", "-", readReleases, func(i int) error {
			r := releases[i]
			for c := range r.Status.Conditions {
				r.Status.Conditions[c].LastTransitionTime = metav1.Now()
			}
			return cl.Status().Update(ctx, r)
		}},
		{"a label added with an update (not patch), as a finalizer would be", "-", readReleases, func(i int) error {
			r := releases[i]
			r.Labels = map[string]string{"bench": "update"}
			return cl.Update(ctx, r)
		}},
		{"event (Applied, Healthy)", "2", nil, func(i int) error {
			return cl.Create(ctx, &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%d", appName(i), time.Now().UnixNano()), Namespace: namespace},
				Regarding: corev1.ObjectReference{Kind: "ImmutableRelease", APIVersion: v1alpha1.GroupVersion.String(), Namespace: namespace, Name: appName(i)},
				Reason:    "Applied", Action: "Apply", Note: "Applied revision " + revision + ": 2 created", Type: corev1.EventTypeNormal,
				EventTime: metav1.NowMicro(), ReportingController: "immutable-release", ReportingInstance: "immutable-release"})
		}},
	}
	var out []requestCost
	for k, st := range steps {
		if st.setup != nil {
			if err := st.setup(); err != nil {
				return nil, fmt.Errorf("%s: %w", st.what, err)
			}
		}
		profiled := apiServerProfile(ctx, cp.Config, fmt.Sprintf("step-%02d", k+1), 4)
		before := processCPU(c)
		err := inParallel(n, 10, func(i int) error {
			if err := st.do(i); err != nil {
				return fmt.Errorf("%s: %w", st.what, err)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		// Let the watch cache take in the last writes before the clock stops.
		if err := sleep(ctx, 300*time.Millisecond); err != nil {
			return nil, err
		}
		used := processCPU(c).since(before)
		if err := profiled(); err != nil {
			return nil, err
		}
		out = append(out, requestCost{what: st.what, perRelease: st.perRelease,
			apiServer: used["kube-apiserver"] / time.Duration(n), etcd: used["etcd"] / time.Duration(n)})
	}
	return out, nil
}

func printRequestCosts(out io.Writer, n int, costs []requestCost) {
	fmt.Fprintf(out, "\nCPU per request on etcd and kube-apiserver alone (%d of each, 10 at once), for the requests of a release's cold start\n", n)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "request\tper release\tkube-apiserver\tetcd\t")
	for _, c := range costs {
		fmt.Fprintf(tw, "%s\t%s\t%.2f ms\t%.2f ms\t\n", c.what, c.perRelease, float64(c.apiServer.Microseconds())/1000, float64(c.etcd.Microseconds())/1000)
	}
	tw.Flush()
}
