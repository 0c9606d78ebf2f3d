package controllers

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/receiver"
)

// Notify implements receiver.Notifier in the manager's own process: a verified push queues
// a reconcile of every release of the Receiver's target (its namespace, narrowed by its
// spec.resources) that follows the pushed repository and reference, with no write to the
// API server. Releases of other namespaces are not even listed. The releases whose path the
// push changed are queued first, so that in a fleet of a thousand releases on one
// repository the one that changed does not wait behind the others; the others still record
// the new revision. Every queued release lists the remote again, but one listing made after
// the push serves them all.
//
// A push may reach any replica of any shard. The releases this replica does not reconcile
// (another shard's, or all of them while it stands by) get the time of the push in their
// pushed-at annotation instead, which brings them to the replica that does: one write per
// release, where a queued reconcile costs none.
func (r *ImmutableReleaseReconciler) Notify(ctx context.Context, target receiver.Target, push receiver.Push) (int, error) {
	if target.Namespace == "" {
		return 0, fmt.Errorf("a push without a namespace")
	}
	pushedAt := time.Now()
	leading := r.leading()
	var list v1alpha1.ImmutableReleaseList
	var err error
	if leading && r.Options.Shard.Selector().Empty() {
		// The cache holds every release: nothing to hand to another replica.
		err = r.List(ctx, &list, client.InNamespace(target.Namespace))
	} else {
		err = r.APIReader.List(ctx, &list, client.InNamespace(target.Namespace))
	}
	if err != nil {
		return 0, fmt.Errorf("listing releases: %w", err)
	}
	var matched, elsewhere []*v1alpha1.ImmutableRelease
	for i := range list.Items {
		rel := &list.Items[i]
		switch {
		case !target.Selects(rel) || !receiver.Matches(rel, push) || rel.Spec.Suspend:
		case leading && r.Options.Shard.Selects(rel.GetLabels()):
			matched = append(matched, rel)
		default:
			elsewhere = append(elsewhere, rel)
		}
	}
	if err := r.handOver(ctx, elsewhere, pushedAt); err != nil {
		return 0, err
	}
	if len(matched) == 0 {
		return len(elsewhere), nil
	}
	if len(matched) == 0 {
		return 0, nil
	}
	changed, unchanged := r.splitByChange(ctx, matched, pushedAt)
	for _, rel := range changed {
		r.memories.peek(client.ObjectKeyFromObject(rel)).updateSource(func(s *git.Source) { s.Push(pushedAt, true) })
	}
	for _, rel := range unchanged {
		r.memories.peek(client.ObjectKeyFromObject(rel)).updateSource(func(s *git.Source) { s.Push(pushedAt, false) })
	}
	for _, rel := range append(changed, unchanged...) {
		select {
		case r.notifications <- event.GenericEvent{Object: rel}:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return len(matched) + len(elsewhere), nil
}

// leading says whether this replica's controller runs: it is the elected one of its shard.
func (r *ImmutableReleaseReconciler) leading() bool {
	if r.elected == nil {
		return true
	}
	select {
	case <-r.elected:
		return true
	default:
		return false
	}
}

// handOver announces a push to releases another replica reconciles, through their
// pushed-at annotation (v1alpha1.PushedAtAnnotation).
func (r *ImmutableReleaseReconciler) handOver(ctx context.Context, releases []*v1alpha1.ImmutableRelease, pushedAt time.Time) error {
	at := pushedAt.UTC().Format(time.RFC3339Nano)
	for _, rel := range releases {
		patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, v1alpha1.PushedAtAnnotation, at))
		if err := r.Patch(ctx, rel, client.RawPatch(types.MergePatchType, patch)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("announcing the push to release %s/%s: %w", rel.Namespace, rel.Name, err)
		}
	}
	return nil
}

// Queue priorities of releases notified of a push: those whose path changed go before
// other work, the others after it and a moment later, so that a push to a repository shared by a thousand
// releases neither delays the one that changed nor the correction of drift elsewhere.
const (
	changedPriority   = 10
	unchangedPriority = handler.LowPriority
)

// unchangedDelay defers the releases a push did not change (they only record the new
// revision), so that the ones it changed apply on a quiet API server.
const unchangedDelay = time.Second

// enqueueNotified queues a notified release at the priority its push gives it.
func (r *ImmutableReleaseReconciler) enqueueNotified(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.Object)}
	pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request])
	if !ok {
		q.Add(req)
		return
	}
	if src := r.memories.peek(req.NamespacedName).gitSource(); src.Changed {
		priority := changedPriority
		pq.AddWithOpts(priorityqueue.AddOpts{Priority: &priority}, req)
		return
	}
	priority := unchangedPriority
	pq.AddWithOpts(priorityqueue.AddOpts{Priority: &priority, After: unchangedDelay}, req)
}

// splitByChange fetches the pushed head once and sorts the releases into those whose path
// it changed and the rest. Only the order depends on it: when Git cannot answer here, all
// count as changed and each reconcile reports the failure on its release.
func (r *ImmutableReleaseReconciler) splitByChange(ctx context.Context, releases []*v1alpha1.ImmutableRelease, pushedAt time.Time) (changed, unchanged []*v1alpha1.ImmutableRelease) {
	first := releases[0]
	head, auth, err := r.fetchHead(ctx, first, pushedAt)
	if err != nil {
		log.FromContext(ctx).V(1).Info("Could not read the pushed head; queueing every release", "error", err.Error())
		return releases, nil
	}
	var questions []git.PathChange
	var asked []*v1alpha1.ImmutableRelease
	for _, rel := range releases {
		applied := git.RevisionHash(rel.Status.LastAppliedRevision)
		// Only a release reading the store of the same credentials can be answered from it.
		if rel.Spec.Git.URL != first.Spec.Git.URL || !sameCredentials(rel, first) || applied == "" {
			changed = append(changed, rel)
			continue
		}
		questions = append(questions, git.PathChange{From: applied, To: head, Path: rel.Spec.Path})
		asked = append(asked, rel)
	}
	// An error leaves its answer at "changed": only the order depends on it.
	answers, _ := r.Git.PathsChanged(first.Spec.Git.URL, auth, questions)
	for i, rel := range asked {
		if answers == nil || answers[i] {
			changed = append(changed, rel)
		} else {
			unchanged = append(unchanged, rel)
		}
	}
	return changed, unchanged
}

// fetchHead lists the release's reference as of the push and brings the commit into the
// shared store, where the reconciles that follow find it. auth is what it read the store with.
func (r *ImmutableReleaseReconciler) fetchHead(ctx context.Context, obj *v1alpha1.ImmutableRelease, notBefore time.Time) (string, *git.Auth, error) {
	auth, err := r.gitAuth(ctx, obj)
	if err != nil {
		return "", nil, err
	}
	ref := gitReference(obj)
	ctx, cancel := r.gitContext(ctx, obj)
	defer cancel()
	hash, _, err := r.Git.ResolveSince(ctx, obj.Spec.Git.URL, ref, auth, notBefore)
	if err != nil {
		return "", nil, err
	}
	_, _, release, err := r.Git.Checkout(ctx, obj.Spec.Git.URL, ref, hash, auth)
	if err != nil {
		return "", nil, err
	}
	release()
	return hash, auth, nil
}

// sameCredentials says whether two releases read Git with the same Secret.
func sameCredentials(a, b *v1alpha1.ImmutableRelease) bool {
	if a.Spec.Git.SecretRef == nil || b.Spec.Git.SecretRef == nil {
		return a.Spec.Git.SecretRef == nil && b.Spec.Git.SecretRef == nil
	}
	return a.Namespace == b.Namespace && a.Spec.Git.SecretRef.Name == b.Spec.Git.SecretRef.Name
}
