// Command manager runs the ImmutableRelease operator.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/controllers"
	"github.com/immutable-release/operator/internal/admission"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/kubeconfig"
	"github.com/immutable-release/operator/internal/manifest"
	"github.com/immutable-release/operator/internal/notify"
	"github.com/immutable-release/operator/internal/receiver"
	"github.com/immutable-release/operator/internal/shard"
	"github.com/immutable-release/operator/internal/tenancy"
	"github.com/immutable-release/operator/internal/verify"
)

const controllerName = "immutable-release-controller"

// LeaseName is the leader election lease of a manager that reconciles the whole fleet; a
// shard's lease adds a digest of its --watch-label-selector.
const LeaseName = "immutable-release.release.immutable.dev"

// The metrics endpoint checks who asks (--metrics-secure):
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

func main() {
	var (
		metricsAddr   string
		probeAddr     string
		leaderElect   bool
		storagePath   string
		concurrent    int
		healthPolling time.Duration
		webhookAddr   string
		webhookLimits receiverLimits
		watchSelector string
		leaderNS      string
		apiQPS        float64
		apiBurst      int
		pprofAddr     string
		jitter        uint
		defaultSA     string
		unconfined    string
		gitTimeout    time.Duration
		secureMetrics bool
		remoteBases   bool
		fileURLs      bool
		eventsAddr    string
		attestKey     string
		clusterName   string
		gitLimits     = git.DefaultLimits
		kubeConfigs   = kubeconfig.Options{UserAgent: "immutable-release-operator"}
		imagePolicy   string
		trustedRoot   string
		publicRoot    bool
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "The address the metrics endpoint binds to; 0 disables it.")
	flag.BoolVar(&secureMetrics, "metrics-secure", true, "Serve metrics over HTTPS, to callers the API server authenticates and authorizes (get on the non-resource URL /metrics, as the metrics-reader ClusterRole grants). false serves plain HTTP to anyone who reaches the port: for local development only.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "The address the health and readiness probes bind to.")
	flag.BoolVar(&leaderElect, "leader-elect", true, "Elect a leader so that only one replica reconciles at a time.")
	flag.StringVar(&leaderNS, "leader-election-namespace", "", "The namespace of the leader election lease; defaults to the pod's own namespace in a cluster.")
	flag.StringVar(&storagePath, "storage-path", filepath.Join(os.TempDir(), "immutable-release"), "Where the shared Git object stores and checkouts are kept.")
	flag.IntVar(&concurrent, "concurrent", 4, "How many releases are reconciled at once.")
	flag.DurationVar(&healthPolling, "health-poll-interval", 10*time.Second, "How often a rollout in progress is looked at, at least, besides the status updates of its objects, which trigger a look at once; a rollout older than this is looked at as often as its age, at most once an interval.")
	flag.StringVar(&webhookAddr, "webhook-bind-address", ":9292", "The address the Git webhook receiver binds to: each Receiver of a namespace is served at its status.webhookPath (POST /hook/<sha256>). 0 disables it.")
	flag.Float64Var(&webhookLimits.perSource, "webhook-source-rate", 20, "Requests per second the webhook receiver takes from one client address, sustained (bursts of 5 times as many); more get 429. Behind a proxy every request comes from the proxy's address: limit there, or raise this. 0: no limit.")
	flag.Float64Var(&webhookLimits.perReceiver, "webhook-receiver-rate", 2, "Verified deliveries per second one Receiver may trigger, sustained (bursts of 5 times as many, at least 10); more get 429. 0: no limit.")
	flag.StringVar(&watchSelector, "watch-label-selector", "", "Reconcile only the releases matching this label selector (sharding across managers).")
	flag.Float64Var(&apiQPS, "kube-api-qps", 100, "Requests per second the manager may make to the API server, sustained.")
	flag.IntVar(&apiBurst, "kube-api-burst", 300, "Requests the manager may make to the API server in a burst above --kube-api-qps.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0", "The address Go's pprof profiles (/debug/pprof/) are served on, for diagnosing the manager; 0 disables it.")
	flag.UintVar(&jitter, "interval-jitter-percentage", 5, "Spread each release's interval by up to this percentage either way (as Flux's flag), so that releases created together do not all look at once every interval; below 100.")
	flag.StringVar(&defaultSA, "default-service-account", "", "The service account of its own namespace that a release without spec.serviceAccountName is impersonated as (as Flux's flag). Empty: such a release acts as the manager, confined to namespaced objects of its own namespace, without RBAC, admission, quota or token objects.")
	flag.StringVar(&unconfined, "unconfined-namespaces", "", "Comma-separated namespaces whose releases, acting as the manager without spec.serviceAccountName, may apply cluster-scoped objects and into other namespaces: for the platform's own releases only. No release may ever change the operator's own objects.")
	flag.DurationVar(&gitTimeout, "git-timeout", controllers.DefaultGitTimeout, "How long one Git operation (listing, fetch, push) of a release may take, unless its spec.git.timeout says otherwise.")
	flag.BoolVar(&remoteBases, "allow-remote-bases", false, "Let kustomizations load remote resources and bases (http(s) URLs and Git repositories) from the manager's network. Off: only files of the release's own repository are read, as Flux's --no-remote-bases.")
	flag.BoolVar(&fileURLs, "allow-file-urls", false, "Accept file:// Git URLs. For local development only: with it, any tenant's release can read any repository on the manager's disk, other tenants' stores included.")
	flag.StringVar(&eventsAddr, "events-addr", "", "The address events are also posted to as Flux's event payload (as Flux's flag), such as http://notification-controller.flux-system.svc.cluster.local./, so that a Flux notification-controller routes them with its Alerts and Providers. Empty: Kubernetes events only.")
	flag.Int64Var(&gitLimits.FetchBytes, "git-max-fetch-bytes", git.DefaultLimits.FetchBytes, "The most bytes one Git listing or fetch may receive; a larger answer fails its release with RepositoryTooLarge.")
	flag.Int64Var(&gitLimits.CheckoutBytes, "git-max-checkout-bytes", git.DefaultLimits.CheckoutBytes, "The most bytes one checked-out commit may write to the storage path; a larger tree fails its release with RepositoryTooLarge.")
	flag.Int64Var(&gitLimits.CheckoutFiles, "git-max-checkout-files", git.DefaultLimits.CheckoutFiles, "The most files one checked-out commit may write to the storage path.")
	flag.BoolVar(&kubeConfigs.AllowExec, "insecure-kubeconfig-exec", false, "Let the kubeconfigs of spec.kubeConfig run exec credential plugins on the manager's machine (as Flux's flag). Off: such a kubeconfig is refused with KubeConfigInvalid.")
	flag.BoolVar(&kubeConfigs.AllowInsecureTLS, "insecure-kubeconfig-tls", false, "Let the kubeconfigs of spec.kubeConfig skip TLS verification (as Flux's flag). Off: such a kubeconfig is refused with KubeConfigInvalid.")
	flag.StringVar(&attestKey, "attestation-key-secret", "", "The Secret, in the operator's own namespace, whose key private.pem holds the PEM private key (ECDSA P-256 or Ed25519) that signs the deployment records of releases with spec.attest; public.pem may hold its public key for auditors. Empty: such releases are told there is no key (Attested=False, AttestationKeyInvalid) and go on.")
	flag.StringVar(&clusterName, "cluster-name", "", "The name of this cluster in every deployment record (spec.attest). Empty: kube-system/<UID of the kube-system namespace>, which is the same for the life of the cluster.")
	flag.StringVar(&imagePolicy, "image-policy", "", "The platform's image policy file (YAML, mounted from a ConfigMap of the operator's namespace): the signatures and attestations every image of the releases of the namespaces each entry selects must carry, whatever the release's own spec.verify says. Empty: only spec.verify.")
	flag.StringVar(&trustedRoot, "sigstore-trusted-root", "", "A Sigstore trusted_root.json (Fulcio, Rekor and timestamp authorities of a private Sigstore) that keyless signatures are verified against. Empty: the public Sigstore instance's, fetched from its TUF repository (--sigstore-public-root).")
	flag.BoolVar(&publicRoot, "sigstore-public-root", true, "Without --sigstore-trusted-root, fetch the public Sigstore trusted root from its TUF repository, in the background; until it is fetched, or when it cannot be, only key-based signatures verify.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")
	if jitter >= 100 {
		log.Error(nil, "--interval-jitter-percentage must be below 100", "value", jitter)
		os.Exit(1)
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))

	fleetShard, err := shard.Parse(watchSelector)
	if err != nil {
		log.Error(err, "Invalid --watch-label-selector")
		os.Exit(1)
	}
	cacheOpts, err := controllers.CacheOptions(fleetShard)
	if err != nil {
		log.Error(err, "Failed to scope the cache")
		os.Exit(1)
	}
	cfg := ctrl.GetConfigOrDie()
	// client-go's default, 20 requests per second, throttles a fleet of hundreds of releases
	// long before the API server is busy.
	cfg.QPS, cfg.Burst = float32(apiQPS), apiBurst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  cacheOpts,
		Metrics:                metricsOptions(metricsAddr, secureMetrics),
		HealthProbeBindAddress: probeAddr,
		PprofBindAddress:       pprofAddr,
		LeaderElection:         leaderElect,
		// One lease per shard: the replicas of a shard elect one leader, and shards do not
		// stand by for each other.
		LeaderElectionID:        fleetShard.LeaseName(LeaseName),
		LeaderElectionNamespace: leaderNS,
	})
	if err != nil {
		log.Error(err, "Failed to create the manager")
		os.Exit(1)
	}
	if err := os.MkdirAll(storagePath, 0o700); err != nil {
		log.Error(err, "Failed to create the storage path", "path", storagePath)
		os.Exit(1)
	}

	operatorUser, err := admission.WhoAmI(context.Background(), cfg)
	if err != nil {
		log.Error(err, "Failed to learn the operator's own user name")
		os.Exit(1)
	}
	log.Info("Acting as", "user", operatorUser)
	tenancyPolicy := tenancy.Policy{
		DefaultServiceAccount: defaultSA,
		UnconfinedNamespaces:  splitList(unconfined),
		Operator:              tenancy.Operator{Namespace: tenancy.NamespaceOf(operatorUser), NamePrefix: "immutable-release-", Group: v1alpha1.GroupVersion.Group},
	}
	log.Info("Releases confined", "defaultServiceAccount", defaultSA, "unconfinedNamespaces", tenancyPolicy.UnconfinedNamespaces, "operatorNamespace", tenancyPolicy.Operator.Namespace)

	if clusterName == "" {
		if clusterName, err = defaultClusterName(cfg, scheme); err != nil {
			log.Error(err, "Failed to name the cluster for deployment records; set --cluster-name")
			os.Exit(1)
		}
	}
	log.Info("Deployment records", "cluster", clusterName, "keySecret", attestKey)

	limits := manifest.DefaultLimits
	limits.AllowRemoteBases = remoteBases
	gitCache := git.NewCache(storagePath)
	gitLimits.Timeout = gitTimeout
	gitCache.Limits = gitLimits
	gitCache.AllowFileURLs = fileURLs
	ctrlmetrics.Registry.MustRegister(controllers.GitMetrics(gitCache))
	recorder, err := notify.NewRecorder(mgr.GetEventRecorder(controllerName), scheme, eventsAddr, controllerName, ctrl.Log.WithName("events"))
	if err == nil {
		err = mgr.Add(recorder)
	}
	if err != nil {
		log.Error(err, "Failed to set up the event recorder")
		os.Exit(1)
	}
	verification, err := verificationOptions(imagePolicy, trustedRoot, publicRoot, filepath.Join(storagePath, "sigstore-tuf"))
	if err != nil {
		log.Error(err, "Failed to set up image verification")
		os.Exit(1)
	}
	r := &controllers.ImmutableReleaseReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Config:    cfg,
		Scheme:    scheme,
		Recorder:  recorder,
		Git:       gitCache,
		Options: controllers.Options{
			Limits:                  limits,
			HealthPollInterval:      healthPolling,
			MaxConcurrentReconciles: concurrent,
			IntervalJitter:          float64(jitter) / 100,
			Tenancy:                 tenancyPolicy,
			GitTimeout:              gitTimeout,
			Shard:                   fleetShard,
			KubeConfig:              kubeConfigs,
			Attestation:             controllers.AttestationOptions{KeySecret: attestKey, ClusterName: clusterName},
			Verification:            verification,
		},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		log.Error(err, "Failed to set up the controller")
		os.Exit(1)
	}
	prevent := &controllers.PreventPolicyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), OperatorUser: operatorUser, Tenancy: tenancyPolicy}
	if err := prevent.SetupWithManager(mgr); err != nil {
		log.Error(err, "Failed to set up the drift mode Prevent policy controller")
		os.Exit(1)
	}
	if webhookAddr != "0" {
		server, err := setupReceiver(mgr, r, webhookAddr, webhookLimits)
		if err == nil {
			err = mgr.AddReadyzCheck("receiver", server.Ready)
		}
		if err != nil {
			log.Error(err, "Failed to set up the webhook receiver")
			os.Exit(1)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "Failed to set up the health check")
		os.Exit(1)
	}
	// Ready once the informers have synced: before that, releases are not yet known.
	if err := mgr.AddReadyzCheck("readyz", func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("the informers have not synced yet")
		}
		return nil
	}); err != nil {
		log.Error(err, "Failed to set up the ready check")
		os.Exit(1)
	}

	log.Info("Starting the manager")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "The manager stopped with an error")
		os.Exit(1)
	}
}

// receiverLimits are the webhook receiver's rate limits, per second.
type receiverLimits struct{ perSource, perReceiver float64 }

// setupReceiver runs the Receiver reconciler and the webhook server on every replica: the
// reconciler registers each Receiver's path and token, the server answers from them.
func setupReceiver(mgr ctrl.Manager, notifier receiver.Notifier, addr string, limits receiverLimits) (*receiver.Server, error) {
	registry := receiver.NewRegistry()
	receivers := &controllers.ReceiverReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Registry: registry}
	if err := receivers.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	burst := func(rate float64, least int) int { return max(int(5*rate), least) }
	handler := &receiver.Handler{
		Endpoints:  registry,
		Notifier:   notifier,
		Sources:    receiver.NewLimiter(limits.perSource, burst(limits.perSource, 1)),
		Receivers:  receiver.NewLimiter(limits.perReceiver, burst(limits.perReceiver, 10)),
		Deliveries: receiver.NewDeliveries(receiver.DeliveryWindow),
		Log:        ctrl.Log.WithName("receiver"),
	}
	server := &receiver.Server{Addr: addr, Handler: handler, Prime: func(ctx context.Context) error {
		return receivers.Prime(ctx, mgr.GetCache())
	}}
	return server, mgr.Add(server)
}

// defaultClusterName names the cluster by the UID of its kube-system namespace: unique to
// the cluster, and kept for its life, unlike the API server's address (in a pod, the same
// 10.96.0.1 in every cluster).
func defaultClusterName(cfg *rest.Config, scheme *runtime.Scheme) (string, error) {
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: "kube-system"}, ns); err != nil {
		return "", fmt.Errorf("reading namespace kube-system: %w", err)
	}
	return "kube-system/" + string(ns.UID), nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// metricsOptions serves metrics as kubebuilder scaffolds it: over HTTPS with a self-signed
// certificate, each request's bearer token checked with a TokenReview and its right to get
// /metrics with a SubjectAccessReview.
func metricsOptions(addr string, secure bool) metricsserver.Options {
	opts := metricsserver.Options{BindAddress: addr, SecureServing: secure}
	if secure {
		opts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return opts
}

// verificationOptions loads the admin's image policy and the Sigstore trust material; the
// public root is fetched in the background.
func verificationOptions(policyPath, trustedRoot string, publicRoot bool, tufCache string) (controllers.VerificationOptions, error) {
	var opts controllers.VerificationOptions
	if policyPath != "" {
		p, err := verify.LoadPlatformPolicy(policyPath)
		if err != nil {
			return opts, err
		}
		opts.Platform = p
		ctrl.Log.Info("Image policy loaded", "path", policyPath, "entries", len(p.Policies))
	}
	v := &verify.Verifier{}
	switch {
	case trustedRoot != "":
		tr, err := verify.LoadTrustedRoot(trustedRoot)
		if err != nil {
			return opts, err
		}
		v.Trusted = tr
	case publicRoot:
		v.RequireSCT = true
		go func() {
			tm, err := verify.PublicTrustedRoot(tufCache)
			if err != nil {
				ctrl.Log.Error(err, "Keyless signatures cannot be verified; only keys can")
				return
			}
			v.SetTrusted(tm)
			ctrl.Log.Info("Public Sigstore trusted root fetched")
		}()
	}
	opts.Cache = &verify.Cache{Verifier: v}
	return opts, nil
}
