// Package health judges whether the objects of an applied revision have rolled out, with
// kstatus: a Deployment is Current when its new ReplicaSet is available, a Job when it has
// completed, and so on; and custom resources by the CEL expressions of
// spec.healthCheckExprs (Exprs), as Flux does. It reads each object once and never waits.
package health

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Verdict summarises the health of a set of objects.
type Verdict string

const (
	// Healthy: every object is Current.
	Healthy Verdict = "Healthy"
	// Progressing: some object is still rolling out.
	Progressing Verdict = "Progressing"
	// Failed: kstatus reports some object Failed (for example ProgressDeadlineExceeded).
	Failed Verdict = "Failed"
)

// Result is the verdict and, for every object that is not Current, why.
type Result struct {
	Verdict Verdict
	// Objects names each object that is not Current with kstatus's message.
	Objects []string
	// Running maps each workload (Kind/namespace/name) that has rolled out to its
	// containers and the image digests their pods really run, read from
	// status.containerStatuses[].imageID.
	Running map[string]map[string][]string
}

// Message is a sentence for a condition.
func (r Result) Message() string {
	switch r.Verdict {
	case Healthy:
		return "all objects are healthy"
	case Failed:
		return "failed: " + strings.Join(r.Objects, "; ")
	default:
		return "waiting for " + strings.Join(r.Objects, "; ")
	}
}

// Check reads every object and computes its status: by exprs when an entry judges its
// kind, else by kstatus. Objects that are gone count as progressing: they are recreated at
// the next apply, or, named by spec.healthChecks, may be yet to come; so do objects of a
// kind the API server does not serve (yet).
func Check(ctx context.Context, reader client.Reader, objects []*unstructured.Unstructured, exprs *Exprs) (Result, error) {
	var failed, progressing []string
	running := map[string]map[string][]string{}
	cost := newBudget()
	for _, o := range objects {
		name := objectName(o)
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		if err := reader.Get(ctx, client.ObjectKeyFromObject(o), live); err != nil {
			switch {
			case apierrors.IsNotFound(err):
				progressing = append(progressing, name+": not found")
				continue
			case meta.IsNoMatchError(err):
				progressing = append(progressing, fmt.Sprintf("%s: the API server does not serve %s %s", name, o.GetAPIVersion(), o.GetKind()))
				continue
			}
			return Result{}, fmt.Errorf("reading %s: %w", name, err)
		}
		res, judged := exprs.judge(ctx, live, cost)
		if !judged {
			var err error
			if res, err = status.Compute(live); err != nil {
				return Result{}, fmt.Errorf("computing the status of %s: %w", name, err)
			}
		}
		switch res.Status {
		case status.CurrentStatus:
			// The digests pods run are read once the rollout is done: while it runs, old
			// and new pods mix, and reading them costs a list per look.
			if digests, err := runningDigests(ctx, reader, live); err != nil {
				return Result{}, fmt.Errorf("reading the pods of %s: %w", name, err)
			} else if digests != nil {
				running[name] = digests
			}
		case status.FailedStatus:
			failed = append(failed, name+": "+res.Message)
		default:
			msg := res.Message
			if msg == "" {
				msg = string(res.Status)
			}
			progressing = append(progressing, name+": "+msg)
		}
	}
	sort.Strings(failed)
	sort.Strings(progressing)
	switch {
	case len(failed) > 0:
		return Result{Verdict: Failed, Objects: append(failed, progressing...), Running: running}, nil
	case len(progressing) > 0:
		return Result{Verdict: Progressing, Objects: progressing, Running: running}, nil
	default:
		return Result{Verdict: Healthy, Running: running}, nil
	}
}

// workloadKinds own pods through spec.selector.
var workloadKinds = map[string]bool{"Deployment": true, "StatefulSet": true, "DaemonSet": true, "ReplicaSet": true, "Job": true}

// runningDigests lists the pods a workload selects and collects, per container, the digests
// in their imageIDs. Pods that have not started a container yet report nothing for it.
func runningDigests(ctx context.Context, reader client.Reader, live *unstructured.Unstructured) (map[string][]string, error) {
	if !workloadKinds[live.GetKind()] || (live.GroupVersionKind().Group != "apps" && live.GroupVersionKind().Group != "batch") {
		return nil, nil
	}
	raw, found, _ := unstructured.NestedMap(live.Object, "spec", "selector")
	if !found {
		return nil, nil
	}
	// The whole selector, matchExpressions too: matchLabels alone would count the pods of
	// another workload that shares the labels (a canary beside the stable track, say).
	var ls metav1.LabelSelector
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &ls); err != nil {
		return nil, fmt.Errorf("reading spec.selector: %w", err)
	}
	if len(ls.MatchLabels) == 0 && len(ls.MatchExpressions) == 0 {
		// An empty selector selects every pod of the namespace: none of them is known to
		// be this workload's.
		return nil, nil
	}
	selector, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil {
		return nil, fmt.Errorf("reading spec.selector: %w", err)
	}
	pods := &corev1.PodList{}
	if err := reader.List(ctx, pods, client.InNamespace(live.GetNamespace()), client.MatchingLabelsSelector{Selector: selector}); err != nil {
		if apierrors.IsForbidden(err) {
			// A release's service account may apply workloads without reading pods.
			return nil, nil
		}
		return nil, err
	}
	out := map[string][]string{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			if _, digest, ok := strings.Cut(cs.ImageID, "@"); ok && !slices.Contains(out[cs.Name], digest) {
				out[cs.Name] = append(out[cs.Name], digest)
			}
		}
	}
	for _, d := range out {
		sort.Strings(d)
	}
	return out, nil
}

func objectName(o *unstructured.Unstructured) string {
	if ns := o.GetNamespace(); ns != "" {
		return o.GetKind() + "/" + ns + "/" + o.GetName()
	}
	return o.GetKind() + "/" + o.GetName()
}
