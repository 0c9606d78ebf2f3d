package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/git"
)

func (o *options) getCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get [NAME]",
		Short: "List releases: ready, revision, images, age",
		Args:  usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := o.client()
			if err != nil {
				return err
			}
			var items []v1alpha1.ImmutableRelease
			if len(args) == 1 {
				_, rel, err := o.getRelease(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				items = append(items, *rel)
			} else {
				var list v1alpha1.ImmutableReleaseList
				opts := []client.ListOption{client.InNamespace(ns)}
				if o.allNamespaces {
					opts = nil
				}
				if err := c.List(cmd.Context(), &list, opts...); err != nil {
					return err
				}
				items = list.Items
			}
			w := tabwriter.NewWriter(o.out, 0, 4, 3, ' ', 0)
			header := "NAME\tREADY\tREVISION\tIMAGES\tAGE"
			// The cluster column appears once a release delivers to another cluster.
			remote := anyRemote(items)
			if remote {
				header = "NAME\tREADY\tCLUSTER\tREVISION\tIMAGES\tAGE"
			}
			if o.allNamespaces {
				header = "NAMESPACE\t" + header
			}
			fmt.Fprintln(w, header)
			for i := range items {
				rel := &items[i]
				ready := o.readyCell(rel)
				if remote {
					ready += "\t" + clusterCell(rel)
				}
				row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s", rel.Name, ready, shortRevision(rel.Status.LastAppliedRevision),
					shortImages(rel.Status.Images), shortAge(rel.CreationTimestamp.Time))
				if o.allNamespaces {
					row = rel.Namespace + "\t" + row
				}
				fmt.Fprintln(w, row)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "List the releases of every namespace.")
	return cmd
}

func (o *options) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status NAME",
		Short: "Conditions, images desired and running, drift",
		Args:  exactlyOne,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, rel, err := o.getRelease(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := o.out
			fmt.Fprintf(out, "Release:   %s/%s\n", rel.Namespace, rel.Name)
			fmt.Fprintf(out, "Source:    %s (%s) path %s\n", rel.Spec.Git.URL, git.Reference{Branch: rel.Spec.Git.Ref.Branch, Tag: rel.Spec.Git.Ref.Tag, Commit: rel.Spec.Git.Ref.Commit}.String(), orDefault(rel.Spec.Path, "/"))
			if rel.Spec.KubeConfig != nil {
				fmt.Fprintf(out, "Cluster:   %s (kubeconfig Secret %s)\n", orDefault(rel.Status.Cluster, "not reached yet"), rel.Spec.KubeConfig.SecretRef.Name)
			}
			fmt.Fprintf(out, "Applied:   %s\n", orDefault(rel.Status.LastAppliedRevision, "nothing yet"))
			if rel.Status.LastAttemptedRevision != rel.Status.LastAppliedRevision {
				fmt.Fprintf(out, "Attempted: %s\n", rel.Status.LastAttemptedRevision)
			}
			if rel.Spec.Suspend {
				fmt.Fprintln(out, "Suspended: yes (kubectl release resume "+rel.Name+")")
			}
			fmt.Fprintln(out, "\nConditions:")
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			for _, c := range rel.Status.Conditions {
				fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", c.Type, o.colorStatus(c), c.Reason, c.Message)
			}
			_ = w.Flush()
			fmt.Fprintln(out, "\nImages:")
			w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			for _, im := range rel.Status.Images {
				_, want, _ := strings.Cut(im.Image, "@")
				running := "-"
				if len(im.Running) > 0 {
					running = strings.Join(im.Running, ",")
					if len(im.Running) == 1 && im.Running[0] == want {
						running = o.paint(green, "running it")
					} else {
						running = o.paint(red, "running "+running)
					}
				}
				fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", im.Workload, im.Container, im.Image, running)
				if v := im.Verification; v != nil {
					fmt.Fprintf(w, "  \t\t%s\t\n", o.paint(green, "✔ "+describeSigner(v.Issuer, v.Subject, v.KeyFingerprint, v.LogIndex, v.SourceCommit)))
				}
			}
			_ = w.Flush()
			mode := v1alpha1.DriftCorrect
			if rel.Spec.Drift != nil && rel.Spec.Drift.Mode != "" {
				mode = rel.Spec.Drift.Mode
			}
			fmt.Fprintf(out, "\nDrift:     mode %s, %d corrections\n", mode, rel.Status.DriftCorrections)
			for _, c := range rel.Status.InjectedContainers {
				fmt.Fprintf(out, "Injected:  %s container %s (%s), not in Git, left in place\n", c.Workload, c.Container, c.Image)
			}
			if lr := rel.Status.LastRollback; lr != nil {
				if pending := findCondition(rel, v1alpha1.RollbackPendingCondition); pending != nil && pending.Status == metav1.ConditionTrue {
					fmt.Fprintf(out, "\nLast rollback: %s failed, revert %s proposed in %s, not merged yet (%s)\n", lr.FailedRevision, lr.RevertCommit, lr.PullRequestURL, lr.Time.UTC().Format(time.RFC3339))
				} else {
					fmt.Fprintf(out, "\nLast rollback: %s failed, reverted by %s (%s)\n", lr.FailedRevision, lr.RevertCommit, lr.Time.UTC().Format(time.RFC3339))
				}
			}
			for _, q := range rel.Status.Quarantine {
				fmt.Fprintf(out, "Quarantined: %s container %s %s (failed in %s); lift: kubectl release unquarantine %s %s\n",
					q.Workload, q.Container, q.Digest, q.FailedRevision, rel.Name, q.Digest)
			}
			return nil
		},
	}
}

func (o *options) historyCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "history NAME",
		Short: "Revisions applied, their results, who committed them",
		Args:  exactlyOne,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, rel, err := o.getRelease(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			switch output {
			case "json":
				b, err := json.MarshalIndent(rel.Status.History, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(o.out, string(b))
			case "yaml":
				b, err := yaml.Marshal(rel.Status.History)
				if err != nil {
					return err
				}
				fmt.Fprint(o.out, string(b))
			case "table", "":
				w := tabwriter.NewWriter(o.out, 0, 4, 3, ' ', 0)
				// With spec.attest, where each revision's deployment record in Git stands.
				attested := rel.Spec.Attest != nil
				if attested {
					fmt.Fprintln(w, "REVISION\tRESULT\tRECORD\tAPPLIED\tAUTHOR\tSUBJECT")
				} else {
					fmt.Fprintln(w, "REVISION\tRESULT\tAPPLIED\tAUTHOR\tSUBJECT")
				}
				for _, h := range rel.Status.History {
					record := ""
					if attested {
						record = recordCell(h.Attestation) + "\t"
					}
					fmt.Fprintf(w, "%s\t%s\t%s%s\t%s\t%s\n", shortRevision(h.Revision), o.colorResult(h.Result), record,
						h.AppliedAt.UTC().Format(time.RFC3339), h.Author, h.Subject)
				}
				return w.Flush()
			default:
				return usageError{fmt.Errorf("unknown output %q: use table, json or yaml", output)}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "Output format: table, json or yaml.")
	return cmd
}

// recordCell is where a revision's deployment record stands: its state, "not written"
// after a failed attempt, or "-" before any.
func recordCell(a *v1alpha1.AttestationRecord) string {
	switch {
	case a == nil:
		return "-"
	case a.State != "":
		return string(a.State)
	case a.Message != "":
		return "not written"
	}
	return "-"
}

func (o *options) reconcileCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "reconcile NAME",
		Short: "Check Git and apply now, wait, and show the outcome",
		Args:  exactlyOne,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, rel, err := o.getRelease(ctx, args[0])
			if err != nil {
				return err
			}
			if rel.Spec.Suspend {
				return &exitError{code: ExitFailed, err: fmt.Errorf("%s/%s is suspended: kubectl release resume %s", rel.Namespace, rel.Name, rel.Name)}
			}
			token := time.Now().Format(time.RFC3339Nano)
			if err := annotate(ctx, c, rel, meta.ReconcileRequestAnnotation, token); err != nil {
				return err
			}
			return o.wait(ctx, c, rel, timeout, func() (string, bool, error) {
				ready := findCondition(rel, meta.ReadyCondition)
				if rel.Status.LastHandledReconcileAt != token || ready == nil {
					return "waiting for the operator", false, nil
				}
				switch ready.Status {
				case metav1.ConditionTrue:
					return ready.Message, true, nil
				case metav1.ConditionFalse:
					return "", true, &exitError{code: ExitFailed, err: fmt.Errorf("%s: %s", ready.Reason, ready.Message)}
				default:
					return ready.Message, false, nil
				}
			})
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "How long to wait for the outcome.")
	return cmd
}

func (o *options) suspendCommand(suspend bool) *cobra.Command {
	use, short := "resume NAME", "Resume applying Git, and catch up at once"
	if suspend {
		use, short = "suspend NAME", "Stop applying Git until resumed"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactlyOne,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, rel, err := o.getRelease(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			patch := client.MergeFrom(rel.DeepCopy())
			rel.Spec.Suspend = suspend
			if err := c.Patch(cmd.Context(), rel, patch); err != nil {
				return err
			}
			verb := "resumed"
			if suspend {
				verb = "suspended"
			}
			fmt.Fprintf(o.out, "%s/%s %s\n", rel.Namespace, rel.Name, verb)
			return nil
		},
	}
}

func (o *options) rollbackCommand() *cobra.Command {
	var (
		to      string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rollback NAME",
		Short: "Revert, in Git, the commits after a revision; wait and print the revert commit",
		Args:  exactlyOne,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, rel, err := o.getRelease(ctx, args[0])
			if err != nil {
				return err
			}
			value := to + "@" + time.Now().Format(time.RFC3339Nano)
			if err := annotate(ctx, c, rel, v1alpha1.RollbackToAnnotation, value); err != nil {
				return err
			}
			return o.wait(ctx, c, rel, timeout, func() (string, bool, error) {
				rb := findCondition(rel, v1alpha1.RolledBackCondition)
				if rel.Status.LastHandledRollbackTo != value || rb == nil {
					return "waiting for the revert", false, nil
				}
				if rb.Status == metav1.ConditionUnknown && rb.Reason == v1alpha1.PullRequestOpenedReason && rel.Status.LastRollback != nil {
					return fmt.Sprintf("revert proposed in pull request %s; merge it to roll back", rel.Status.LastRollback.PullRequestURL), true, nil
				}
				if rb.Status != metav1.ConditionTrue {
					return "", true, &exitError{code: ExitFailed, err: fmt.Errorf("%s: %s", rb.Reason, rb.Message)}
				}
				if lr := rel.Status.LastRollback; lr != nil && strings.HasSuffix(rel.Status.LastAppliedRevision, lr.RevertCommit) {
					return fmt.Sprintf("reverted in Git by commit %s, now applied", lr.RevertCommit), true, nil
				}
				return "waiting for the revert to be applied", false, nil
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "previous", "The revision to go back to: 7 or more hex digits of its commit, or previous (the last healthy one).")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "How long to wait for the revert to be applied.")
	return cmd
}

func (o *options) unquarantineCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "unquarantine NAME DIGEST",
		Short: "Lift the quarantine of a digest that failed in a reverted revision",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError{fmt.Errorf("expected a release name and a digest, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, rel, err := o.getRelease(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			found := false
			for _, q := range rel.Status.Quarantine {
				found = found || q.Digest == args[1]
			}
			if !found {
				return &exitError{code: ExitNotFound, err: fmt.Errorf("%s is not quarantined in %s/%s", args[1], rel.Namespace, rel.Name)}
			}
			// A token after the digest names it anew: the operator lifts a value once, so
			// that the same digest quarantined again later is not lifted by an old request.
			value := args[1] + "@" + time.Now().Format(time.RFC3339Nano)
			if err := annotate(cmd.Context(), c, rel, v1alpha1.UnquarantineAnnotation, value); err != nil {
				return err
			}
			fmt.Fprintf(o.out, "lifted the quarantine of %s in %s/%s\n", args[1], rel.Namespace, rel.Name)
			return nil
		},
	}
}

// annotate sets one annotation on the release.
func annotate(ctx context.Context, c client.Client, rel *v1alpha1.ImmutableRelease, key, value string) error {
	patch := client.MergeFrom(rel.DeepCopy())
	if rel.Annotations == nil {
		rel.Annotations = map[string]string{}
	}
	rel.Annotations[key] = value
	return c.Patch(ctx, rel, patch)
}

// wait re-reads the release until check says done, showing check's message as progress;
// on success it prints the final message with a check mark.
func (o *options) wait(ctx context.Context, c client.Client, rel *v1alpha1.ImmutableRelease, timeout time.Duration,
	check func() (msg string, done bool, err error)) error {
	p := &progress{out: o.out, on: o.color}
	defer p.done()
	deadline := time.Now().Add(timeout)
	for {
		if err := c.Get(ctx, client.ObjectKeyFromObject(rel), rel); err != nil {
			return err
		}
		msg, done, err := check()
		if done {
			p.done()
			if err == nil {
				fmt.Fprintf(o.out, "%s %s\n", o.paint(green, "✔"), msg)
			}
			return err
		}
		if time.Now().After(deadline) {
			return &exitError{code: ExitTimeout, err: fmt.Errorf("timed out after %s waiting for %s/%s: %s", timeout, rel.Namespace, rel.Name, msg)}
		}
		p.tick(msg)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func exactlyOne(_ *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usageError{fmt.Errorf("expected one release name, got %d arguments", len(args))}
	}
	return nil
}

func findCondition(rel *v1alpha1.ImmutableRelease, t string) *metav1.Condition {
	for i := range rel.Status.Conditions {
		if rel.Status.Conditions[i].Type == t {
			return &rel.Status.Conditions[i]
		}
	}
	return nil
}

// shortRevision is main@sha1:0123456789ab... as main@0123456.
func shortRevision(rev string) string {
	ref, hash, ok := strings.Cut(rev, "sha1:")
	if !ok || len(hash) < 7 {
		return orDefault(rev, "-")
	}
	return ref + hash[:7]
}

// shortImages lists container=digest prefix.
func shortImages(images []v1alpha1.WorkloadImage) string {
	var parts []string
	for _, im := range images {
		_, digest, _ := strings.Cut(im.Image, "@sha256:")
		if len(digest) > 12 {
			digest = digest[:12]
		}
		parts = append(parts, im.Container+"@"+digest)
	}
	sort.Strings(parts)
	return orDefault(strings.Join(parts, ","), "-")
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

const (
	green = "\033[32m"
	red   = "\033[31m"
)

func (o *options) paint(color, s string) string {
	if !o.color {
		return s
	}
	return color + s + "\033[0m"
}

func (o *options) readyCell(rel *v1alpha1.ImmutableRelease) string {
	c := findCondition(rel, meta.ReadyCondition)
	if c == nil {
		return "Unknown"
	}
	return o.colorStatus(*c)
}

func (o *options) colorStatus(c metav1.Condition) string {
	switch {
	case c.Status == metav1.ConditionTrue && c.Type != v1alpha1.DriftedCondition && c.Type != meta.StalledCondition && c.Type != meta.ReconcilingCondition:
		return o.paint(green, string(c.Status))
	case c.Status == metav1.ConditionFalse && (c.Type == meta.ReadyCondition || c.Type == v1alpha1.HealthyCondition):
		return o.paint(red, string(c.Status))
	default:
		return string(c.Status)
	}
}

func (o *options) colorResult(r v1alpha1.ReleaseResult) string {
	switch r {
	case v1alpha1.ReleaseHealthy:
		return o.paint(green, string(r))
	case v1alpha1.ReleaseFailed:
		return o.paint(red, string(r))
	default:
		return string(r)
	}
}
