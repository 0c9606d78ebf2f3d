// Package controllers holds the ImmutableRelease reconciler. The decisions live in internal/:
// git fetches, manifest validates, apply applies and prunes, health judges rollouts.
package controllers

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/predicates"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/kubeconfig"
	"github.com/immutable-release/operator/internal/manifest"
	"github.com/immutable-release/operator/internal/notify"
	"github.com/immutable-release/operator/internal/shard"
	"github.com/immutable-release/operator/internal/tenancy"
	"github.com/immutable-release/operator/internal/verify"
)

// +kubebuilder:rbac:groups=release.immutable.dev,resources=immutablereleases,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=release.immutable.dev,resources=immutablereleases/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=release.immutable.dev,resources=immutablereleases/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=impersonate
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=selfsubjectreviews,verbs=create
// +kubebuilder:rbac:groups=*,resources=*,verbs=get;list;watch;create;update;patch;delete

// ImmutableReleaseReconciler reconciles ImmutableRelease objects.
type ImmutableReleaseReconciler struct {
	client.Client
	// APIReader reads Secrets without caching them.
	APIReader client.Reader
	Config    *rest.Config
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	Git       *git.Cache
	Options   Options

	watches watcher
	// clusters holds the local cluster and the remote ones releases target, each with one
	// uncached client per identity the operator acts as there; clients and clusters no
	// remembered release names are dropped.
	clusters clusters
	// clustersCtx is the context of the remote clusters' caches; it ends with the manager.
	clustersCtx context.Context
	// memories is what this process remembers of each release between reconciles.
	memories memories
	// notifications queues the releases a webhook announced a push for (see Notify).
	notifications chan event.GenericEvent
	// elected is closed once this replica leads its shard (nil: it always does).
	elected <-chan struct{}
	// fetched queues a release when the Git operation its reconcile left running in the
	// background ends (immutablerelease_source.go).
	fetched chan event.GenericEvent
	// wakes queues the releases of a remote cluster whose probe found it gone or back, or
	// whose Prevent policy could not be written (immutablerelease_cluster.go).
	wakes chan event.GenericEvent
}

// Options tune the reconciler.
type Options struct {
	// Limits bound what one release may hold.
	Limits manifest.Limits
	// HealthPollInterval is how often a rollout in progress is looked at.
	HealthPollInterval time.Duration
	// MaxConcurrentReconciles is how many releases are reconciled at once.
	MaxConcurrentReconciles int
	// GitTimeout bounds each Git operation of a release without spec.git.timeout.
	GitTimeout time.Duration
	// GitPatience is how long a worker waits for a Git server before it leaves the
	// operation to the background (defaultGitPatience when zero).
	GitPatience time.Duration
	// Tenancy says which account a release acts as and what it may apply.
	Tenancy tenancy.Policy
	// Shard is the part of the fleet this manager reconciles (--watch-label-selector).
	Shard shard.Shard
	// KubeConfig says what a kubeconfig of spec.kubeConfig may hold
	// (--insecure-kubeconfig-exec, --insecure-kubeconfig-tls).
	KubeConfig kubeconfig.Options
	// Attestation signs the deployment records of spec.attest.
	Attestation AttestationOptions
	// Verification verifies the images of a revision before it is applied.
	Verification VerificationOptions
	// IntervalJitter spreads each interval's reconcile by up to this fraction of the
	// interval either way (0.05: ±5%), so that releases created together do not stay
	// in step, all looking at once every interval.
	IntervalJitter float64
}

// DefaultGitTimeout bounds a Git operation when neither the release nor the manager's
// --git-timeout says otherwise; Flux's default.
const DefaultGitTimeout = 60 * time.Second

// gitContext bounds a Git operation of the release: a server that never answers costs its
// own release the timeout, not a worker forever.
func (r *ImmutableReleaseReconciler) gitContext(ctx context.Context, obj *v1alpha1.ImmutableRelease) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, obj.GetGitTimeout(r.Options.GitTimeout))
}

// SetupWithManager registers the reconciler.
func (r *ImmutableReleaseReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Options.HealthPollInterval == 0 {
		r.Options.HealthPollInterval = 10 * time.Second
	}
	if r.Options.GitTimeout == 0 {
		r.Options.GitTimeout = DefaultGitTimeout
	}
	if r.Options.Limits == (manifest.Limits{}) {
		r.Options.Limits = manifest.DefaultLimits
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Options.Verification.Cache == nil {
		r.Options.Verification.Cache = &verify.Cache{Verifier: &verify.Verifier{}}
	}
	r.elected = mgr.Elected()
	r.notifications = make(chan event.GenericEvent, 1024)
	r.fetched = make(chan event.GenericEvent, 1024)
	r.wakes = make(chan event.GenericEvent, 1024)
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.ImmutableRelease{}, dependencyIndex, dependencyKeys); err != nil {
		return err
	}
	c, err := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.ImmutableRelease{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicates.ReconcileRequestedPredicate{}, predicate.AnnotationChangedPredicate{}),
		)).
		// A dependency's change reaches its dependents at once (spec.dependsOn).
		Watches(&v1alpha1.ImmutableRelease{}, handler.EnqueueRequestsFromMapFunc(r.dependents), builder.WithPredicates(dependencyChanged)).
		WatchesRawSource(source.Channel(r.notifications, handler.Funcs{GenericFunc: r.enqueueNotified})).
		WatchesRawSource(source.Channel(r.fetched, &handler.EnqueueRequestForObject{})).
		WatchesRawSource(source.Channel(r.wakes, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: max(r.Options.MaxConcurrentReconciles, 1),
			// Failures are retried with backoff, but never more than 30s apart: a Git server
			// that comes back is noticed soon, whatever the interval.
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](100*time.Millisecond, 30*time.Second),
		}).
		Build(r)
	if err != nil {
		return err
	}
	if err := mgr.Add(storeSweeper{r}); err != nil {
		return err
	}
	r.watches = watcher{controller: c, cache: mgr.GetCache(), scheme: mgr.GetScheme(), watched: map[schema.GroupVersionKind]bool{},
		handler: func(gvk schema.GroupVersionKind) handlerFunc { return r.appliedObjectHandler("", gvk) }}
	r.clusters.local = &cluster{config: r.Config, mapper: mgr.GetRESTMapper(), watches: &r.watches}
	var stop context.CancelFunc
	r.clustersCtx, stop = context.WithCancel(context.Background())
	// The remote clusters' caches end with the manager.
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		<-ctx.Done()
		stop()
		return nil
	}))
}

// Reconcile brings one release in line with Git.
func (r *ImmutableReleaseReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	start := time.Now()
	obj := &v1alpha1.ImmutableRelease{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			// Deleted without our finalizer, or relabelled out of this shard: the cache no
			// longer has it, and this manager forgets it.
			r.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	reconciles.WithLabelValues(req.Namespace, req.Name).Inc()
	mem := r.memories.of(req.NamespacedName)
	wait, err := r.fresh(ctx, obj, mem)
	if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if wait {
		return ctrl.Result{RequeueAfter: 50 * time.Millisecond}, nil
	}

	if obj.DeletionTimestamp.IsZero() && !controllerutil.ContainsFinalizer(obj, v1alpha1.Finalizer) {
		// The answer to the patch is the release as the API server has it: go on with it.
		base := obj.DeepCopy()
		controllerutil.AddFinalizer(obj, v1alpha1.Finalizer)
		if err := r.Patch(ctx, obj, client.MergeFrom(base)); err != nil {
			return ctrl.Result{}, err
		}
	}

	before := obj.DeepCopy()
	defer func() {
		result, retErr = r.finalizeStatus(ctx, obj, before, mem, result, retErr, start)
	}()

	if !obj.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.reconcileDelete(ctx, obj, mem)
	}
	if obj.Spec.Suspend {
		return ctrl.Result{}, nil
	}
	return r.reconcile(ctx, obj, mem)
}

// cacheLagTolerance is how long a reconcile waits for the cache to show the release's own
// last write before it reads the release from the API server instead.
const cacheLagTolerance = 200 * time.Millisecond

// fresh makes obj, read from the cache, at least as new as this process's own last write
// to it. A cached copy older than that write would redo its work and then lose the status
// write to a conflict. The cache is given a moment (wait); beyond it, since a busy API
// server can hold watch events back for seconds and a drift correction would wait as
// long, the release is read from the API server.
func (r *ImmutableReleaseReconciler) fresh(ctx context.Context, obj *v1alpha1.ImmutableRelease, mem *memory) (wait bool, err error) {
	o := mem.lastWrite()
	if o.resourceVersion == "" || o.resourceVersion != obj.ResourceVersion {
		return false, nil
	}
	if time.Since(o.at) < cacheLagTolerance {
		return true, nil
	}
	return false, r.APIReader.Get(ctx, client.ObjectKeyFromObject(obj), obj)
}

// lookPriority is the queue priority of a release's next look, at the interval or at a
// health poll: below the changes that cannot wait (drift, a push that changed the release's
// path, at changedPriority). Without it a requeue keeps the priority of the event that last
// brought the release, and a fleet's interval looks, a thousand at once after a push, queue
// drift corrections behind them.
const lookPriority = 0

// requeue is the jittered interval, or the health poll while a rollout is in progress.
func (r *ImmutableReleaseReconciler) requeue(obj *v1alpha1.ImmutableRelease, polling time.Duration) ctrl.Result {
	if polling > 0 {
		return ctrl.Result{RequeueAfter: polling, Priority: new(lookPriority)}
	}
	return ctrl.Result{RequeueAfter: jittered(obj.GetRequeueAfter(), r.Options.IntervalJitter), Priority: new(lookPriority)}
}

// shortestInterval is the soonest a jittered interval brings a release back: the interval's
// Git check and health look are due then, not an interval later.
func (r *ImmutableReleaseReconciler) shortestInterval(obj *v1alpha1.ImmutableRelease) time.Duration {
	return time.Duration(float64(obj.GetRequeueAfter()) * (1 - r.Options.IntervalJitter))
}

// jittered is d moved by a random fraction of itself, up to p either way.
func jittered(d time.Duration, p float64) time.Duration {
	return time.Duration(float64(d) * (1 + p*(2*rand.Float64()-1)))
}

// look is what the release says about when to look at Git (see git.Source.Due).
func (r *ImmutableReleaseReconciler) look(obj *v1alpha1.ImmutableRelease) git.Look {
	token, _ := meta.ReconcileAnnotationValue(obj.GetAnnotations())
	return git.Look{Now: time.Now(), Generation: obj.Generation, Token: token,
		Attempted: obj.Status.LastAttemptedRevision != "", PushAnnotation: obj.GetAnnotations()[v1alpha1.PushedAtAnnotation],
		Interval: r.shortestInterval(obj)}
}

// gitCheckDue says whether this reconcile must list the remote and apply, and how old a
// listing made for another release may be to serve it (git.Source.Due).
func (r *ImmutableReleaseReconciler) gitCheckDue(obj *v1alpha1.ImmutableRelease, mem *memory) (due bool, notBefore time.Time) {
	src := mem.gitSource()
	return src.Due(r.look(obj))
}

// recordGitCheck remembers what a check of Git begun at checked gave, for the reconciles
// until the next one.
func (r *ImmutableReleaseReconciler) recordGitCheck(s *scope, l git.Look, checked time.Time, err error) {
	// A failure that retrying can fix (Git unreachable, a missing Secret, a refused apply,
	// a server that has not answered yet) is retried against Git itself, fresh.
	var f *failure
	retriable := err != nil && !(errors.As(err, &f) && f.stalled)
	s.mem.updateSource(func(src *git.Source) { src.Check(l, checked, s.listedAt, retriable) })
	c := lastCheck{revision: s.revision, commit: s.commit, err: err, url: s.obj.Spec.Git.URL, objects: s.objects}
	if s.auth != nil {
		c.authID = s.auth.ID
	}
	s.mem.recordCheck(c)
}

// storeIdle is how long a Git store nobody names is kept, and how often they are looked for.
const storeIdle = 10 * time.Minute

// storeSweeper evicts, every storeIdle, the Git stores that no release of this process
// names (a release deleted, moved to another URL or Secret). It runs on every replica: a
// standby's webhook prefetches fill stores too.
type storeSweeper struct{ r *ImmutableReleaseReconciler }

func (storeSweeper) NeedLeaderElection() bool { return false }

func (w storeSweeper) Start(ctx context.Context) error {
	tick := time.NewTicker(storeIdle)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			w.r.sweepStores(storeIdle)
		}
	}
}

// sweepStores evicts the Git stores that no remembered release's last check read and that
// nobody used for idle, and the clients of identities no remembered release acts as.
func (r *ImmutableReleaseReconciler) sweepStores(idle time.Duration) int {
	stores := map[[2]string]bool{}
	identities := map[string]bool{"": true}
	r.memories.each(func(m *memory) {
		store, identity := m.uses()
		stores[store] = true
		identities[identity] = true
	})
	r.clusters.sweepClients(identities)
	r.closeUnusedClusters()
	return r.Git.Evict(func(url, authID string) bool { return stores[[2]string{url, authID}] }, idle)
}

// forget drops what this process remembers of a release that left it (memories.forget),
// and its metric series.
func (r *ImmutableReleaseReconciler) forget(key types.NamespacedName) {
	remote := r.memories.peek(key).cluster().key != ""
	r.memories.forget(key)
	forgetMetrics(key)
	if remote {
		r.closeUnusedClusters()
	}
}

// event records an event about the release; a recorder that takes metadata (notify.Recorder,
// which posts Flux's event payload) is given the revision it concerns (notify.Metadata).
func (r *ImmutableReleaseReconciler) event(obj *v1alpha1.ImmutableRelease, eventType, reason, action, message string) {
	switch rec := r.Recorder.(type) {
	case nil:
	case events.AnnotatedEventRecorder:
		rec.AnnotatedEventf(obj, nil, notify.Metadata(obj, action, reason), eventType, reason, action, "%s", message)
	default:
		rec.Eventf(obj, nil, eventType, reason, action, "%s", message)
	}
}
