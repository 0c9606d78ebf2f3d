package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/tenancy"
)

// dependencyIndex indexes the cached releases by the releases they depend on
// ("namespace/name"), so that a dependency's change reaches its dependents at once.
const dependencyIndex = ".spec.dependsOn"

// maxDependencyWalk bounds how many releases the cycle check reads.
const maxDependencyWalk = 256

// dependencies returns the keys of the releases obj depends on.
func dependencies(obj *v1alpha1.ImmutableRelease) []types.NamespacedName {
	out := make([]types.NamespacedName, 0, len(obj.Spec.DependsOn))
	for _, d := range obj.Spec.DependsOn {
		ns := d.Namespace
		if ns == "" {
			ns = obj.Namespace
		}
		out = append(out, types.NamespacedName{Namespace: ns, Name: d.Name})
	}
	return out
}

// dependencyKeys is the index function of dependencyIndex.
func dependencyKeys(o client.Object) []string {
	var keys []string
	for _, d := range dependencies(o.(*v1alpha1.ImmutableRelease)) {
		keys = append(keys, d.String())
	}
	return keys
}

// dependents maps a release to the cached releases that depend on it.
func (r *ImmutableReleaseReconciler) dependents(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1alpha1.ImmutableReleaseList
	if err := r.List(ctx, &list, client.MatchingFields{dependencyIndex: client.ObjectKeyFromObject(o).String()}); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, len(list.Items))
	for i := range list.Items {
		reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])}
	}
	return reqs
}

// dependencyChanged passes the changes of a release that its dependents wait for: created,
// deleted, or its readiness at its current revision moved.
var dependencyChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, now := e.ObjectOld.(*v1alpha1.ImmutableRelease), e.ObjectNew.(*v1alpha1.ImmutableRelease)
		return readyAtRevision(old) != readyAtRevision(now) ||
			readyAtRevision(now) && old.Status.LastAppliedRevision != now.Status.LastAppliedRevision
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// readyAtRevision says whether a release is Ready at its current revision and spec: what a
// dependent waits for (Flux's rule for dependsOn). A dependency that follows the same
// repository and reference must moreover be Ready at the revision the dependent applies
// (sameSource).
func readyAtRevision(obj *v1alpha1.ImmutableRelease) bool {
	return obj.DeletionTimestamp.IsZero() && conditions.IsReady(obj) && obj.Status.ObservedGeneration == obj.Generation &&
		obj.Status.LastAppliedRevision != "" && obj.Status.LastAppliedRevision == obj.Status.LastAttemptedRevision
}

// sameSource says whether two releases follow the same repository and reference: then a
// commit is one revision of both, and a dependent applies it only after its dependency
// has. Without this, a dependent could apply a commit its dependency has not yet seen (the
// dependency Ready at the commit before), and after a dependency's failed rollout is
// reverted, its dependents would not wait for the revert to be healthy.
func sameSource(a, b *v1alpha1.ImmutableRelease) bool {
	return a.Spec.Git.URL == b.Spec.Git.URL && gitReference(a) == gitReference(b)
}

// checkDependencies lets a release apply the scope's revision only once every release it
// depends on is Ready at its current revision, and at that revision itself when it follows
// the same repository and reference. A cycle, or a dependency in another namespace where
// the platform does not allow one, is refused until the spec changes.
func (r *ImmutableReleaseReconciler) checkDependencies(ctx context.Context, s *scope) error {
	obj, revision := s.obj, s.revision
	deps := dependencies(obj)
	if len(deps) == 0 {
		return nil
	}
	for _, d := range deps {
		if d.Namespace != obj.Namespace && !r.Options.Tenancy.MayDependAcross(obj.Namespace) {
			return stall(tenancy.ReasonAccessDenied, fmt.Errorf("spec.dependsOn names %s, in another namespace: only releases of the manager's --unconfined-namespaces may depend across namespaces; nothing was applied", d))
		}
	}
	cycle, err := r.dependencyCycle(ctx, obj)
	if err != nil {
		return retry(v1alpha1.DependencyNotReadyReason, err)
	}
	if cycle != nil {
		return stall(v1alpha1.DependencyCycleReason, fmt.Errorf("spec.dependsOn forms a cycle: %s; remove one of these dependencies; nothing was applied", strings.Join(cycle, " -> ")))
	}
	var waiting []string
	for _, d := range deps {
		dep, err := r.release(ctx, d)
		switch {
		case apierrors.IsNotFound(err):
			waiting = append(waiting, d.String()+" not found")
		case err != nil:
			return retry(v1alpha1.DependencyNotReadyReason, fmt.Errorf("reading dependency %s: %w", d, err))
		case !readyAtRevision(dep):
			waiting = append(waiting, fmt.Sprintf("%s not Ready at its revision (%s)", d, orNone(conditions.GetMessage(dep, meta.ReadyCondition))))
		case sameSource(dep, obj) && revision != "" && dep.Status.LastAppliedRevision != revision:
			waiting = append(waiting, fmt.Sprintf("%s not yet at revision %s (Ready at %s)", d, revision, dep.Status.LastAppliedRevision))
			r.seenBy(s, d)
		}
	}
	if len(waiting) > 0 {
		return retry(v1alpha1.DependencyNotReadyReason, fmt.Errorf("waiting for dependencies before applying: %s", strings.Join(waiting, "; ")))
	}
	return nil
}

// seenBy tells the release's Git source that dependency d, on the same reference, is Ready
// at another revision: if d listed the remote after this release did, the branch may have
// moved on (a revert of d's failed rollout, a newer push), and the next reconcile looks
// again, reusing d's listing. A dependency this manager does not reconcile (another
// shard's) gives no listing time: the remote is listed again as of now.
func (r *ImmutableReleaseReconciler) seenBy(s *scope, d types.NamespacedName) {
	at := time.Now()
	if dep := r.memories.peek(d); dep != nil {
		at = dep.gitSource().ListedAt
	}
	s.mem.updateSource(func(src *git.Source) { src.Seen(at) })
}

// release reads a release from the cache, or from the API server when the cache does not
// hold it (another shard's).
func (r *ImmutableReleaseReconciler) release(ctx context.Context, key types.NamespacedName) (*v1alpha1.ImmutableRelease, error) {
	obj := &v1alpha1.ImmutableRelease{}
	err := r.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, key, obj)
	}
	return obj, err
}

// dependencyCycle returns the releases of a cycle through obj ("a -> b -> a"), or nil. It
// reads at most maxDependencyWalk releases; releases not found end their path.
func (r *ImmutableReleaseReconciler) dependencyCycle(ctx context.Context, obj *v1alpha1.ImmutableRelease) ([]string, error) {
	start := client.ObjectKeyFromObject(obj)
	seen := map[types.NamespacedName]bool{}
	var walk func(key types.NamespacedName, deps []types.NamespacedName, path []string) ([]string, error)
	walk = func(key types.NamespacedName, deps []types.NamespacedName, path []string) ([]string, error) {
		path = append(path, key.String())
		for _, d := range deps {
			if d == start {
				return append(path, d.String()), nil
			}
			if seen[d] {
				continue
			}
			seen[d] = true
			if len(seen) > maxDependencyWalk {
				return nil, errors.New("spec.dependsOn leads through more than 256 releases")
			}
			dep, err := r.release(ctx, d)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("reading dependency %s: %w", d, err)
			}
			if cycle, err := walk(d, dependencies(dep), path); cycle != nil || err != nil {
				return cycle, err
			}
		}
		return nil, nil
	}
	return walk(start, dependencies(obj), nil)
}

func orNone(s string) string {
	if s == "" {
		return "no Ready condition yet"
	}
	return s
}
