package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/immutable-release/operator/internal/pin"
)

func (o *options) pinCommand() *cobra.Command {
	var (
		dryRun  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "pin PATH",
		Short: "Pin every image tag under a folder to its digest, in place (no cluster needed)",
		Long: "pin finds every container image not pinned by digest in the YAML files under PATH, and the\n" +
			"kustomization images entries with a newTag and no digest, asks each image's registry for the\n" +
			"digest of its tag (with the credentials of the Docker config: docker login, DOCKER_CONFIG),\n" +
			"and rewrites the files in place: name:tag becomes name:tag@sha256:..., and kustomize entries get\n" +
			"a digest field. Comments and formatting are kept. A multi-arch image is pinned by its index.\n" +
			"All or nothing: if any image cannot be resolved, each is reported and no file is changed.",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("expected one folder, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			info, err := os.Stat(args[0])
			if err != nil {
				return usageError{err}
			}
			if !info.IsDir() {
				return usageError{fmt.Errorf("%s is a file: name the folder that holds the manifests", args[0])}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			plan, err := pin.Folder(ctx, args[0], pin.Remote())
			var perr *pin.Error
			if errors.As(err, &perr) {
				for _, p := range perr.Problems {
					fmt.Fprintln(o.out, p.String())
				}
				return &exitError{code: ExitFailed, err: fmt.Errorf("%d images cannot be pinned; no file was changed", len(perr.Problems))}
			}
			if err != nil {
				return err
			}
			for _, c := range plan.Changes {
				fmt.Fprintln(o.out, c.String())
			}
			switch {
			case len(plan.Changes) == 0:
				fmt.Fprintf(o.out, "%s %s: every image is pinned by digest\n", o.paint(green, "✔"), args[0])
			case dryRun:
				fmt.Fprint(o.out, plan.Diff())
				fmt.Fprintf(o.out, "dry run: %d images would be pinned, no file was changed\n", len(plan.Changes))
			default:
				if err := plan.Write(); err != nil {
					return err
				}
				fmt.Fprintf(o.out, "%s pinned %d images\n", o.paint(green, "✔"), len(plan.Changes))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "Print the changes as a diff and change no file.")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "How long to wait for the registries in all.")
	return cmd
}
