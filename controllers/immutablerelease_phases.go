package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fluxcd/pkg/runtime/conditions"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/admission"
	"github.com/immutable-release/operator/internal/apply"
	"github.com/immutable-release/operator/internal/decrypt"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/health"
	"github.com/immutable-release/operator/internal/manifest"
	"github.com/immutable-release/operator/internal/rollback"
	"github.com/immutable-release/operator/internal/tenancy"
	"github.com/immutable-release/operator/internal/verify"
)

// scope is what the steps of one reconcile share.
type scope struct {
	obj *v1alpha1.ImmutableRelease
	// mem is what this process remembers of the release.
	mem      *memory
	revision string
	// listedAt is when the listing that gave revision was made: the remote as of then.
	listedAt time.Time
	commit   git.Commit
	// auth is what Git was read with, when this reconcile read it.
	auth *git.Auth
	dir  string
	// decryptor holds the age keys of spec.decryption for this build; nil without it.
	decryptor *decrypt.Decryptor
	// objects are prepared for apply: namespaces set, owner labels added.
	objects []*unstructured.Unstructured
	// changed is true when the apply created or changed an object: a new rollout begins.
	changed bool
	// asked says a person asked for this reconcile or changed the spec: everything is
	// looked at again, nothing taken from what this process remembers.
	asked bool
	// desired caches desiredChecksum: objects do not change once built.
	desired string
	// cluster is where the release's objects live; client acts as the release there.
	cluster *cluster
	client  client.Client
	applier *apply.Applier
	// answers are the objects as the API server answered this reconcile's apply or
	// corrections, by object ID: as fresh as a read, so the health check does not read them.
	answers map[string]*unstructured.Unstructured
	// exprs are spec.healthCheckExprs compiled; healthChecks the objects spec.healthChecks
	// names (prepareHealth).
	exprs        *health.Exprs
	healthChecks []*unstructured.Unstructured
	// verdicts are the verifications of the revision's images, by reference, when the
	// release's policy asks for any (verifyImages).
	verdicts map[string]verify.Verdict
}

// answered reads the objects this reconcile applied from the API server's answers, and
// anything else from the API server.
type answered struct {
	client.Reader
	answers map[string]*unstructured.Unstructured
}

func (a answered) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		if live, ok := a.answers[idOf(u.GroupVersionKind().GroupKind(), key.Namespace, key.Name)]; ok {
			live.DeepCopyInto(u)
			return nil
		}
	}
	return a.Reader.Get(ctx, key, obj, opts...)
}

// watched serves reads of fullObjectKinds from the watch cache when the cached copy is the
// object the release applied (same uid) at least as new as that apply (its generation, from
// the snapshot): an older copy would show the previous rollout as done. Anything else is
// read from the API server.
type watched struct {
	client.Reader
	watches *watcher
	applied map[string]liveMeta
}

func (w watched) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if u, ok := obj.(*unstructured.Unstructured); ok && fullObjectKinds[u.GroupVersionKind()] {
		gvk := u.GroupVersionKind()
		if was, ok := w.applied[idOf(gvk.GroupKind(), key.Namespace, key.Name)]; ok {
			if live, ok := w.watches.cached(ctx, gvk, key); ok && live.GetUID() == was.uid && live.GetGeneration() >= was.generation {
				if content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(live); err == nil {
					u.SetUnstructuredContent(content)
					u.SetGroupVersionKind(gvk)
					return nil
				}
			}
		}
	}
	return w.Reader.Get(ctx, key, obj, opts...)
}

// remember keeps the API server's answers for the objects at the same index in objects.
func (s *scope) remember(objects, live []*unstructured.Unstructured) {
	if s.answers == nil {
		s.answers = map[string]*unstructured.Unstructured{}
	}
	for i, o := range objects {
		if live[i] != nil {
			s.answers[objectID(o)] = live[i]
		}
	}
}

// reconcile runs the steps in order. Git is listed and the manifests built once per
// interval, on a spec change and on a reconcile request; every other reconcile (a watch
// event on an applied object, health polling) reuses that result: it checks for drift and
// the rollout's health without touching Git.
func (r *ImmutableReleaseReconciler) reconcile(ctx context.Context, obj *v1alpha1.ImmutableRelease, mem *memory) (ctrl.Result, error) {
	s, err := r.newScope(ctx, obj, mem)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := s.cluster.unreachable(); err != nil {
		// Nothing there can be read or changed: the probe queues the release once the
		// cluster answers again. What was applied there is left as it is.
		return ctrl.Result{}, unreachableFailure(s.cluster, err)
	}
	res, err := r.steps(ctx, s)
	if err == nil && s.cluster.remote() {
		err = r.checkRemotePrevent(s.cluster, obj)
	}
	return res, asUnreachable(s.cluster, err)
}

// steps are the reconcile's steps, in order.
func (r *ImmutableReleaseReconciler) steps(ctx context.Context, s *scope) (ctrl.Result, error) {
	obj := s.obj
	if err := r.prepareHealth(s); err != nil {
		return ctrl.Result{}, err
	}
	r.liftQuarantine(obj)
	if err := r.manualRollback(ctx, obj); err != nil {
		return ctrl.Result{}, err
	}
	if res, err := r.source(ctx, s); err != nil {
		return res, err
	}
	if err := r.verifyImages(ctx, s); err != nil {
		if isVerifying(err) {
			return ctrl.Result{RequeueAfter: verifyPoll}, err
		}
		// A refused image waits for a new commit, a signature or a policy: looked at again
		// at the interval. A registry that cannot be read is retried with backoff.
		return r.requeue(obj, 0), err
	}
	if err := r.applyOrCompare(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	if err := s.cluster.watches.ensure(s.objects); err != nil {
		return ctrl.Result{}, err
	}
	res, err := r.checkHealth(ctx, s)
	// A failure retried with backoff comes back sooner anyway; a stalled one keeps its result.
	var f *failure
	retry := r.postCommitStatuses(ctx, s)
	if again := r.recordDeployments(ctx, s); again > 0 && (retry == 0 || again < retry) {
		retry = again
	}
	if retry > 0 && (err == nil || errors.As(err, &f) && f.stalled) && (res.RequeueAfter == 0 || retry < res.RequeueAfter) {
		res.RequeueAfter = retry
	}
	return res, err
}

// newScope prepares what the steps share: the client and applier that act as the release.
func (r *ImmutableReleaseReconciler) newScope(ctx context.Context, obj *v1alpha1.ImmutableRelease, mem *memory) (*scope, error) {
	s := &scope{obj: obj, mem: mem}
	var err error
	if s.cluster, err = r.clusterOf(ctx, obj, mem); err != nil {
		return nil, err
	}
	obj.Status.Cluster = s.cluster.server
	if s.client, err = r.clientFor(s.cluster, obj); err != nil {
		return nil, err
	}
	mem.setIdentity(r.identity(obj))
	s.applier = apply.NewApplier(s.client, client.ObjectKeyFromObject(obj))
	// What the watch cache shows absent is not read before its dry run: a new release's
	// objects cost a dry run and an apply each.
	s.applier.Absent = func(o *unstructured.Unstructured) bool { return s.cluster.watches.absent(ctx, o) }
	return s, nil
}

// applyOrCompare applies a new spec or revision; for one applied already, it compares the
// live objects with it (handleDrift), unless the watch cache shows them unchanged.
func (r *ImmutableReleaseReconciler) applyOrCompare(ctx context.Context, s *scope) error {
	obj := s.obj
	settled := settled(obj)
	switch {
	case settled && !s.asked && r.unchangedSinceSnapshot(ctx, s):
		// Nobody changed the live objects and Git asks for the same ones (a commit that
		// did not touch this release's path): nothing to apply or compare.
		obj.Status.LastAppliedRevision = s.revision
		r.advanceSnapshot(s)
		return nil
	case !settled || obj.Status.LastAppliedRevision != s.revision:
		if err := r.checkDependencies(ctx, s); err != nil {
			return err
		}
		return r.apply(ctx, s)
	default:
		return r.handleDrift(ctx, s)
	}
}

// settled says whether this spec was applied already (the revision may still have to be).
// While a rollout runs, observedGeneration lags; lastAppliedGeneration says it instead, so
// that reconciles during a rollout do not apply the same objects again.
func settled(obj *v1alpha1.ImmutableRelease) bool {
	return obj.Status.Inventory != nil && (obj.Status.ObservedGeneration == obj.Generation || obj.Status.LastAppliedGeneration == obj.Generation)
}

// serviceAccount is the account of its namespace the release acts as ("" for the operator).
func (r *ImmutableReleaseReconciler) serviceAccount(obj *v1alpha1.ImmutableRelease) string {
	return r.Options.Tenancy.ServiceAccount(obj.Spec.ServiceAccountName)
}

// confined says whether the release is held to namespaced objects of its own namespace.
func (r *ImmutableReleaseReconciler) confined(obj *v1alpha1.ImmutableRelease) bool {
	return r.Options.Tenancy.Confined(obj.Namespace, r.serviceAccount(obj))
}

// checkServiceAccount stalls a release whose account does not exist: impersonating it
// would only have every request refused, one object after another.
//
// In a remote cluster, the account is looked for there, as the kubeconfig's user; a user
// that may not read ServiceAccounts leaves the question to the API server's answers.
func (r *ImmutableReleaseReconciler) checkServiceAccount(ctx context.Context, s *scope) error {
	obj := s.obj
	sa := r.serviceAccount(obj)
	if sa == "" {
		return nil
	}
	reader := r.APIReader
	where := fmt.Sprintf("namespace %q", obj.Namespace)
	if s.cluster.remote() {
		c, err := r.clientAs(s.cluster, "")
		if err != nil {
			return err
		}
		reader = c
		where += " of the cluster " + s.cluster.server
	}
	err := reader.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: sa}, &corev1.ServiceAccount{})
	switch {
	case s.cluster.remote() && apierrors.IsForbidden(err):
		return nil
	case apierrors.IsNotFound(err):
		how := "create it and grant it, with a RoleBinding, the rights to apply what the release holds"
		if obj.Spec.ServiceAccountName == "" {
			how += " (the manager's --default-service-account names it for every release without spec.serviceAccountName)"
		}
		return stall(v1alpha1.ServiceAccountNotFoundReason, fmt.Errorf("service account %q not found in %s: %s; nothing was applied", sa, where, how))
	case err != nil:
		return retry(v1alpha1.ApplyFailedReason, fmt.Errorf("reading service account %q: %w", sa, err))
	}
	return nil
}

// identity is the user the release acts as: its service account's, or "" for the operator.
func (r *ImmutableReleaseReconciler) identity(obj *v1alpha1.ImmutableRelease) string {
	if sa := r.serviceAccount(obj); sa != "" {
		return fmt.Sprintf("system:serviceaccount:%s:%s", obj.Namespace, sa)
	}
	return ""
}

// build loads and validates the manifests, and prepares them for apply. Nothing is applied
// unless all of them pass.
func (r *ImmutableReleaseReconciler) build(s *scope) error {
	obj := s.obj
	objects, err := manifest.BuildDecrypted(s.dir, obj.Spec.Path, r.Options.Limits, s.decryptor)
	if err != nil {
		var merr *manifest.Error
		if errors.As(err, &merr) {
			return stall(merr.Reason, fmt.Errorf("revision %s: %w", s.revision, err))
		}
		return retry(v1alpha1.InvalidManifestReason, err)
	}
	s.objects = manifest.Unstructured(objects)
	if err := s.applier.Prepare(s.objects, obj.Spec.TargetNamespace, obj.Namespace); err != nil {
		return retry(v1alpha1.ApplyFailedReason, err)
	}
	for _, o := range s.objects {
		o.SetLabels(r.Options.Shard.Stamp(obj.GetLabels(), o.GetLabels()))
	}
	if err := r.Options.Tenancy.Check(obj.Namespace, obj.Spec.TargetNamespace, r.confined(obj), s.objects); err != nil {
		return stall(tenancy.ReasonAccessDenied, fmt.Errorf("revision %s: %w; nothing was applied", s.revision, err))
	}
	if err := checkQuarantine(obj, s.revision, workloadImages(s.objects)); err != nil {
		return err
	}
	if obj.GetDriftMode() == v1alpha1.DriftPrevent {
		for _, o := range s.objects {
			l := o.GetLabels()
			l[admission.PreventLabel] = "true"
			o.SetLabels(l)
		}
	}
	return nil
}

// apply applies the objects, prunes what left Git, and records the revision.
func (r *ImmutableReleaseReconciler) apply(ctx context.Context, s *scope) error {
	obj := s.obj
	s.mem.setSnapshot(nil)
	cs, live, err := s.applier.Apply(ctx, s.objects)
	if err != nil {
		return retry(v1alpha1.ApplyFailedReason, fmt.Errorf("applying revision %s: %w", s.revision, err))
	}
	inventory := apply.Inventory(s.objects)
	if obj.Spec.Prune {
		pruned, err := s.applier.Prune(ctx, obj.Status.Inventory, inventory, r.mayDelete(obj))
		if err != nil {
			return retry(v1alpha1.ApplyFailedReason, fmt.Errorf("pruning: %w", err))
		}
		cs.Append(pruned.Entries)
	}

	r.startRolloutIfChanged(s, cs)
	images := withVerifications(workloadImages(s.objects), s.verdicts)
	newRevision := obj.Status.LastAppliedRevision != s.revision
	obj.Status.LastAppliedRevision = s.revision
	obj.Status.Inventory = inventory
	obj.Status.Images = images
	if newRevision || len(obj.Status.History) == 0 {
		recordRelease(obj, s.revision, s.commit, imagesChecksum(images))
		obj.Status.History[0].VerifiedImages = verifiedImages(images)
		r.settleProposal(ctx, s, images)
		rollback.RecordFromGit(obj, s.commit)
		rollback.QuarantineFailed(obj, s.commit.Hash, images)
		if !s.commit.Time.IsZero() {
			commitToApplied.Observe(time.Since(s.commit.Time).Seconds())
		}
	}
	if changes := summarize(cs); changes != "" || newRevision {
		r.event(obj, corev1.EventTypeNormal, "Applied", "Apply", fmt.Sprintf("Applied revision %s: %s", s.revision, orNothing(changes)))
	}
	if obj.GetDriftMode() == v1alpha1.DriftReport {
		conditions.MarkFalse(obj, v1alpha1.DriftedCondition, v1alpha1.NoDriftReason, "the live objects match revision %s", s.revision)
	} else {
		conditions.Delete(obj, v1alpha1.DriftedCondition)
	}
	s.remember(s.objects, live)
	r.recordApplied(s, live)
	obj.Status.LastAppliedGeneration = obj.Generation
	return nil
}

// recordApplied takes the snapshot from what the API server answered to the apply, when it
// answered for every object: the reconcile that the apply's own watch events bring then
// finds the objects unchanged instead of reading and dry-running each again.
func (r *ImmutableReleaseReconciler) recordApplied(s *scope, live []*unstructured.Unstructured) {
	var injected []v1alpha1.WorkloadImage
	for i, o := range s.objects {
		if live[i] == nil {
			return
		}
		injected = append(injected, injectedContainers(manifest.ObjectName(o), o, live[i])...)
	}
	s.obj.Status.InjectedContainers = injected
	r.recordSnapshot(s, live, nil)
}

// checkHealth judges the rollout of the applied objects, without waiting.
func (r *ImmutableReleaseReconciler) checkHealth(ctx context.Context, s *scope) (ctrl.Result, error) {
	obj := s.obj
	if !s.asked && conditions.IsTrue(obj, v1alpha1.HealthyCondition) && r.stillHealthy(ctx, s) {
		// Nothing changed since the verdict, status included.
		return r.requeue(obj, 0), nil
	}
	objects, err := apply.Objects(obj.Status.Inventory)
	if err != nil {
		return ctrl.Result{}, retry(v1alpha1.HealthCheckFailedReason, err)
	}
	var applied map[string]liveMeta
	if snap := s.mem.lastSnapshot(); snap != nil {
		applied = snap.objects
	}
	reader := answered{Reader: watched{Reader: s.client, watches: s.cluster.watches, applied: applied}, answers: s.answers}
	res, err := health.Check(ctx, reader, withHealthChecks(r.withStatus(ctx, s, objects), s.healthChecks), s.exprs)
	if err != nil {
		return ctrl.Result{}, retry(v1alpha1.HealthCheckFailedReason, err)
	}
	revision := obj.Status.LastAppliedRevision
	mismatch := recordRunning(obj, res.Running)
	switch {
	case res.Verdict == health.Healthy && len(mismatch) > 0:
		msg := fmt.Sprintf("revision %s rolled out, but pods run other digests than Git names: %s", revision, strings.Join(mismatch, "; "))
		conditions.MarkFalse(obj, v1alpha1.HealthyCondition, v1alpha1.DigestMismatchReason, "%s", msg)
		return r.requeue(obj, r.Options.HealthPollInterval), stall(v1alpha1.DigestMismatchReason, errors.New(msg))

	case res.Verdict == health.Healthy:
		if !conditions.IsTrue(obj, v1alpha1.HealthyCondition) {
			r.event(obj, corev1.EventTypeNormal, v1alpha1.HealthySucceededReason, "HealthCheck", fmt.Sprintf("Revision %s is healthy", revision))
		}
		conditions.MarkTrue(obj, v1alpha1.HealthyCondition, v1alpha1.HealthySucceededReason, "all objects of %s are healthy", revision)
		setResult(obj, revision, v1alpha1.ReleaseHealthy, "")
		r.recordHealthy(ctx, s)
		return r.requeue(obj, 0), nil

	case res.Verdict == health.Failed || rolloutTimedOut(obj):
		msg := fmt.Sprintf("revision %s failed its health check: %s", revision, res.Message())
		if res.Verdict != health.Failed {
			msg = fmt.Sprintf("revision %s did not become healthy within %s: %s", revision, obj.GetTimeout(), res.Message())
		}
		conditions.MarkFalse(obj, v1alpha1.HealthyCondition, v1alpha1.HealthCheckFailedReason, "%s", msg)
		setResult(obj, revision, v1alpha1.ReleaseFailed, msg)
		verdict, previous := time.Now(), obj.Status.LastRollback
		if err := r.carryOutRollback(ctx, obj, rollback.Request{Verdict: msg}); err != nil {
			return ctrl.Result{}, err
		}
		if last := obj.Status.LastRollback; last != nil && last != previous && last.FailedRevision == revision {
			rollbackDuration.Observe(time.Since(verdict).Seconds())
		}
		if url := rollback.ProposedIn(obj); url != "" {
			msg += "; pull request " + url + " proposes its revert"
		}
		if rollback.RevertedInGit(obj, revision) {
			// The revert is in Git: apply it now.
			return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, stall(v1alpha1.HealthCheckFailedReason, errors.New(msg))
		}
		if due, _ := r.gitCheckDue(obj, s.mem); due {
			// The rollback found the branch moved on (a conflict, a fix forward): the new
			// head is what to apply, now rather than at the interval.
			return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, stall(v1alpha1.HealthCheckFailedReason, errors.New(msg))
		}
		return r.requeue(obj, 0), stall(v1alpha1.HealthCheckFailedReason, errors.New(msg))

	default:
		conditions.MarkUnknown(obj, v1alpha1.HealthyCondition, v1alpha1.HealthCheckPendingReason, "rolling out %s: %s", revision, res.Message())
		// Status updates of the objects reconcile the release at once (kstatus reads
		// nothing else); the poll is only a fallback, and backs off as the rollout ages so
		// that a thousand stuck rollouts do not poll the API server. The timeout's verdict
		// is due on time.
		poll := r.Options.HealthPollInterval
		if c := conditions.Get(obj, v1alpha1.HealthyCondition); c != nil {
			poll = min(max(poll, time.Since(c.LastTransitionTime.Time)), obj.GetRequeueAfter())
			poll = min(poll, max(time.Until(c.LastTransitionTime.Add(obj.GetTimeout()))+100*time.Millisecond, 100*time.Millisecond))
		}
		return r.requeue(obj, poll), nil
	}
}

// withoutStatus are kinds that kstatus finds Current as soon as they exist: they have no
// status to wait for. A Service has one only as a LoadBalancer.
var withoutStatus = map[string]bool{
	"/ConfigMap": true, "/Secret": true, "/ServiceAccount": true, "/Service": true,
	"rbac.authorization.k8s.io/Role": true, "rbac.authorization.k8s.io/RoleBinding": true,
	"rbac.authorization.k8s.io/ClusterRole": true, "rbac.authorization.k8s.io/ClusterRoleBinding": true,
}

// withStatus leaves out of objects those whose health the metadata cache already shows:
// kinds without a status that exist and are not being deleted. The rest are read.
func (r *ImmutableReleaseReconciler) withStatus(ctx context.Context, s *scope, objects []*unstructured.Unstructured) []*unstructured.Unstructured {
	loadBalancers := map[string]bool{}
	for _, o := range s.objects {
		if t, _, _ := unstructured.NestedString(o.Object, "spec", "type"); o.GetKind() == "Service" && t == "LoadBalancer" {
			loadBalancers[objectID(o)] = true
		}
	}
	out := objects[:0:0]
	for _, o := range objects {
		gvk := o.GroupVersionKind()
		if withoutStatus[gvk.Group+"/"+gvk.Kind] && !loadBalancers[objectID(o)] {
			if m, ok := s.cluster.watches.cached(ctx, gvk, client.ObjectKeyFromObject(o)); ok && m.GetDeletionTimestamp() == nil {
				continue
			}
		}
		out = append(out, o)
	}
	return out
}

// recordRunning records in status.images the digests each container's pods run, and
// returns the containers whose pods run a digest other than the one Git names.
func recordRunning(obj *v1alpha1.ImmutableRelease, running map[string]map[string][]string) []string {
	var mismatch []string
	for i := range obj.Status.Images {
		im := &obj.Status.Images[i]
		im.Running = running[im.Workload][im.Container]
		_, want, _ := strings.Cut(im.Image, "@")
		for _, digest := range im.Running {
			if digest != want {
				mismatch = append(mismatch, fmt.Sprintf("%s container %s runs %s (Git: %s)", im.Workload, im.Container, digest, want))
			}
		}
	}
	return mismatch
}

// rolloutTimedOut says whether the rollout that began when Healthy turned pending has run
// past spec.timeout. A revision already judged failed stays failed until the next rollout.
func rolloutTimedOut(obj *v1alpha1.ImmutableRelease) bool {
	c := conditions.Get(obj, v1alpha1.HealthyCondition)
	if c == nil {
		return false
	}
	if c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.HealthCheckFailedReason {
		return true
	}
	return c.Status == metav1.ConditionUnknown && time.Since(c.LastTransitionTime.Time) > obj.GetTimeout()
}

// mayDelete says whether the release may prune o: an inventory entry it could not have
// applied (a status written by someone else) is left alone.
func (r *ImmutableReleaseReconciler) mayDelete(obj *v1alpha1.ImmutableRelease) func(*unstructured.Unstructured) bool {
	confined := r.confined(obj)
	return func(o *unstructured.Unstructured) bool {
		return r.Options.Tenancy.Refusal(obj.Namespace, confined, o) == ""
	}
}

// reconcileDelete prunes what the release applied, when prune is on, and lets it go. It
// never writes to Git.
//
// A remote release whose kubeconfig is gone or refused cannot prune: its objects are left
// where they are, with a Warning event, rather than holding the release (and its
// namespace) forever. A cluster that does not answer is retried.
func (r *ImmutableReleaseReconciler) reconcileDelete(ctx context.Context, obj *v1alpha1.ImmutableRelease, mem *memory) error {
	if obj.Spec.Prune && !obj.Spec.Suspend && obj.Status.Inventory != nil {
		target, err := r.clusterOf(ctx, obj, mem)
		var f *failure
		if errors.As(err, &f) && f.reason == v1alpha1.KubeConfigInvalidReason {
			// Gone (a namespace being deleted takes the Secret with it) or refused: waiting
			// would hold the release, and its namespace, for ever.
			r.event(obj, corev1.EventTypeWarning, f.reason, "Prune", fmt.Sprintf("The objects of the release were left in the remote cluster: %s", err))
			controllerutil.RemoveFinalizer(obj, v1alpha1.Finalizer)
			return nil
		}
		if err != nil {
			return err
		}
		c, err := r.clientFor(target, obj)
		if err != nil {
			return err
		}
		objects, err := apply.Objects(obj.Status.Inventory)
		if err != nil {
			return err
		}
		if _, err := apply.NewApplier(c, client.ObjectKeyFromObject(obj)).Delete(ctx, apply.Only(objects, r.mayDelete(obj))); err != nil {
			return asUnreachable(target, retry(v1alpha1.ApplyFailedReason, fmt.Errorf("pruning on deletion: %w", err)))
		}
	}
	controllerutil.RemoveFinalizer(obj, v1alpha1.Finalizer)
	return nil
}
