package v1alpha1

import (
	"time"

	"github.com/fluxcd/pkg/apis/kustomize"
	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// ImmutableReleaseKind is the kind of the ImmutableRelease API.
	ImmutableReleaseKind = "ImmutableRelease"

	// Finalizer lets the operator prune what a release applied before the release goes away.
	Finalizer = "release.immutable.dev/finalizer"

	// DefaultTimeout is how long a rollout may take to become healthy when spec.timeout is unset.
	DefaultTimeout = 5 * time.Minute

	// MaxHistory bounds status.history: the newest entries are kept.
	MaxHistory = 10
)

// ImmutableReleaseSpec is the desired state: a path in a Git repository whose manifests name
// every container image by digest.
type ImmutableReleaseSpec struct {
	// git is the repository and the reference to follow.
	// +required
	Git GitSource `json:"git"`

	// path is the folder inside the repository that holds the manifests, relative to the
	// repository root. Every YAML file under it is applied, or the output of kustomize when it
	// holds a kustomization.yaml. It may not leave the repository. Defaults to the root.
	// +optional
	Path string `json:"path,omitempty"`

	// interval is how often the remote is checked for a new revision and the cluster is
	// brought back to what Git says; at least 1s.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:default="1m"
	// +optional
	Interval metav1.Duration `json:"interval,omitempty"`

	// timeout is how long the objects of a newly applied revision may take to become healthy
	// (kstatus Current) before the revision is judged failed. Defaults to 5m.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// healthChecks names objects that the release does not apply but whose health its
	// rollouts wait for, as Flux's Kustomization spec.healthChecks: a HelmRelease, a
	// Deployment a controller makes. They are judged as the applied objects are (kstatus,
	// or healthCheckExprs for their kind) within spec.timeout; one that does not exist is in
	// progress. Without namespace, the release's own; another namespace, or a
	// cluster-scoped object, only where the release may apply there (AccessDenied).
	// +kubebuilder:validation:MaxItems=32
	// +optional
	HealthChecks []meta.NamespacedObjectKindReference `json:"healthChecks,omitempty"`

	// healthCheckExprs judge custom resources by CEL expressions, in the schema of Flux's
	// Kustomization spec.healthCheckExprs: for each apiVersion and kind (every kind of the
	// group when kind is empty), current, and optionally inProgress and failed, evaluated on
	// the object in that order; the first true decides, none true is in progress. A failed
	// custom resource fails the rollout, and the revision is rolled back as for a failed
	// Deployment. An expression that does not compile stalls the release
	// (InvalidHealthCheckExpr); each evaluation may cost at most 100000 CEL cost units.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(e, size(e.current) > 0)",message="healthCheckExprs[].current is required: the expression that says the object is healthy"
	// +kubebuilder:validation:XValidation:rule="self.all(e, size(e.current) <= 1024 && (!has(e.inProgress) || size(e.inProgress) <= 1024) && (!has(e.failed) || size(e.failed) <= 1024))",message="a healthCheckExprs expression may be at most 1024 characters long"
	// +optional
	HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs,omitempty"`

	// suspend stops all fetching and applying while true. Objects in the cluster stay as they
	// are. Setting it back to false catches up with Git at once.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// prune deletes the objects that this release applied before and that are no longer in
	// Git, and everything it applied when the release itself is deleted. Only objects in the
	// release's inventory are ever deleted.
	// +optional
	Prune bool `json:"prune,omitempty"`

	// targetNamespace sets the namespace of every namespaced object. When empty, objects
	// without a namespace go to the release's own namespace. Another namespace than the
	// release's own needs a serviceAccountName whose RBAC reaches it (or a namespace the
	// manager runs unconfined).
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
	// +optional
	TargetNamespace string `json:"targetNamespace,omitempty"`

	// dependsOn names releases that must be Ready at their current revision before this one
	// applies a new revision or spec, as Flux's Kustomization spec.dependsOn: CRDs and
	// controllers first, then the apps that use them. Until then the release is
	// Ready=False with reason DependencyNotReady, and what it applied before is kept as it
	// is (drift is still corrected). A cycle is refused (DependencyCycle). A dependency in
	// another namespace is allowed only to releases of the manager's --unconfined-namespaces.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	DependsOn []meta.NamespacedObjectReference `json:"dependsOn,omitempty"`

	// decryption decrypts the SOPS-encrypted files of the revision as they are built, as
	// Flux's Kustomization spec.decryption: in memory, never written to disk. A file that does
	// not decrypt refuses the revision (DecryptionFailed); without decryption, an encrypted
	// file refuses it too, as ciphertext is never applied.
	// +optional
	Decryption *Decryption `json:"decryption,omitempty"`

	// verify, when set, verifies who built every pinned image of a revision before anything
	// of it is applied, in the shape of Flux's OCIRepository spec.verify: each image needs a
	// Sigstore signature (a bundle attached as an OCI referrer, or cosign's older
	// sha256-<digest>.sig tag) by one of the public keys of secretRef or one of the keyless
	// identities of matchOIDCIdentity, and every attestation asked for. One image that does
	// not verify refuses the whole revision (ImageVerificationFailed); a registry that cannot
	// be read is retried (VerificationUnavailable). The platform admin's policy for the
	// namespace applies as well, with or without this field: a release can only add to it.
	// +optional
	Verify *VerifySpec `json:"verify,omitempty"`

	// registrySecretRef names a Secret in the release's namespace of type
	// kubernetes.io/dockerconfigjson (its .dockerconfigjson entry) with the credentials the
	// signatures are read from the registries with. Without it, registries are read
	// anonymously.
	// +optional
	RegistrySecretRef *meta.LocalObjectReference `json:"registrySecretRef,omitempty"`

	// serviceAccountName is a ServiceAccount in the release's namespace. When set, every call
	// the operator makes to apply, prune and read the objects is made as that account
	// (impersonation), so the release can only do what its RBAC allows. Without it, the
	// release applies as the manager's --default-service-account, or, when that is unset,
	// as the operator confined to namespaced objects of its own namespace.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// drift says what happens when a live object stops matching Git.
	// +optional
	Drift *DriftSpec `json:"drift,omitempty"`

	// rollback says what happens when a revision fails its health check.
	// +optional
	Rollback *RollbackSpec `json:"rollback,omitempty"`

	// commitStatus, when set, posts a commit status on the Git host for each revision the
	// release applies: pending while it rolls out, success once healthy, failure when its
	// rollout fails, linking the revert commit or pull request. A status that cannot be
	// posted is retried on a later reconcile; it never holds the release back.
	// +optional
	CommitStatus *CommitStatusSpec `json:"commitStatus,omitempty"`

	// kubeConfig, when set, delivers the release to another cluster, as Flux's
	// Kustomization spec.kubeConfig: every object is applied, watched, judged and pruned
	// there, with the credentials of the kubeconfig, and spec.serviceAccountName is
	// impersonated in that cluster. Drift there is corrected from that cluster's own watch
	// events, and a failed rollout there is reverted in Git under spec.path only. Exec
	// plugins, insecure TLS and references to files are refused (KubeConfigInvalid) unless
	// the manager allows the first two (--insecure-kubeconfig-exec, --insecure-kubeconfig-tls);
	// a cluster that cannot be reached is ClusterUnreachable, retried with backoff. A rotated
	// Secret is read again at the next interval, or at once after a failure.
	// +optional
	KubeConfig *KubeConfigReference `json:"kubeConfig,omitempty"`

	// attest, when set, records each revision that becomes healthy as a signed in-toto
	// statement (its image digests and manifests' checksum; the release, cluster, commit,
	// author, image signers, and when it was applied, became healthy, and was later
	// replaced or rolled back), stored as a Git note on the applied commit and pushed with
	// the credentials of spec.git.secretRef. The signing key is the operator's own (the
	// manager's --attestation-key-secret), never a tenant's. A record that cannot be
	// written is retried on a later reconcile; it never holds the release back.
	// +optional
	Attest *AttestSpec `json:"attest,omitempty"`
}

// KubeConfigReference names the kubeconfig of a remote cluster.
type KubeConfigReference struct {
	// secretRef names a Secret of the release's namespace and the key that holds the
	// kubeconfig; without key, Flux's: value, else value.yaml.
	// +required
	SecretRef meta.SecretKeyReference `json:"secretRef"`
}

// DefaultNotesRef is the notes reference of spec.attest when notesRef is unset.
const DefaultNotesRef = "refs/notes/immutable-release"

// AttestSpec says where the deployment records go.
type AttestSpec struct {
	// notesRef is the Git notes reference the records are written to, under refs/notes/.
	// Defaults to refs/notes/immutable-release; git notes --ref=immutable-release show
	// <commit> shows a record.
	// +kubebuilder:validation:MaxLength=200
	// +kubebuilder:validation:Pattern="^refs/notes/[A-Za-z0-9_-]+([./][A-Za-z0-9_-]+)*$"
	// +kubebuilder:validation:XValidation:rule="!self.contains('..') && !self.contains('/.') && !self.endsWith('.lock')",message="notesRef must be a reference name Git accepts under refs/notes/: no '..', no component starting with '.', no '.lock' ending"
	// +optional
	NotesRef string `json:"notesRef,omitempty"`
}

// VerifySpec says who must have signed, and attested to, every image of the release.
// +kubebuilder:validation:XValidation:rule="has(self.secretRef) || (has(self.matchOIDCIdentity) && size(self.matchOIDCIdentity) > 0)",message="verify needs secretRef (public keys) or matchOIDCIdentity (keyless identities)"
type VerifySpec struct {
	// provider is the signature format: cosign (Sigstore).
	// +kubebuilder:validation:Enum=cosign
	// +kubebuilder:default=cosign
	// +optional
	Provider string `json:"provider,omitempty"`

	// secretRef names a Secret in the release's namespace holding PEM public keys, each under
	// an entry whose name ends in .pub (as cosign.pub from cosign generate-key-pair). A
	// signature by any of them is accepted.
	// +optional
	SecretRef *meta.LocalObjectReference `json:"secretRef,omitempty"`

	// matchOIDCIdentity lists the keyless signers accepted: regular expressions on the OIDC
	// issuer and the subject of the Fulcio certificate, each matching the whole value. A
	// signature by any of them is accepted.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	MatchOIDCIdentity []OIDCIdentityMatch `json:"matchOIDCIdentity,omitempty"`

	// attestations lists in-toto attestations every image must carry, signed by a signer
	// that secretRef or matchOIDCIdentity accepts: SLSA provenance from the expected builder
	// and source repository.
	// +kubebuilder:validation:MaxItems=8
	// +optional
	Attestations []AttestationMatch `json:"attestations,omitempty"`
}

// OIDCIdentityMatch is a keyless signer accepted.
type OIDCIdentityMatch struct {
	// issuer is a regular expression on the OIDC issuer, such as
	// ^https://token.actions.githubusercontent.com$.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +required
	Issuer string `json:"issuer"`

	// subject is a regular expression on the certificate's subject (its SAN), such as
	// ^https://github.com/acme/.*$.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +required
	Subject string `json:"subject"`
}

// AttestationMatch is an attestation every image must carry.
type AttestationMatch struct {
	// predicateType is the in-toto predicate type, such as https://slsa.dev/provenance/v1.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +required
	PredicateType string `json:"predicateType"`

	// builderID is a regular expression the provenance's builder ID must match (SLSA v1
	// runDetails.builder.id, v0.2 builder.id).
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	BuilderID string `json:"builderID,omitempty"`

	// sourceRepository is a regular expression the provenance's source repository must
	// match (its first Git dependency, git+ and @ref removed).
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	SourceRepository string `json:"sourceRepository,omitempty"`
}

// ImageVerification is what verifying an image's signatures found.
type ImageVerification struct {
	// issuer is the OIDC issuer of a verified keyless signature.
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// subject is the certificate subject of a verified keyless signature.
	// +optional
	Subject string `json:"subject,omitempty"`
	// keyFingerprint names the public key of a verified key-based signature:
	// sha256:<hex of its PKIX DER form>.
	// +optional
	KeyFingerprint string `json:"keyFingerprint,omitempty"`
	// logIndex is the signature's transparency-log (Rekor) index.
	// +optional
	LogIndex *int64 `json:"logIndex,omitempty"`
	// sourceCommit is the commit the image's provenance says it was built from.
	// +optional
	SourceCommit string `json:"sourceCommit,omitempty"`
	// verifiedAt is when the verification was made.
	VerifiedAt metav1.Time `json:"verifiedAt"`
}

// VerifiedImage is the verification of one digest of a revision, in its history entry.
type VerifiedImage struct {
	// digest is sha256:<hex>.
	Digest string `json:"digest"`

	ImageVerification `json:",inline"`
}

// MaxVerifiedImages bounds a history entry's verifiedImages.
const MaxVerifiedImages = 32

// RollbackMode is how a failed revision is rolled back.
// +kubebuilder:validation:Enum=Revert;PullRequest;Disabled
type RollbackMode string

const (
	// RollbackRevert pushes a commit to the branch that reverts, under spec.path, the
	// commits since the last healthy revision; the operator then applies it.
	RollbackRevert RollbackMode = "Revert"
	// RollbackPullRequest pushes the same revert commit to a new branch and opens a pull
	// request for it. The cluster stays on what the branch says until the branch changes
	// (the pull request is merged, or someone fixes forward).
	RollbackPullRequest RollbackMode = "PullRequest"
	// RollbackDisabled leaves a failed revision in place.
	RollbackDisabled RollbackMode = "Disabled"
)

// RollbackSpec configures rollback by revert.
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'PullRequest' || has(self.pullRequest)",message="rollback.pullRequest is required when rollback.mode is PullRequest"
type RollbackSpec struct {
	// mode is Revert (the default), PullRequest or Disabled.
	// +kubebuilder:default=Revert
	// +optional
	Mode RollbackMode `json:"mode,omitempty"`

	// pullRequest says where to open the pull request in PullRequest mode.
	// +optional
	PullRequest *PullRequestSpec `json:"pullRequest,omitempty"`

	// author of revert commits. Defaults to ImmutableRelease <immutable-release@noreply.local>.
	// +optional
	Author *CommitAuthor `json:"author,omitempty"`

	// signingKeySecretRef names a Secret in the release's namespace that holds, under the key
	// git.asc, an ASCII-armored OpenPGP private key, and under passphrase the passphrase that
	// unlocks it, if any. Revert commits are then signed with it, as git commit -S does. When
	// the Secret is missing or its key cannot sign, nothing is pushed.
	// +optional
	SigningKeySecretRef *meta.LocalObjectReference `json:"signingKeySecretRef,omitempty"`

	// quarantine, true by default, refuses a later revision that brings back a digest of a
	// reverted revision for the same container, until a person lifts it with the
	// release.immutable.dev/unquarantine annotation.
	// +optional
	Quarantine *bool `json:"quarantine,omitempty"`
}

// GitProvider is the forge whose API opens pull requests.
// +kubebuilder:validation:Enum=github;gitlab;gitea
type GitProvider string

const (
	// GitProviderGitHub is GitHub or GitHub Enterprise Server.
	GitProviderGitHub GitProvider = "github"
	// GitProviderGitLab is GitLab (merge requests).
	GitProviderGitLab GitProvider = "gitlab"
	// GitProviderGitea is Gitea or Forgejo.
	GitProviderGitea GitProvider = "gitea"
)

// PullRequestSpec configures the pull requests of PullRequest mode.
type PullRequestSpec struct {
	// provider is github, gitlab or gitea.
	// +required
	Provider GitProvider `json:"provider"`

	// secretRef names a Secret in the release's namespace whose key token holds an API
	// token that may push branches and open pull requests (GitHub: contents and pull
	// requests write; GitLab: api scope; Gitea: write:repository).
	// +required
	SecretRef meta.LocalObjectReference `json:"secretRef"`

	// baseBranch is the branch the pull request asks to merge into. Defaults to
	// spec.git.ref.branch.
	// +kubebuilder:validation:MinLength=1
	// +optional
	BaseBranch string `json:"baseBranch,omitempty"`

	// apiURL is the provider's API root, for example https://ghe.example.com/api/v3. By
	// default it is derived from spec.git.url: https://api.github.com for github.com,
	// <scheme>://<host>/api/v3 for another GitHub host, <scheme>://<host>/api/v4 for
	// GitLab and <scheme>://<host>/api/v1 for Gitea (https for ssh:// URLs).
	// +kubebuilder:validation:Pattern="^https?://.*$"
	// +optional
	APIURL string `json:"apiURL,omitempty"`
}

// CommitStatusSpec says where to post commit statuses, with the same providers, API roots
// and tokens as spec.rollback.pullRequest.
type CommitStatusSpec struct {
	// provider is github, gitlab or gitea.
	// +required
	Provider GitProvider `json:"provider"`

	// secretRef names a Secret in the release's namespace whose key token holds an API
	// token that may post commit statuses (GitHub: commit statuses write; GitLab: api scope;
	// Gitea: write:repository). It may be the Secret of spec.rollback.pullRequest.
	// +required
	SecretRef meta.LocalObjectReference `json:"secretRef"`

	// apiURL is the provider's API root; by default derived from spec.git.url as for
	// spec.rollback.pullRequest.apiURL.
	// +kubebuilder:validation:Pattern="^https?://.*$"
	// +optional
	APIURL string `json:"apiURL,omitempty"`
}

// CommitState is the state of a commit status on the Git host.
type CommitState string

const (
	// CommitStatePending is a revision rolling out.
	CommitStatePending CommitState = "pending"
	// CommitStateSuccess is a revision that became healthy.
	CommitStateSuccess CommitState = "success"
	// CommitStateFailure is a revision whose rollout failed.
	CommitStateFailure CommitState = "failure"
)

// RollbackToAnnotation asks for a manual rollback: the commits after the named revision (a
// commit SHA, or "previous" for the last healthy revision before the applied one) that
// changed spec.path are reverted in Git. Its value is "<revision>@<token>"; a new token asks
// again (the reconcile-request pattern).
const RollbackToAnnotation = "release.immutable.dev/rollback-to"

// UnquarantineAnnotation lifts the quarantine of the digest it names, once per value
// (status.lastHandledUnquarantine): a digest quarantined again later stays quarantined
// until the annotation names it anew.
const UnquarantineAnnotation = "release.immutable.dev/unquarantine"

// PushedAtAnnotation is set by a replica of the operator that received a verified push for
// a release it does not reconcile (another shard's, or while it is on standby): the time of
// the push, RFC 3339. The replica that reconciles the release lists Git again, once, with a
// listing made after that time; nothing else is looked at again, unlike a reconcile request.
const PushedAtAnnotation = "release.immutable.dev/pushed-at"

// QuarantinedDigest is a digest that ran in a reverted revision.
type QuarantinedDigest struct {
	// workload is Kind/namespace/name.
	Workload string `json:"workload"`
	// container is the container name.
	Container string `json:"container"`
	// digest is sha256:<hex>.
	Digest string `json:"digest"`
	// failedRevision is the revision in which it failed.
	FailedRevision string `json:"failedRevision"`
	// time is when it was quarantined.
	Time metav1.Time `json:"time"`
}

// CommitAuthor names the author of the commits the operator makes.
type CommitAuthor struct {
	// name of the author.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// email of the author.
	// +kubebuilder:validation:MinLength=1
	Email string `json:"email"`
}

// Rollback describes the last rollback.
type Rollback struct {
	// failedRevision is the revision that failed its health check.
	FailedRevision string `json:"failedRevision"`
	// revertCommit is the commit that reverted it: pushed to the branch, or in
	// PullRequest mode to the pull request's branch until the pull request is merged.
	// +optional
	RevertCommit string `json:"revertCommit,omitempty"`
	// pullRequestURL is the pull request that proposes the revert, in PullRequest mode.
	// +optional
	PullRequestURL string `json:"pullRequestURL,omitempty"`
	// revertedCommits are the commits reverted, newest first.
	// +optional
	RevertedCommits []string `json:"revertedCommits,omitempty"`
	// reason is the health check's verdict.
	// +optional
	Reason string `json:"reason,omitempty"`
	// time is when the revert was pushed or found.
	Time metav1.Time `json:"time"`
	// failedImages are the images of the failed revision.
	// +optional
	FailedImages []WorkloadImage `json:"failedImages,omitempty"`
}

// RevertConflict is a revert that could not be made without guessing, and the branch head it
// was tried on: it is tried again only once the head moves.
type RevertConflict struct {
	// failedRevision is the revision whose revert conflicted.
	FailedRevision string `json:"failedRevision"`
	// head is the commit the branch pointed at when the revert was tried.
	Head string `json:"head"`
}

// DriftMode is what the operator does about drift.
// +kubebuilder:validation:Enum=Correct;Report;Prevent
type DriftMode string

const (
	// DriftCorrect puts back at once any change to a field the release manages, and recreates
	// deleted objects.
	DriftCorrect DriftMode = "Correct"
	// DriftReport changes nothing and reports drift in the Drifted condition.
	DriftReport DriftMode = "Report"
	// DriftPrevent has the API server refuse changes to the images of the release's
	// workloads (a ValidatingAdmissionPolicy), and corrects whatever else drifts.
	DriftPrevent DriftMode = "Prevent"
)

// Decryption says how the encrypted files of a release are decrypted.
type Decryption struct {
	// provider is the decryption engine: sops, with age keys.
	// +kubebuilder:validation:Enum=sops
	// +required
	Provider string `json:"provider"`

	// secretRef names a Secret in the release's namespace holding age private keys, each
	// under an entry whose name ends in .agekey (as Flux's sops-age Secret). Required: keys
	// are never taken from the manager's environment.
	// +optional
	SecretRef *meta.LocalObjectReference `json:"secretRef,omitempty"`
}

// DriftSpec configures drift handling.
type DriftSpec struct {
	// mode is Correct (the default), Report or Prevent.
	// +kubebuilder:default=Correct
	// +optional
	Mode DriftMode `json:"mode,omitempty"`
}

// GitSource says where the manifests come from.
type GitSource struct {
	// url is the repository address: http://, https:// or ssh://; file:// only when the
	// manager runs with --allow-file-urls (local development). Credentials never go in the
	// URL: they belong in secretRef.
	// +kubebuilder:validation:Pattern="^(http|https|ssh|file)://.*$"
	// +required
	URL string `json:"url"`

	// ref is the branch, tag or commit to follow.
	// +required
	Ref GitReference `json:"ref"`

	// secretRef names a Secret in the release's namespace with the credentials, with the same
	// keys as a Flux GitRepository: username and password (or a token as password) for
	// HTTP(S); identity (a private key), known_hosts and optionally password (the key's
	// passphrase) for SSH. The SSH host key is always checked against known_hosts.
	// +optional
	SecretRef *meta.LocalObjectReference `json:"secretRef,omitempty"`

	// timeout bounds each Git operation (listing, fetch, push), as Flux's
	// GitRepository timeout: a server that does not answer in time fails the operation
	// with GitOperationFailed instead of holding a worker. Defaults to, and is at most, the
	// manager's --git-timeout (60s).
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m))+$"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// GitReference names exactly one of a branch, a tag or a commit.
// +kubebuilder:validation:XValidation:rule="(has(self.branch) ? 1 : 0) + (has(self.tag) ? 1 : 0) + (has(self.commit) ? 1 : 0) == 1",message="exactly one of branch, tag or commit must be set"
type GitReference struct {
	// branch to follow; its head is applied.
	// +kubebuilder:validation:MinLength=1
	// +optional
	Branch string `json:"branch,omitempty"`

	// tag to apply.
	// +kubebuilder:validation:MinLength=1
	// +optional
	Tag string `json:"tag,omitempty"`

	// commit is a full 40-character SHA-1 to apply.
	// +kubebuilder:validation:Pattern="^[0-9a-f]{40}$"
	// +optional
	Commit string `json:"commit,omitempty"`
}

// ReleaseResult is the outcome of one revision in the history.
// +kubebuilder:validation:Enum=Applied;Healthy;Failed
type ReleaseResult string

const (
	// ReleaseApplied: the revision is applied and its health is not judged yet.
	ReleaseApplied ReleaseResult = "Applied"
	// ReleaseHealthy: every object of the revision became Current within the timeout.
	ReleaseHealthy ReleaseResult = "Healthy"
	// ReleaseFailed: the revision did not become healthy within the timeout.
	ReleaseFailed ReleaseResult = "Failed"
)

// ImmutableReleaseStatus is the observed state.
type ImmutableReleaseStatus struct {
	meta.ReconcileRequestStatus `json:",inline"`

	// observedGeneration is the generation of the spec last reconciled to Ready.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, Reconciling, Stalled (kstatus) and Healthy.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// lastAppliedGeneration is the generation of the spec whose objects were last applied.
	// observedGeneration follows once the rollout is judged; until then this says the
	// spec is applied already, so that it is not applied again.
	// +optional
	LastAppliedGeneration int64 `json:"lastAppliedGeneration,omitempty"`

	// lastAttemptedRevision is the revision last fetched, in the form <ref>@sha1:<commit>.
	// +optional
	LastAttemptedRevision string `json:"lastAttemptedRevision,omitempty"`

	// lastAppliedRevision is the revision last applied to the cluster.
	// +optional
	LastAppliedRevision string `json:"lastAppliedRevision,omitempty"`

	// cluster is the API server the release's objects are in: the server of the kubeconfig
	// of spec.kubeConfig; empty for the cluster the operator runs in.
	// +optional
	Cluster string `json:"cluster,omitempty"`

	// images lists every container of every workload of the last applied revision with the
	// pinned image it names.
	// +optional
	Images []WorkloadImage `json:"images,omitempty"`

	// inventory lists the objects applied by the last applied revision; pruning only ever
	// deletes objects listed here.
	// +optional
	Inventory *ResourceInventory `json:"inventory,omitempty"`

	// history holds the newest revisions applied, newest first, at most 10.
	// +optional
	History []ReleaseRecord `json:"history,omitempty"`

	// injectedContainers lists containers that run in the release's workloads but are not
	// in Git, such as sidecars added by a mutating webhook. They are reported, not removed.
	// +optional
	InjectedContainers []WorkloadImage `json:"injectedContainers,omitempty"`

	// quarantine lists digests of reverted revisions that are refused until lifted.
	// +optional
	Quarantine []QuarantinedDigest `json:"quarantine,omitempty"`

	// lastHandledRollbackTo is the last rollback-to annotation value acted on.
	// +optional
	LastHandledRollbackTo string `json:"lastHandledRollbackTo,omitempty"`

	// lastHandledUnquarantine is the last unquarantine annotation value acted on.
	// +optional
	LastHandledUnquarantine string `json:"lastHandledUnquarantine,omitempty"`

	// revertConflict is the last revert that conflicted: it is tried again only once the
	// branch head moves. Cleared when a revert is pushed or found, or another revision is
	// applied.
	// +optional
	RevertConflict *RevertConflict `json:"revertConflict,omitempty"`

	// lastRollback describes the last revert pushed for a failed revision.
	// +optional
	LastRollback *Rollback `json:"lastRollback,omitempty"`

	// driftCorrections counts the live changes the operator put back since the release was
	// created.
	// +optional
	DriftCorrections int64 `json:"driftCorrections,omitempty"`
}

// WorkloadImage is one container of a workload and the image it runs.
type WorkloadImage struct {
	// workload is Kind/namespace/name, or Kind/name for cluster-scoped kinds.
	Workload string `json:"workload"`
	// container is the container name; init and ephemeral containers are included.
	Container string `json:"container"`
	// image is the pinned reference from Git: name[:tag]@sha256:<digest>.
	Image string `json:"image"`
	// running lists the digests this container's pods really run, read from the pods'
	// status.containerStatuses[].imageID; more than one during a rollout.
	// +optional
	Running []string `json:"running,omitempty"`
	// verification is what verifying the image's signature found, when spec.verify or the
	// platform's policy asks for it.
	// +optional
	Verification *ImageVerification `json:"verification,omitempty"`
}

// ResourceInventory is the set of objects a release applied.
type ResourceInventory struct {
	// entries identify each object.
	// +optional
	Entries []ResourceRef `json:"entries"`
}

// ResourceRef identifies an applied object, in the form Flux's inventories use.
type ResourceRef struct {
	// id is <namespace>_<name>_<group>_<kind>.
	ID string `json:"id"`
	// v is the object's API version.
	Version string `json:"v"`
}

// ReleaseRecord is one revision the release applied.
type ReleaseRecord struct {
	// revision is <ref>@sha1:<commit>.
	Revision string `json:"revision"`
	// subject is the first line of the commit message.
	// +optional
	Subject string `json:"subject,omitempty"`
	// author is the commit author, "Name <email>".
	// +optional
	Author string `json:"author,omitempty"`
	// commitTime is when the commit was made.
	// +optional
	CommitTime *metav1.Time `json:"commitTime,omitempty"`
	// appliedAt is when the revision was first applied.
	AppliedAt metav1.Time `json:"appliedAt"`
	// imagesChecksum is sha256:<hex> over the sorted image set, so that two revisions that
	// run the same images can be recognised.
	// +optional
	ImagesChecksum string `json:"imagesChecksum,omitempty"`
	// result is Applied, then Healthy or Failed.
	Result ReleaseResult `json:"result"`
	// message says why a revision failed.
	// +optional
	Message string `json:"message,omitempty"`
	// revertedBy is the commit that reverted this revision after it failed.
	// +optional
	RevertedBy string `json:"revertedBy,omitempty"`
	// verifiedImages are the verifications of the revision's distinct digests, at most 32.
	// +optional
	VerifiedImages []VerifiedImage `json:"verifiedImages,omitempty"`
	// commitStatus is the state of the commit status last posted for this revision on the
	// Git host (spec.commitStatus): each state is posted once.
	// +optional
	CommitStatus CommitState `json:"commitStatus,omitempty"`
	// attestation is the deployment record of this revision in Git (spec.attest).
	// +optional
	Attestation *AttestationRecord `json:"attestation,omitempty"`
}

// AttestationState is what the deployment record of a revision in Git says.
// +kubebuilder:validation:Enum=Healthy;Replaced;RolledBack
type AttestationState string

const (
	// AttestationHealthy: the statement of the healthy rollout is in Git.
	AttestationHealthy AttestationState = "Healthy"
	// AttestationReplaced: re-signed with replacedAt, once a later revision was applied.
	AttestationReplaced AttestationState = "Replaced"
	// AttestationRolledBack: re-signed with rolledBackAt, once a revert of it was applied.
	AttestationRolledBack AttestationState = "RolledBack"
)

// AttestationRecord is where the deployment record of a revision stands.
type AttestationRecord struct {
	// state is what the record last pushed says; empty until one is pushed.
	// +optional
	State AttestationState `json:"state,omitempty"`
	// notesCommit is the commit of the notes reference that holds it.
	// +optional
	NotesCommit string `json:"notesCommit,omitempty"`
	// message says why the last attempt failed, or why there was nothing to update.
	// +optional
	Message string `json:"message,omitempty"`
}

// ImmutableRelease applies a path of a Git repository to the cluster, refusing any container
// image that is not pinned by digest.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=imr
// +kubebuilder:printcolumn:name="Ready",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].status",description=""
// +kubebuilder:printcolumn:name="Status",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].message",description=""
// +kubebuilder:printcolumn:name="Revision",type="string",JSONPath=".status.lastAppliedRevision",description=""
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp",description=""
type ImmutableRelease struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ImmutableReleaseSpec   `json:"spec,omitempty"`
	Status ImmutableReleaseStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (in *ImmutableRelease) GetConditions() []metav1.Condition { return in.Status.Conditions }

// SetConditions sets the status conditions.
func (in *ImmutableRelease) SetConditions(c []metav1.Condition) { in.Status.Conditions = c }

// MinInterval is the shortest interval a release is looked at by: an interval of a
// millisecond would keep a worker and the tenant's Git server busy without end.
const MinInterval = time.Second

// GetRequeueAfter returns how long to wait before the next periodic reconcile: spec.interval,
// at least MinInterval.
func (in *ImmutableRelease) GetRequeueAfter() time.Duration {
	if in.Spec.Interval.Duration <= 0 {
		return in.Spec.Interval.Duration
	}
	return max(in.Spec.Interval.Duration, MinInterval)
}

// GetDriftMode returns spec.drift.mode or Correct.
func (in *ImmutableRelease) GetDriftMode() DriftMode {
	if in.Spec.Drift != nil && in.Spec.Drift.Mode != "" {
		return in.Spec.Drift.Mode
	}
	return DriftCorrect
}

// GetRollbackMode returns spec.rollback.mode or Revert.
func (in *ImmutableRelease) GetRollbackMode() RollbackMode {
	if in.Spec.Rollback != nil && in.Spec.Rollback.Mode != "" {
		return in.Spec.Rollback.Mode
	}
	return RollbackRevert
}

// GetPullRequestBaseBranch returns spec.rollback.pullRequest.baseBranch or the branch the
// release follows.
func (in *ImmutableRelease) GetPullRequestBaseBranch() string {
	if r := in.Spec.Rollback; r != nil && r.PullRequest != nil && r.PullRequest.BaseBranch != "" {
		return r.PullRequest.BaseBranch
	}
	return in.Spec.Git.Ref.Branch
}

// QuarantineEnabled says whether digests of reverted revisions are quarantined.
func (in *ImmutableRelease) QuarantineEnabled() bool {
	return in.Spec.Rollback == nil || in.Spec.Rollback.Quarantine == nil || *in.Spec.Rollback.Quarantine
}

// GetGitTimeout returns spec.git.timeout, at most limit (the manager's --git-timeout), or
// limit when it is not set: a tenant may shorten its own Git operations, never make one
// hold the manager's resources longer than the platform admin allows.
func (in *ImmutableRelease) GetGitTimeout(limit time.Duration) time.Duration {
	if in.Spec.Git.Timeout != nil && in.Spec.Git.Timeout.Duration > 0 {
		return min(in.Spec.Git.Timeout.Duration, limit)
	}
	return limit
}

// GetTimeout returns spec.timeout or DefaultTimeout.
func (in *ImmutableRelease) GetTimeout() time.Duration {
	if in.Spec.Timeout != nil && in.Spec.Timeout.Duration > 0 {
		return in.Spec.Timeout.Duration
	}
	return DefaultTimeout
}

// GetNotesRef returns spec.attest.notesRef or DefaultNotesRef.
func (in *ImmutableRelease) GetNotesRef() string {
	if in.Spec.Attest != nil && in.Spec.Attest.NotesRef != "" {
		return in.Spec.Attest.NotesRef
	}
	return DefaultNotesRef
}

// GetLastHandledReconcileRequest returns the last reconcile-request token handled.
func (in *ImmutableRelease) GetLastHandledReconcileRequest() string {
	return in.Status.GetLastHandledReconcileRequest()
}

// ImmutableReleaseList is a list of ImmutableRelease.
// +kubebuilder:object:root=true
type ImmutableReleaseList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImmutableRelease `json:"items"`
}
