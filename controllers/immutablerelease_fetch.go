package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
)

// defaultGitPatience is how long a worker waits for a Git server before it leaves the
// operation to finish in the background. A server that never answers (a tarpit) then
// costs its own release a moment of a worker per attempt, not every worker for the whole
// Git timeout: the other tenants' releases go on meanwhile.
const defaultGitPatience = 2 * time.Second

// fetch is one listing and checkout of a release's reference, running in the background.
type fetch struct {
	url  string
	ref  git.Reference
	auth string // the credentials' ID
	done chan struct{}

	// Set before done is closed.
	hash     string
	listedAt time.Time
	dir      string
	commit   git.Commit
	release  func()
	err      error
}

// gitWaiting is the outcome of a reconcile whose Git server has not answered yet: the
// release is Reconciling, not failed, and comes back when the operation ends.
type gitWaiting struct {
	url     string
	timeout time.Duration
}

func (w *gitWaiting) Error() string {
	return fmt.Sprintf("waiting for %s: the Git server has not answered yet; the operation goes on in the background for at most %s", git.Redact(w.url), w.timeout)
}

// fetchGit lists the release's reference and checks out its commit, waiting at most the
// Git patience: beyond it the operation goes on in the background, its end requeues the
// release, and the reconcile returns a *gitWaiting. A fetch started for an earlier spec
// (another URL, reference or Secret) is dropped, not used.
func (r *ImmutableReleaseReconciler) fetchGit(ctx context.Context, obj *v1alpha1.ImmutableRelease, mem *memory, ref git.Reference, auth *git.Auth, notBefore time.Time) (*fetch, error) {
	mem.mu.Lock()
	f := mem.fetch
	if f != nil && (f.url != obj.Spec.Git.URL || f.ref != ref || f.auth != auth.ID) {
		go f.drop()
		f = nil
	}
	if f == nil {
		f = &fetch{url: obj.Spec.Git.URL, ref: ref, auth: auth.ID, done: make(chan struct{})}
		mem.fetch = f
		timeout := obj.GetGitTimeout(r.Options.GitTimeout)
		stub := &v1alpha1.ImmutableRelease{}
		stub.Namespace, stub.Name = obj.Namespace, obj.Name
		go r.runFetch(f, auth, notBefore, timeout, stub)
	}
	mem.mu.Unlock()

	patience := r.Options.GitPatience
	if patience == 0 {
		patience = defaultGitPatience
	}
	timer := time.NewTimer(patience)
	defer timer.Stop()
	select {
	case <-f.done:
	case <-timer.C:
		return nil, &gitWaiting{url: obj.Spec.Git.URL, timeout: obj.GetGitTimeout(r.Options.GitTimeout)}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	mem.mu.Lock()
	if mem.fetch == f {
		mem.fetch = nil
	}
	mem.mu.Unlock()
	return f, f.err
}

// runFetch runs the operation, bounded by the release's Git timeout and by nothing else:
// it outlives the reconcile that started it. Its end brings the release back.
func (r *ImmutableReleaseReconciler) runFetch(f *fetch, auth *git.Auth, notBefore time.Time, timeout time.Duration, obj *v1alpha1.ImmutableRelease) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	listStart := time.Now()
	f.hash, f.listedAt, f.err = r.Git.ResolveSince(ctx, f.url, f.ref, auth, notBefore)
	gitDuration.WithLabelValues("list").Observe(time.Since(listStart).Seconds())
	if f.err == nil {
		checkoutStart := time.Now()
		f.dir, f.commit, f.release, f.err = r.Git.Checkout(ctx, f.url, f.ref, f.hash, auth)
		gitDuration.WithLabelValues("checkout").Observe(time.Since(checkoutStart).Seconds())
	}
	close(f.done)
	select {
	case r.fetched <- event.GenericEvent{Object: obj}:
	default: // the queue is full: the waiting release's own requeue brings it back
	}
}

// drop lets go of the checkout of a fetch nobody will take, once it is done.
func (f *fetch) drop() {
	<-f.done
	if f.release != nil {
		f.release()
	}
}

// isWaiting says whether err is a reconcile left waiting for Git.
func isWaiting(err error) bool {
	var w *gitWaiting
	return errors.As(err, &w)
}
