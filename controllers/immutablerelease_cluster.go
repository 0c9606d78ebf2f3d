package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
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
	mapper  apimeta.RESTMapper
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
	// policyWritten is what the keeper last wrote of the policy and binding, by name.
	policyWritten map[string]writtenAs
	// retired is set when no release targets the cluster any more (closeUnused).
	retired bool
}

// isRetired says whether the cluster was closed because no release targets it.
func (c *cluster) isRetired() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.retired
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

// acquire returns the remote cluster of key, made by make the first time, and records in
// mem that the release uses it, under the registry's lock: closeUnused, which decides under
// the same lock, never closes a cluster between its handing out and its use being recorded.
// It returns the key of the cluster mem named before.
func (cs *clusters) acquire(key string, mem *memory, ref clusterRef, make func() (*cluster, error)) (*cluster, string, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c, ok := cs.remote[key]
	if !ok {
		var err error
		if c, err = make(); err != nil {
			return nil, "", err
		}
		if cs.remote == nil {
			cs.remote = map[string]*cluster{}
		}
		cs.remote[key] = c
		remoteClusters.Set(float64(len(cs.remote)))
	}
	return c, mem.setCluster(ref), nil
}

// closeUnused stops the remote clusters that no key in used names, and forgets them; used
// is asked under the registry's lock. It returns how many it closed.
func (cs *clusters) closeUnused(used func() map[string]bool) int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if len(cs.remote) == 0 {
		return 0
	}
	keep := used()
	closed := 0
	for key, c := range cs.remote {
		if !keep[key] {
			c.mu.Lock()
			c.retired = true
			c.mu.Unlock()
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
	// Read again after a failure (Ready=False), not all through a rollout (Ready=Unknown).
	fresh := time.Since(ref.readAt) < r.shortestInterval(obj) && ref.generation == obj.Generation && !conditions.IsFalse(obj, meta.ReadyCondition) &&
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
	ref = clusterRef{key: key, readAt: time.Now(), generation: obj.Generation}
	c, was, err := r.clusters.acquire(key, mem, ref, func() (*cluster, error) { return r.newRemoteCluster(key, cfg, namespace) })
	if err != nil {
		return nil, retry(v1alpha1.KubeConfigInvalidReason, fmt.Errorf("connecting to the cluster of spec.kubeConfig: %w", err))
	}
	r.movedFrom(mem, was, key)
	return c, nil
}

// useCluster records the release's cluster in its memory (see movedFrom).
func (r *ImmutableReleaseReconciler) useCluster(mem *memory, ref clusterRef) {
	r.movedFrom(mem, mem.setCluster(ref), ref.key)
}

// movedFrom: a release that moved to another cluster (or kubeconfig) forgets its snapshot,
// which was of the objects of the one before, and a remote cluster it left is closed when
// no other release targets it.
func (r *ImmutableReleaseReconciler) movedFrom(mem *memory, was, key string) {
	if was != key {
		mem.setSnapshot(nil)
		r.closeUnusedClusters()
	}
}

// closeUnusedClusters closes the remote clusters no remembered release targets.
func (r *ImmutableReleaseReconciler) closeUnusedClusters() {
	r.clusters.closeUnused(func() map[string]bool {
		used := map[string]bool{}
		r.memories.each(func(m *memory) { used[m.cluster().key] = true })
		return used
	})
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
	// The watches are long requests: the timeout of each request would cut them, and the
	// cache's lists are the informers' to wait for, not a worker's.
	watchConfig := rest.CopyConfig(cfg.REST)
	watchConfig.Timeout = 0
	watchClient, err := rest.HTTPClientFor(watchConfig)
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
	opts.Scheme, opts.Mapper, opts.HTTPClient = r.Scheme, mapper, watchClient
	if namespace != "" {
		opts.DefaultNamespaces = map[string]cache.Config{namespace: {}}
	}
	watchCache, err := cache.New(watchConfig, opts)
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
		handler: func(gvk schema.GroupVersionKind) handlerFunc { return r.appliedObjectHandler(key, gvk) }, watched: map[schema.GroupVersionKind]bool{}, ctx: ctx}
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
		case r.wakes <- event.GenericEvent{Object: obj}:
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

// unreachable says whether err is a remote cluster's API server not answering, as its own
// transport marked it (kubeconfig.UnreachableError): a Git host or registry that does not
// answer is never taken for the cluster, nor is a certificate the cluster's does not match.
func unreachable(err error) bool {
	var u *kubeconfig.UnreachableError
	return errors.As(err, &u)
}

// asUnreachable turns a retried failure of a remote cluster that did not answer into
// ClusterUnreachable, naming the cluster. Whether the cluster is down for its other
// releases is the probe's to say.
func asUnreachable(c *cluster, err error) error {
	var f *failure
	if c == nil || !c.remote() || !errors.As(err, &f) || f.stalled || !unreachable(err) {
		return err
	}
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
// removes it when none is, or when the cluster is retired because no release targets it
// any more (not when the manager stops: the policy guards on while it is away). One keeper
// per cluster, woken by the releases there (checkRemotePrevent) and every preventRecheck;
// what it writes comes from the cached releases that target the cluster, and it remembers
// only the resourceVersions it last wrote. A failure is retried with backoff, and wakes the
// Prevent releases only when it is a new one.
func (r *ImmutableReleaseReconciler) keepRemotePolicy(ctx context.Context, c *cluster) {
	tick := time.NewTicker(preventRecheck)
	defer tick.Stop()
	log := ctrl.Log.WithName("clusters").WithValues("server", c.server)
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			if c.isRetired() {
				cleanup, cancel := context.WithTimeout(context.Background(), probeTimeout)
				if err := r.removeRemotePolicy(cleanup, c); err != nil {
					log.Error(err, "Failed to remove the drift mode Prevent policy of a cluster no release targets")
				}
				cancel()
			}
			return
		case <-c.prevent:
		case <-tick.C:
		}
		written, err := r.writeRemotePolicy(ctx, c)
		if ctx.Err() != nil {
			continue
		}
		c.mu.Lock()
		was := c.preventErr
		if err == nil {
			c.preventFor = written
		}
		c.preventErr = err
		c.mu.Unlock()
		if err == nil {
			backoff = 0
			continue
		}
		if was == nil || was.Error() != err.Error() {
			log.Error(err, "Failed to write the drift mode Prevent policy")
			r.wakeReleasesOf(c.key)
		}
		backoff = min(max(2*backoff, time.Second), time.Minute)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
}

// remotePolicy is the cluster's Prevent policy and binding for accounts (the accounts of
// its releases in Prevent mode, by "namespace/name").
func (c *cluster) remotePolicy(operator string, accounts map[string]string) []client.Object {
	sum := sha256.Sum256([]byte(c.key))
	policy, bindings := admission.Policy(admission.Accounts{Operator: operator, Remote: hex.EncodeToString(sum[:5]), CrossNamespace: accounts})
	objects := []client.Object{policy}
	for _, b := range bindings {
		objects = append(objects, b)
	}
	return objects
}

// writeRemotePolicy makes the cluster's Prevent policy what its releases ask for, and
// returns the account of each release in Prevent mode it wrote.
func (r *ImmutableReleaseReconciler) writeRemotePolicy(ctx context.Context, c *cluster) (map[types.NamespacedName]string, error) {
	accounts := map[string]string{}
	written := map[types.NamespacedName]string{}
	r.memories.eachKey(func(name types.NamespacedName, m *memory) {
		obj := &v1alpha1.ImmutableRelease{}
		if m.cluster().key != c.key || r.Get(ctx, name, obj) != nil || !obj.DeletionTimestamp.IsZero() || obj.GetDriftMode() != v1alpha1.DriftPrevent {
			return
		}
		written[name] = r.identity(obj)
		accounts[name.String()] = r.identity(obj)
	})
	if len(written) == 0 {
		return written, r.removeRemotePolicy(ctx, c)
	}
	cl, err := r.clientAs(c, "")
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	user := c.operatorUser
	c.mu.Unlock()
	if user == "" {
		if user, err = admission.WhoAmI(ctx, c.config); err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.operatorUser = user
		c.mu.Unlock()
	}
	for _, o := range c.remotePolicy(user, accounts) {
		if err := c.writeObject(ctx, cl, o); err != nil {
			return nil, err
		}
	}
	return written, nil
}

// removeRemotePolicy deletes the cluster's Prevent policy and binding, if this keeper
// wrote them.
func (r *ImmutableReleaseReconciler) removeRemotePolicy(ctx context.Context, c *cluster) error {
	c.mu.Lock()
	wrote := len(c.policyWritten) > 0
	c.mu.Unlock()
	if !wrote {
		return nil
	}
	cl, err := r.clientAs(c, "")
	if err != nil {
		return err
	}
	for _, o := range c.remotePolicy("", nil) {
		if err := client.IgnoreNotFound(cl.Delete(ctx, o)); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.policyWritten = nil
	c.mu.Unlock()
	return nil
}

// writeObject makes the live policy or binding what desired is (replacePolicyObject),
// unless it is at the resourceVersion this keeper last wrote it with that same content.
func (c *cluster) writeObject(ctx context.Context, cl client.Client, desired client.Object) error {
	want := asJSON(desired)
	c.mu.Lock()
	was, ok := c.policyWritten[desired.GetName()]
	c.mu.Unlock()
	if ok && was.desired == want {
		live := desired.DeepCopyObject().(client.Object)
		if err := cl.Get(ctx, client.ObjectKeyFromObject(desired), live); err == nil && live.GetResourceVersion() == was.resourceVersion {
			return nil
		}
	}
	resourceVersion, err := replacePolicyObject(ctx, cl, cl, desired)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.policyWritten == nil {
		c.policyWritten = map[string]writtenAs{}
	}
	c.policyWritten[desired.GetName()] = writtenAs{desired: want, resourceVersion: resourceVersion}
	c.mu.Unlock()
	return nil
}
