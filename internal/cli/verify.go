package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/manifest"
)

// verifyResult is the JSON form of `verify -o json`, for CI systems.
type verifyResult struct {
	Path     string             `json:"path"`
	Valid    bool               `json:"valid"`
	Reason   string             `json:"reason,omitempty"`
	Objects  int                `json:"objects"`
	Images   int                `json:"images"`
	Problems []manifest.Problem `json:"problems,omitempty"`
	// Against and Changes are set with --against: what applying the folder as that release
	// would change in the cluster.
	Against string         `json:"against,omitempty"`
	Changes []objectChange `json:"changes,omitempty"`
	// Signatures are set with --signatures: each distinct image's verification.
	Signatures []signatureResult `json:"signatures,omitempty"`
}

func (o *options) verifyCommand() *cobra.Command {
	var output, against, ageKeyFile string
	var sig signatureFlags
	cmd := &cobra.Command{
		Use:   "verify PATH [--against NAME]",
		Short: "Check a release folder as the operator would: every image pinned, manifests valid (no cluster needed)",
		Long: "verify runs the operator's own validation (the same code) on a folder or a kustomization:\n" +
			"every container image pinned by sha256 digest, manifests that parse, no duplicates, size limits.\n" +
			"Each problem is printed as file:line: object container: message; the exit code is 1 when there is any.\n\n" +
			"With --against NAME and a kubeconfig, a valid folder is also dry-run against the cluster as the\n" +
			"release NAME would apply it, and what would change is shown as kubectl release diff shows it.\n" +
			"Changes do not fail verify; the API server refusing an object does (exit code 1).\n\n" +
			"SOPS-encrypted files are decrypted in memory with --age-key-file (or $SOPS_AGE_KEY_FILE, $SOPS_AGE_KEY);\n" +
			"without a key they are reported (DecryptionFailed). Secret values are never printed.\n\n" +
			"With --signatures, every image's Sigstore signature is verified as the operator's spec.verify does\n" +
			"(bundles attached as OCI referrers, cosign .sig tags), against --key files and/or a keyless\n" +
			"--certificate-oidc-issuer and --certificate-identity, and --attestation-type provenance; only\n" +
			"the registries are contacted. An image that does not verify fails verify (exit code 1).",
		Args: exactlyOne,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return usageError{fmt.Errorf("unknown output %q: use text or json", output)}
			}
			dir, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			root := repositoryRoot(dir)
			rel, err := filepath.Rel(root, dir)
			if err != nil {
				return err
			}
			dec, err := ageDecryptor(ageKeyFile)
			if err != nil {
				return err
			}
			res := verifyResult{Path: args[0], Valid: true}
			objects, err := manifest.BuildDecrypted(root, rel, manifest.DefaultLimits, dec)
			var merr *manifest.Error
			switch {
			case errors.As(err, &merr):
				res.Valid, res.Reason, res.Problems = false, merr.Reason, merr.Problems
			case err != nil:
				return err
			}
			res.Objects = len(objects)
			for _, obj := range objects {
				res.Images += len(manifest.Containers(obj.Unstructured))
			}
			if res.Valid && sig.enabled {
				if res.Signatures, err = sig.check(cmd.Context(), objects); err != nil {
					return err
				}
				for _, s := range res.Signatures {
					if s.Reason != "" {
						res.Valid, res.Reason = false, v1alpha1.ImageVerificationFailedReason
					}
				}
			}
			if res.Valid && against != "" {
				c, rel, err := o.getRelease(cmd.Context(), against)
				if err != nil {
					return err
				}
				res.Against = rel.Namespace + "/" + rel.Name
				if res.Changes, err = plan(cmd.Context(), c, rel, manifest.Unstructured(objects), "local "+args[0]); err != nil {
					return err
				}
			}
			if output == "json" {
				b, err := json.MarshalIndent(res, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(o.out, string(b))
			} else if res.Valid {
				fmt.Fprintf(o.out, "%s %s: %d objects, %d images pinned by digest\n", o.paint(green, "✔"), args[0], res.Objects, res.Images)
				if res.Against != "" {
					o.printChanges(res.Changes)
					fmt.Fprintf(o.out, "against %s: %s\n", res.Against, summary(res.Changes))
				}
			} else {
				for _, p := range res.Problems {
					fmt.Fprintln(o.out, p.String())
				}
			}
			if output != "json" {
				o.printSignatures(res.Signatures)
			}
			if !res.Valid {
				problems := len(res.Problems)
				for _, s := range res.Signatures {
					if s.Reason != "" {
						problems++
					}
				}
				return &exitError{code: ExitFailed, err: fmt.Errorf("%s: %d problems (%s)", args[0], problems, res.Reason)}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "Output format: text or json.")
	cmd.Flags().StringVar(&against, "against", "", "Also dry-run the folder against the cluster as this release (in -n) would apply it.")
	addAgeKeyFlag(cmd, &ageKeyFile)
	sig.add(cmd)
	return cmd
}

// repositoryRoot is the Git work tree around dir, so that kustomize bases elsewhere in the
// repository resolve as they do for the operator; dir itself outside a repository.
func repositoryRoot(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, ".git")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}
