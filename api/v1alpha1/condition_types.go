package v1alpha1

// Condition types, beside the kstatus triad meta.ReadyCondition, meta.ReconcilingCondition and
// meta.StalledCondition from github.com/fluxcd/pkg/apis/meta.
const (
	// HealthyCondition reports whether every object of the last applied revision is Current
	// according to kstatus: Deployments rolled out and Available, Jobs complete, and so on.
	HealthyCondition string = "Healthy"

	// RolledBackCondition reports the last rollback: True once a revert of a failed
	// revision is in Git, False when it could not be made, Unknown while a pull request
	// proposes it (PullRequest mode).
	RolledBackCondition string = "RolledBack"

	// RollbackPendingCondition is True in PullRequest mode while a pull request proposes
	// the revert of a failed revision and the branch has not changed under spec.path
	// since. It turns False when the branch changes: the pull request was merged, or
	// someone fixed forward.
	RollbackPendingCondition string = "RollbackPending"

	// DriftedCondition is True while a live object differs from Git in Report mode.
	DriftedCondition string = "Drifted"
)

// Reasons a condition can carry. Each is CamelCase; the condition's message says what to do.
const (
	// ReconciliationSucceededReason: the revision is applied and every object is healthy.
	ReconciliationSucceededReason string = "ReconciliationSucceeded"

	// ProgressingReason: a new revision is being fetched, applied or rolled out.
	ProgressingReason string = "Progressing"

	// ProgressingWithRetryReason: the last attempt failed and the operator retries with backoff.
	ProgressingWithRetryReason string = "ProgressingWithRetry"

	// SuspendedReason: spec.suspend is true; nothing is fetched or applied.
	SuspendedReason string = "Suspended"

	// GitOperationFailedReason: listing, fetching or reading the Git repository failed
	// (unreachable URL, wrong credentials, unknown branch, tag or commit). Retried with backoff;
	// the cluster is left as it is.
	GitOperationFailedReason string = "GitOperationFailed"

	// AuthenticationFailedReason: the Secret named in spec.git.secretRef is missing or does not
	// hold usable credentials. Retried with backoff.
	AuthenticationFailedReason string = "AuthenticationFailed"

	// InvalidGitSourceReason: spec.git names a URL or reference the manager refuses: a
	// scheme other than http, https or ssh (file:// only with --allow-file-urls),
	// credentials written into the URL (they belong in secretRef), or a branch or tag name
	// that Git itself would refuse. Terminal until the spec changes.
	InvalidGitSourceReason string = "InvalidGitSource"

	// UnsafeRepositoryReason: the fetched tree holds an entry that would write outside its
	// checkout (a name such as .., .git or one with a slash, a duplicate, or a symlink that
	// leads out). Nothing is checked out or applied; it waits for a new commit.
	UnsafeRepositoryReason string = "UnsafeRepository"

	// RepositoryTooLargeReason: the repository answered more bytes than the manager's
	// --git-max-fetch-bytes, or the commit's tree would write more than
	// --git-max-checkout-bytes or --git-max-checkout-files. Nothing is applied; it waits
	// for a new commit.
	RepositoryTooLargeReason string = "RepositoryTooLarge"

	// InvalidPathReason: spec.path leaves the repository (with .. or a symlink). Terminal until
	// the spec changes.
	InvalidPathReason string = "InvalidPath"

	// PathNotFoundReason: spec.path does not exist at the fetched revision. Terminal until the
	// spec or the repository changes.
	PathNotFoundReason string = "PathNotFound"

	// InvalidManifestReason: a manifest under spec.path cannot be used: a YAML error, an object
	// without apiVersion or kind, a duplicate object, a file over the size limit, a kustomize
	// build error. Nothing of the revision is applied.
	InvalidManifestReason string = "InvalidManifest"

	// RemoteResourceRefusedReason: a kustomization under spec.path loads a remote resource
	// or base (an http(s) URL or a Git repository), which the manager refuses unless started
	// with --allow-remote-bases. Nothing of the revision is applied.
	RemoteResourceRefusedReason string = "RemoteResourceRefused"

	// ImageNotPinnedReason: a container image is not named by a sha256 digest. Nothing of the
	// revision is applied.
	ImageNotPinnedReason string = "ImageNotPinned"

	// AccessDeniedReason: the revision holds objects the release may not apply. A release that
	// acts as the operator (no spec.serviceAccountName and no --default-service-account)
	// applies only namespaced objects into its own namespace, and no RBAC, admission,
	// quota or service-account-token objects; no release may change the operator's own
	// objects (its namespace, CRDs, RBAC and admission policy). Nothing of the revision is
	// applied. Terminal until a new commit or spec.
	AccessDeniedReason string = "AccessDenied"

	// ServiceAccountNotFoundReason: the account the release acts as
	// (spec.serviceAccountName, or the manager's --default-service-account) does not exist
	// in its namespace. Nothing is applied; looked at again every interval.
	ServiceAccountNotFoundReason string = "ServiceAccountNotFound"

	// KubeConfigInvalidReason: the kubeconfig of spec.kubeConfig is missing or refused: its
	// Secret or key does not exist, it does not parse, or it runs an exec plugin, skips TLS
	// verification or names a file, which the manager does not allow. Nothing is applied.
	KubeConfigInvalidReason string = "KubeConfigInvalid"

	// ClusterUnreachableReason: the remote cluster of spec.kubeConfig did not answer; the
	// release is retried with backoff and what it applied there is left as it is.
	ClusterUnreachableReason string = "ClusterUnreachable"

	// ApplyFailedReason: the API server refused the server-side apply or prune of an object, for
	// example because the impersonated service account lacks the rights.
	ApplyFailedReason string = "ApplyFailed"

	// HealthCheckFailedReason: an object of the applied revision failed to become healthy
	// within spec.timeout, or kstatus reports it Failed.
	HealthCheckFailedReason string = "HealthCheckFailed"

	// InvalidHealthCheckExprReason: an entry of spec.healthCheckExprs cannot be used: an
	// expression that does not parse or compile, or that gives something other than a bool,
	// or two entries for one kind. The message names the entry's field and kind. Nothing of
	// the spec is applied; terminal until the spec changes.
	InvalidHealthCheckExprReason string = "InvalidHealthCheckExpr"

	// HealthCheckPendingReason: the applied objects are still rolling out, within spec.timeout.
	HealthCheckPendingReason string = "HealthCheckPending"

	// HealthySucceededReason: every applied object is Current.
	HealthySucceededReason string = "Succeeded"

	// DigestMismatchReason: a rollout is complete but some pods run another digest than Git
	// names (for example a pod whose image was changed in place).
	DigestMismatchReason string = "DigestMismatch"

	// ImageDriftReason: a live workload names another image than Git.
	ImageDriftReason string = "ImageDrift"

	// SpecDriftReason: a live object differs from Git in a field other than an image, or was
	// deleted.
	SpecDriftReason string = "SpecDrift"

	// NoDriftReason: every live object matches Git.
	NoDriftReason string = "NoDrift"

	// RevertPushedReason: a revert commit of the failed revision is on the branch.
	RevertPushedReason string = "RevertPushed"

	// RevertConflictReason: the revert cannot be made without guessing (later commits changed
	// the same lines); nothing was pushed. It is tried again when the branch changes.
	RevertConflictReason string = "RevertConflict"

	// InvalidSigningKeyReason: spec.rollback.signingKeySecretRef names a Secret that is
	// missing or whose key cannot sign; nothing was pushed. It is retried.
	InvalidSigningKeyReason string = "InvalidSigningKey"

	// RevertFailedReason: making or pushing the revert failed; it is retried.
	RevertFailedReason string = "RevertFailed"

	// DependencyNotReadyReason: a release of spec.dependsOn is missing, or not Ready at its
	// current revision; the new revision waits for it.
	DependencyNotReadyReason string = "DependencyNotReady"

	// DependencyCycleReason: spec.dependsOn leads back to the release itself.
	DependencyCycleReason string = "DependencyCycle"

	// DecryptionFailedReason: a SOPS-encrypted file of the revision does not decrypt (no
	// matching age key, a changed file whose MAC no longer matches), the revision holds an
	// encrypted file and spec.decryption is unset, or the key Secret holds no age key.
	// Nothing of the revision is applied. A missing key Secret is retried.
	DecryptionFailedReason string = "DecryptionFailed"

	// NoHealthyRevisionReason: no earlier revision was healthy, so there is nothing to go
	// back to.
	NoHealthyRevisionReason string = "NoHealthyRevision"

	// FixedForwardReason: commits after the failed revision already undid its changes under
	// the path, or commits pushed to the path while the revert was being pushed; the new head
	// is applied instead of a revert. In PullRequest mode it also ends RollbackPending; the
	// pull request is left for a person to close.
	FixedForwardReason string = "FixedForward"

	// QuarantinedDigestReason: the revision brings back a digest that failed in a reverted
	// revision. Nothing of it is applied until the quarantine is lifted.
	QuarantinedDigestReason string = "QuarantinedDigest"

	// PullRequestOpenedReason: a pull request proposes the revert (RollbackPending=True);
	// the cluster stays on what the branch says until it changes.
	PullRequestOpenedReason string = "PullRequestOpened"

	// PullRequestMergedReason: the branch now holds the proposed revert, and it is applied.
	PullRequestMergedReason string = "PullRequestMerged"

	// PullRequestFailedReason: the revert could not be proposed: the token Secret named in
	// spec.rollback.pullRequest.secretRef is missing or has no token key, the provider
	// refused the token, or its API failed. Retried with backoff.
	PullRequestFailedReason string = "PullRequestFailed"

	// ImageVerificationFailedReason: an image of the revision does not carry the signature or
	// attestation that spec.verify or the platform's policy asks for (no signature, a wrong
	// identity or key, a signature of another digest, provenance from another builder or
	// repository, a certificate expired when it signed). The message names the image, its
	// digest and why. Nothing of the revision is applied; looked at again every interval.
	ImageVerificationFailedReason string = "ImageVerificationFailed"

	// VerificationUnavailableReason: the registry of an image could not be read for its
	// signatures (unreachable, refusing the credentials of spec.registrySecretRef, erroring).
	// Nothing of the revision is applied; retried with backoff. Never a pass.
	VerificationUnavailableReason string = "VerificationUnavailable"

	// InvalidVerificationPolicyReason: spec.verify cannot be used: its key Secret is missing
	// or holds no .pub entry, a key does not parse, an expression does not compile; or the
	// Secret of spec.registrySecretRef is missing or not a docker config JSON. Nothing is
	// applied; retried with backoff, as a Secret may be created later.
	InvalidVerificationPolicyReason string = "InvalidVerificationPolicy"

	// DriftCorrectedReason is the reason of the event emitted when drift is put back.
	DriftCorrectedReason string = "DriftCorrected"
)

// The deployment records of spec.attest.
const (
	// AttestedCondition reports the deployment record of the last revision written to
	// Git: True once pushed, False while it cannot be. It never holds the release back:
	// Ready does not depend on it.
	AttestedCondition string = "Attested"

	// AttestationRecordedReason: the signed statement of the revision is in Git, as a note
	// on its commit under spec.attest.notesRef.
	AttestationRecordedReason string = "AttestationRecorded"

	// AttestationKeyInvalidReason: the manager has no attestation key (no
	// --attestation-key-secret), or its Secret, in the operator's namespace, is missing or
	// holds no usable key. Nothing is recorded until it is fixed; retried.
	AttestationKeyInvalidReason string = "AttestationKeyInvalid"

	// AttestationFailedReason: the record could not be pushed (the Git server refused the
	// credentials or the push, or the note on the commit is over its size limit). Retried.
	AttestationFailedReason string = "AttestationFailed"
)
