package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
)

// source gives the scope the revision and its prepared objects: from Git when a look is
// due (git.Source.Due), else from the last look. Its error ends the reconcile with the
// result returned.
func (r *ImmutableReleaseReconciler) source(ctx context.Context, s *scope) (ctrl.Result, error) {
	look := r.look(s.obj)
	src := s.mem.gitSource()
	s.asked = src.Asked(look)
	due, notBefore := src.Due(look)
	if !due {
		last := s.mem.lastCheck()
		s.revision, s.commit, s.objects = last.revision, last.commit, last.objects
		return r.requeue(s.obj, 0), last.err
	}
	checked := time.Now()
	err := r.checkGit(ctx, s, notBefore)
	r.recordGitCheck(s, look, checked, err)
	if isWaiting(err) {
		// The end of the operation brings the release back; this is in case it cannot.
		return ctrl.Result{RequeueAfter: s.obj.GetGitTimeout(r.Options.GitTimeout) + time.Second}, err
	}
	return r.requeue(s.obj, 0), err
}

// checkGit lists the remote, checks out the revision and builds its manifests.
func (r *ImmutableReleaseReconciler) checkGit(ctx context.Context, s *scope, notBefore time.Time) error {
	if err := r.checkServiceAccount(ctx, s); err != nil {
		return err
	}
	release, err := r.fetchSource(ctx, s, notBefore)
	if err != nil {
		return err
	}
	defer release()
	if s.decryptor, err = r.decryptor(ctx, s.obj); err != nil {
		return err
	}
	err = r.build(s)
	var f *failure
	if errors.As(err, &f) && !f.stalled {
		// A revision that names kinds its dependencies install (their CRDs) cannot be
		// prepared before they are: while they are not Ready, that is what it waits for.
		if derr := r.checkDependencies(ctx, s); derr != nil {
			return derr
		}
	}
	return err
}

// fetchSource lists the remote (or reuses a listing made at or after notBefore) and checks
// out the commit the reference points at. A slow server leaves the reconcile waiting
// (fetchGit), not the worker.
func (r *ImmutableReleaseReconciler) fetchSource(ctx context.Context, s *scope, notBefore time.Time) (release func(), err error) {
	obj := s.obj
	auth, err := r.gitAuth(ctx, obj)
	if err != nil {
		return nil, err
	}
	ref := gitReference(obj)
	f, err := r.fetchGit(ctx, obj, s.mem, ref, auth, notBefore)
	if isWaiting(err) {
		return nil, err
	}
	if f != nil && f.hash != "" {
		s.revision, s.listedAt = git.Revision(ref, f.hash), f.listedAt
		obj.Status.LastAttemptedRevision = s.revision
	}
	if err != nil {
		return nil, gitFailure(err)
	}
	s.dir, s.commit, s.auth = f.dir, f.commit, auth
	return f.release, nil
}

// gitAuth reads the release's Secret and builds the Git authentication from it.
func (r *ImmutableReleaseReconciler) gitAuth(ctx context.Context, obj *v1alpha1.ImmutableRelease) (*git.Auth, error) {
	var data map[string][]byte
	if ref := obj.Spec.Git.SecretRef; ref != nil {
		secret := &corev1.Secret{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: ref.Name}, secret); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, retry(v1alpha1.AuthenticationFailedReason, fmt.Errorf("secret %q not found in namespace %q: create it with the Git credentials (username and password, or identity and known_hosts)", ref.Name, obj.Namespace))
			}
			return nil, retry(v1alpha1.AuthenticationFailedReason, fmt.Errorf("reading secret %q: %w", ref.Name, err))
		}
		data = secret.Data
	}
	auth, err := git.AuthFromSecret(obj.Spec.Git.URL, data)
	if errors.Is(err, git.ErrURLNotAllowed) {
		return nil, gitFailure(err)
	}
	if err != nil {
		if obj.Spec.Git.SecretRef != nil {
			err = fmt.Errorf("secret %q: %w", obj.Spec.Git.SecretRef.Name, err)
		}
		return nil, retry(v1alpha1.AuthenticationFailedReason, err)
	}
	return auth, nil
}

// gitFailure gives a failed Git operation its reason: what a hostile or mistaken
// repository or spec caused waits for a change (stalled); anything else is retried.
func gitFailure(err error) error {
	switch {
	case errors.Is(err, git.ErrURLNotAllowed), errors.Is(err, git.ErrInvalidReference):
		return stall(v1alpha1.InvalidGitSourceReason, err)
	case errors.Is(err, git.ErrUnsafeTree):
		return stall(v1alpha1.UnsafeRepositoryReason, err)
	case errors.Is(err, git.ErrTooLarge):
		return stall(v1alpha1.RepositoryTooLargeReason, err)
	default:
		return retry(v1alpha1.GitOperationFailedReason, err)
	}
}

func gitReference(obj *v1alpha1.ImmutableRelease) git.Reference {
	ref := obj.Spec.Git.Ref
	return git.Reference{Branch: ref.Branch, Tag: ref.Tag, Commit: ref.Commit}
}

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
