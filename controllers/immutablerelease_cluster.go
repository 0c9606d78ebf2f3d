package controllers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fluxcd/pkg/runtime/conditions"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/admission"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/kubeconfig"
)

// cluster is where a release's objects live: the cluster the operator runs in, or a remote
// one that spec.kubeConfig names. It holds what acting there takes: the configuration with
// that cluster's own credentials, its RESTMapper, one client per identity the releases act
// as, and the watches that bring changes there to the releases. The releases that target
// the same remote cluster with the same kubeconfig share one (one cache, one watch per
// kind); it is closed when the last of them leaves.
type cluster struct {
	// key identifies a remote cluster: the kubeconfig's hash and the namespace its watches
	// are held to; "" for the local cluster.
	key string
	// server is the remote API server's URL ("" for the local cluster), for status.cluster.
	server  string
	config  *rest.Config
	mapper  meta.RESTMapper
	watches *watcher
	// clients holds one uncached client per identity ("" for the kubeconfig's own user).
	clients sync.Map
	// stop ends a remote cluster's cache and its probe; nil for the local cluster.
	stop context.CancelFunc

	mu sync.Mutex
	// down is why the remote API server did not answer its last probe; nil while it does.
	down error
	// prevent wakes the cluster's Prevent policy keeper (keepRemotePolicy); preventFor is
	// the account of each release in drift mode Prevent there as the keeper last wrote it,
	// preventErr why it could not write the policy, operatorUser the kubeconfig's user.
	prevent      chan struct{}
	preventFor   map[types.NamespacedName]string
	preventErr   error
	operatorUser string
}

// unreachable is why the remote cluster did not answer its last probe (probeCluster), nil
// when it did or for the local cluster.
func (c *cluster) unreachable() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.down
}

// setDown records the answer of a probe (nil: the API server answered), and says whether
// it changed whether the cluster is reachable.
func (c *cluster) setDown(err error) (changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed = (c.down == nil) != (err == nil)
	c.down = err
	return changed
}

// remote says whether the cluster is another than the operator's own.
func (c *cluster) remote() bool { return c.key != "" }

// clusters holds the local cluster and every remote cluster a remembered release targets.
// The reconciler owns it; a remote cluster is made by the reconcile of the first release
// that targets it (clusterOf) and closed by closeUnused when no remembered release names it.
type clusters struct {
	mu     sync.Mutex
	local  *cluster
	remote map[string]*cluster
}

func (cs *clusters) get(key string) *cluster {
	if key == "" {
		return cs.local
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.remote[key]
}

// getOrAdd returns the remote cluster of key, made by make the first time.
func (cs *clusters) getOrAdd(key string, make func() (*cluster, error)) (*cluster, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if c, ok := cs.remote[key]; ok {
		return c, nil
	}
	c, err := make()
	if err != nil {
		return nil, err
	}
	if cs.remote == nil {
		cs.remote = map[string]*cluster{}
	}
	cs.remote[key] = c
	remoteClusters.Set(float64(len(cs.remote)))
	return c, nil
}

// closeUnused stops the watches of the remote clusters whose key used does not name, and
// forgets them; it returns how many it closed.
func (cs *clusters) closeUnused(used func(key string) bool) int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	closed := 0
	for key, c := range cs.remote {
		if !used(key) {
			c.stop()
			delete(cs.remote, key)
			closed++
		}
	}
	remoteClusters.Set(float64(len(cs.remote)))
	return closed
}

// clusterRef is what a release's memory keeps of its cluster: which one, and when its
// kubeconfig was last read.
type clusterRef struct {
	key        string
	readAt     time.Time
	generation int64
}

// clusterOf returns the cluster the release's objects live in. A remote cluster's
// kubeconfig is read again at the interval, after a failure and on a spec change, so that
// a rotated Secret is picked up without a restart; in between, the cluster the memory names
// serves.
func (r *ImmutableReleaseReconciler) clusterOf(ctx context.Context, obj *v1alpha1.ImmutableRelease, mem *memory) (*cluster, error) {
	if obj.Spec.KubeConfig == nil {
		r.useCluster(mem, clusterRef{generation: obj.Generation})
		return r.clusters.local, nil
	}
	ref := mem.cluster()
	fresh := time.Since(ref.readAt) < r.shortestInterval(obj) && ref.generation == obj.Generation && conditions.IsReady(obj) &&
		!askedFor(mem, r.look(obj))
	if c := r.clusters.get(ref.key); ref.key != "" && fresh && c != nil {
		return c, nil
	}
	cfg, err := r.readKubeConfig(ctx, obj)
	if err != nil {
		return nil, err
	}
	// A release held to its namespace watches only that namespace there: the kubeconfig's
	// user may have no rights beyond it, and the release nothing to find elsewhere.
	namespace := ""
	if r.confined(obj) {
		namespace = obj.Namespace
	}
	key := cfg.Hash + "/" + namespace
	c, err := r.clusters.getOrAdd(key, func() (*cluster, error) { return r.newRemoteCluster(key, cfg, namespace) })
	if err != nil {
		return nil, retry(v1alpha1.KubeConfigInvalidReason, fmt.Errorf("connecting to the cluster of spec.kubeConfig: %w", err))
	}
	r.useCluster(mem, clusterRef{key: key, readAt: time.Now(), generation: obj.Generation})
	return c, nil
}

// useCluster records the release's cluster in its memory. A release that moves to another
// cluster (or kubeconfig) forgets its snapshot, which was of the objects of the one before,
// and a remote cluster it leaves is closed when no other release targets it.
func (r *ImmutableReleaseReconciler) useCluster(mem *memory, ref clusterRef) {
	if was := mem.setCluster(ref); was != ref.key {
		mem.setSnapshot(nil)
		r.closeUnusedClusters()
	}
}

// closeUnusedClusters closes the remote clusters no remembered release targets.
func (r *ImmutableReleaseReconciler) closeUnusedClusters() {
	used := map[string]bool{}
	r.memories.each(func(m *memory) { used[m.cluster().key] = true })
	r.clusters.closeUnused(func(key string) bool { return used[key] })
}

// readKubeConfig reads and checks the kubeconfig of spec.kubeConfig, from the release's own
// namespace and never from the cache: Secrets are not kept in memory.
func (r *ImmutableReleaseReconciler) readKubeConfig(ctx context.Context, obj *v1alpha1.ImmutableRelease) (*kubeconfig.Config, error) {
	ref := obj.Spec.KubeConfig.SecretRef
	secret := &corev1.Secret{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: ref.Name}, secret)
	switch {
	case apierrors.IsNotFound(err):
		// Retried: the Secret may be applied after the release, as Flux's would.
		return nil, retry(v1alpha1.KubeConfigInvalidReason, fmt.Errorf("the Secret %q of spec.kubeConfig.secretRef is not in namespace %q; nothing was applied", ref.Name, obj.Namespace))
	case err != nil:
		return nil, retry(v1alpha1.KubeConfigInvalidReason, fmt.Errorf("reading the Secret %q of spec.kubeConfig.secretRef: %w", ref.Name, err))
	}
	cfg, err := kubeconfig.FromSecret(secret.Data, ref.Key, r.Options.KubeConfig)
	if err != nil {
		return nil, stall(v1alpha1.KubeConfigInvalidReason, fmt.Errorf("the Secret %q of spec.kubeConfig.secretRef: %w; nothing was applied", ref.Name, err))
	}
	return cfg, nil
}

// newRemoteCluster makes the cluster of a checked kubeconfig and starts its cache, which
// holds, as the local one does, only what the shard's releases applied (appliedCacheOptions),
// in namespace when it is not empty. Nothing is asked of the remote API server until a
// release reads or watches there: a cluster that cannot be reached costs its own releases,
// not the one that made it.
func (r *ImmutableReleaseReconciler) newRemoteCluster(key string, cfg *kubeconfig.Config, namespace string) (*cluster, error) {
	httpClient, err := rest.HTTPClientFor(cfg.REST)
	if err != nil {
		return nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg.REST, httpClient)
	if err != nil {
		return nil, err
	}
	opts, err := appliedCacheOptions(r.Options.Shard)
	if err != nil {
		return nil, err
	}
	opts.Scheme, opts.Mapper, opts.HTTPClient = r.Scheme, mapper, httpClient
	if namespace != "" {
		opts.DefaultNamespaces = map[string]cache.Config{namespace: {}}
	}
	watchCache, err := cache.New(cfg.REST, opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(r.clustersCtx)
	go func() {
		if err := watchCache.Start(ctx); err != nil {
			ctrl.Log.WithName("clusters").Error(err, "Stopped watching a remote cluster", "server", cfg.Server)
		}
	}()
	c := &cluster{key: key, server: strings.TrimSuffix(cfg.Server, "/"), config: cfg.REST, mapper: mapper, stop: cancel}
	c.watches = &watcher{controller: r.watches.controller, cache: watchCache, scheme: r.Scheme,
		handler: func(gvk schema.GroupVersionKind) handlerFunc { return r.appliedObjectHandler(key, gvk) }, watched: map[schema.GroupVersionKind]bool{}}
	c.prevent = make(chan struct{}, 1)
	go r.probeCluster(ctx, c, httpClient)
	go r.keepRemotePolicy(ctx, c)
	return c, nil
}

// Probe intervals: a remote cluster that answers is asked again every probeInterval, one
// that does not every probeDownInterval, so that its releases go on soon after it is back.
const (
	probeInterval     = 5 * time.Second
	probeDownInterval = time.Second
	probeTimeout      = 5 * time.Second
)

// probeCluster asks the remote API server whether it is there (GET /readyz), until ctx
// ends. A watch cache serves a cluster that went away as if nothing happened, so without a
// probe a release there would stay Ready on what it last saw; with it, a cluster that stops
// answering makes its releases ClusterUnreachable within probeInterval, and one that comes
// back reconciles them at once, which puts back what drifted meanwhile. One probe per
// cluster, not per release: a thousand releases on one cluster cost one request.
func (r *ImmutableReleaseReconciler) probeCluster(ctx context.Context, c *cluster, httpClient *http.Client) {
	for {
		if c.setDown(probe(ctx, httpClient, c.server)) {
			r.wakeReleasesOf(c.key)
		}
		wait := probeInterval
		if c.unreachable() != nil {
			wait = probeDownInterval
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// probe is nil when the API server at server answered /readyz with anything but a server
// error: an answer of 401 or 403 still says it is there.
func probe(ctx context.Context, httpClient *http.Client, server string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("GET /readyz answered %s", resp.Status)
	}
	return nil
}

// wakeReleasesOf queues every remembered release that targets the cluster of key.
func (r *ImmutableReleaseReconciler) wakeReleasesOf(key string) {
	r.memories.eachKey(func(name types.NamespacedName, m *memory) {
		if m.cluster().key != key {
			return
		}
		obj := &v1alpha1.ImmutableRelease{}
		obj.Namespace, obj.Name = name.Namespace, name.Name
		select {
		case r.fetched <- event.GenericEvent{Object: obj}:
		default:
		}
	})
}

// clientFor returns an uncached client of the cluster that acts as the release's service
// account, when it has one (see serviceAccount): in a remote cluster, the account of the
// same namespace and name there, as Flux impersonates it. Uncached: the operator must not
// keep informers on every kind it applies. One client per identity is kept, since building
// one per reconcile costs on the hot path.
func (r *ImmutableReleaseReconciler) clientFor(c *cluster, obj *v1alpha1.ImmutableRelease) (client.Client, error) {
	return r.clientAs(c, r.identity(obj))
}

// clientAs returns the cluster's client that acts as user ("": as the operator, or the
// kubeconfig's own user).
func (r *ImmutableReleaseReconciler) clientAs(c *cluster, user string) (client.Client, error) {
	if cl, ok := c.clients.Load(user); ok {
		return cl.(client.Client), nil
	}
	cfg := rest.CopyConfig(c.config)
	if user != "" {
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	}
	cl, err := client.New(cfg, client.Options{Scheme: r.Scheme, Mapper: c.mapper})
	if err != nil {
		return nil, fmt.Errorf("creating a client: %w", err)
	}
	actual, _ := c.clients.LoadOrStore(user, cl)
	return actual.(client.Client), nil
}

// sweepClients drops the clients of identities that no remembered release acts as.
func (cs *clusters) sweepClients(identities map[string]bool) {
	sweep := func(c *cluster) {
		c.clients.Range(func(k, _ any) bool {
			if !identities[k.(string)] {
				c.clients.Delete(k)
			}
			return true
		})
	}
	sweep(cs.local)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, c := range cs.remote {
		sweep(c)
	}
}

// unreachable says whether err is a remote cluster not answering, rather than answering
// no: a connection refused or reset, a timeout, a name that does not resolve, or a server
// that says it is unavailable.
func unreachable(err error) bool {
	var netErr net.Error
	var urlErr *url.Error
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return false
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, context.DeadlineExceeded):
		return true
	case errors.As(err, &dnsErr), errors.As(err, &netErr) && netErr.Timeout():
		return true
	case errors.As(err, &urlErr):
		return true
	case apierrors.IsServiceUnavailable(err), apierrors.IsTimeout(err), apierrors.IsServerTimeout(err):
		return true
	}
	return false
}

// asUnreachable turns a retried failure of a remote cluster that did not answer into
// ClusterUnreachable, naming the cluster.
func asUnreachable(c *cluster, err error) error {
	var f *failure
	if c == nil || !c.remote() || !errors.As(err, &f) || f.stalled || !unreachable(err) {
		return err
	}
	// Its releases wait for the probe to find it back.
	c.setDown(err)
	return unreachableFailure(c, err)
}

// unreachableFailure says that the release's remote cluster did not answer.
func unreachableFailure(c *cluster, err error) error {
	return retry(v1alpha1.ClusterUnreachableReason, fmt.Errorf("the cluster %s of spec.kubeConfig did not answer, retrying with backoff: %w", c.server, err))
}

// askedFor says whether a person asked for this reconcile or changed the spec (git.Source.Asked).
func askedFor(mem *memory, l git.Look) bool {
	src := mem.gitSource()
	return src.Asked(l)
}

// preventRecheck is how often the Prevent policy of a remote cluster is looked at without
// a release asking: a policy someone deleted there comes back within it.
const preventRecheck = 30 * time.Second

// checkRemotePrevent wakes the cluster's policy keeper when the release's part in the
// Prevent policy (its account, or none when not in Prevent mode) is not what the keeper
// last wrote, and returns why the keeper could not write the policy, for a release in
// Prevent mode: its images would not be guarded.
func (r *ImmutableReleaseReconciler) checkRemotePrevent(c *cluster, obj *v1alpha1.ImmutableRelease) error {
	key := client.ObjectKeyFromObject(obj)
	prevent := obj.DeletionTimestamp.IsZero() && obj.GetDriftMode() == v1alpha1.DriftPrevent
	c.mu.Lock()
	account, written := c.preventFor[key]
	err := c.preventErr
	c.mu.Unlock()
	if written != prevent || account != r.identity(obj) || (prevent && err != nil) {
		select {
		case c.prevent <- struct{}{}:
		default:
		}
	}
	if prevent && err != nil {
		return retry(v1alpha1.ApplyFailedReason, fmt.Errorf("the drift mode Prevent policy cannot be written in the cluster %s, so its images are not guarded: %w", c.server, err))
	}
	return nil
}

// keepRemotePolicy keeps the drift mode Prevent policy of a remote cluster
// (admission.Policy, Remote) while a release that targets it is in Prevent mode, and
// removes it when none is. It lives as long as the cluster: one keeper per cluster, woken
// by the releases there (checkRemotePrevent) and every preventRecheck. What it writes comes
// from the cached releases that target the cluster; it remembers only what it last wrote.
func (r *ImmutableReleaseReconciler) keepRemotePolicy(ctx context.Context, c *cluster) {
	tick := time.NewTicker(preventRecheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.prevent:
		case <-tick.C:
		}
		written, err := r.writeRemotePolicy(ctx, c)
		if err != nil && ctx.Err() == nil {
			ctrl.Log.WithName("clusters").Error(err, "Failed to write the drift mode Prevent policy", "server", c.server)
		}
		c.mu.Lock()
		if err == nil {
			c.preventFor = written
		}
		c.preventErr = err
		c.mu.Unlock()
		if err != nil {
			r.wakeReleasesOf(c.key)
		}
	}
}

// writeRemotePolicy makes the cluster's Prevent policy what its releases ask for, and
// returns the account of each release in Prevent mode it wrote.
func (r *ImmutableReleaseReconciler) writeRemotePolicy(ctx context.Context, c *cluster) (map[types.NamespacedName]string, error) {
	accounts := admission.Accounts{Remote: true, CrossNamespace: map[string]string{}}
	written := map[types.NamespacedName]string{}
	r.memories.eachKey(func(name types.NamespacedName, m *memory) {
		obj := &v1alpha1.ImmutableRelease{}
		if m.cluster().key != c.key || r.Get(ctx, name, obj) != nil || !obj.DeletionTimestamp.IsZero() || obj.GetDriftMode() != v1alpha1.DriftPrevent {
			return
		}
		written[name] = r.identity(obj)
		accounts.CrossNamespace[name.String()] = r.identity(obj)
	})
	cl, err := r.clientAs(c, "")
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	user, before := c.operatorUser, c.preventFor
	c.mu.Unlock()
	if user == "" && len(written) > 0 {
		if user, err = admission.WhoAmI(ctx, c.config); err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.operatorUser = user
		c.mu.Unlock()
	}
	accounts.Operator = user
	policy, bindings := admission.Policy(accounts)
	objects := []client.Object{policy}
	for _, b := range bindings {
		objects = append(objects, b)
	}
	for _, o := range objects {
		if len(written) == 0 {
			// Nothing to guard: remove what this keeper wrote before.
			if len(before) > 0 {
				if err := client.IgnoreNotFound(cl.Delete(ctx, o)); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := writeObject(ctx, cl, o); err != nil {
			return nil, err
		}
	}
	return written, nil
}

// writeObject creates the policy or binding desired, or makes the live one's spec and
// labels what desired says.
func writeObject(ctx context.Context, cl client.Client, desired client.Object) error {
	live := desired.DeepCopyObject().(client.Object)
	err := cl.Get(ctx, client.ObjectKeyFromObject(desired), live)
	if apierrors.IsNotFound(err) {
		return cl.Create(ctx, desired.DeepCopyObject().(client.Object))
	}
	if err != nil {
		return err
	}
	changed := false
	switch d := desired.(type) {
	case *admissionv1.ValidatingAdmissionPolicy:
		l := live.(*admissionv1.ValidatingAdmissionPolicy)
		changed = !equality.Semantic.DeepDerivative(d.Spec, l.Spec)
		l.Spec = d.Spec
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		l := live.(*admissionv1.ValidatingAdmissionPolicyBinding)
		changed = !equality.Semantic.DeepDerivative(d.Spec, l.Spec)
		l.Spec = d.Spec
	}
	if !changed && equality.Semantic.DeepEqual(live.GetLabels(), desired.GetLabels()) {
		return nil
	}
	live.SetLabels(desired.GetLabels())
	return cl.Update(ctx, live)
}
