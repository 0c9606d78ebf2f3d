// Package health judges whether the objects of an applied revision have rolled out, with
// kstatus: a Deployment is Current when its new ReplicaSet is available, a Job when it has
// completed, and so on. It reads each object once and never waits.
package health

import (
	"context"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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

// Check reads every object and computes its kstatus. Objects that are gone count as
// progressing: they are recreated at the next apply.
func Check(ctx context.Context, reader client.Reader, objects []*unstructured.Unstructured) (Result, error) {
	var failed, progressing []string
	for _, o := range objects {
		name := objectName(o)
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		if err := reader.Get(ctx, client.ObjectKeyFromObject(o), live); err != nil {
			if apierrors.IsNotFound(err) {
				progressing = append(progressing, name+": not found")
				continue
			}
			return Result{}, fmt.Errorf("reading %s: %w", name, err)
		}
		res, err := status.Compute(live)
		if err != nil {
			return Result{}, fmt.Errorf("computing the status of %s: %w", name, err)
		}
		switch res.Status {
		case status.CurrentStatus:
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
		return Result{Verdict: Failed, Objects: append(failed, progressing...)}, nil
	case len(progressing) > 0:
		return Result{Verdict: Progressing, Objects: progressing}, nil
	default:
		return Result{Verdict: Healthy}, nil
	}
}

func objectName(o *unstructured.Unstructured) string {
	if ns := o.GetNamespace(); ns != "" {
		return o.GetKind() + "/" + ns + "/" + o.GetName()
	}
	return o.GetKind() + "/" + o.GetName()
}
