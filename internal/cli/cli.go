// Package cli is the kubectl release plugin: see and steer ImmutableReleases from a
// terminal with kubectl's conventions (--kubeconfig, --context, -n, -A).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
)

// Exit codes, so that scripts can tell failures apart.
const (
	ExitOK        = 0
	ExitFailed    = 1 // the release is not Ready, or the command failed
	ExitUsage     = 2
	ExitNotFound  = 3
	ExitForbidden = 4
	ExitTimeout   = 5
	// ExitDiffers is diff's answer that applying would change the cluster, as diff(1) and
	// kubectl diff answer 1; here 1 already means failed.
	ExitDiffers = 6
)

// exitError carries an exit code with its message.
type exitError struct {
	code int
	err  error
	// quiet is set when the command's output already says it all.
	quiet bool
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Run runs the plugin with args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := NewCommand(stdout)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SilenceUsage = true
	root.SilenceErrors = true
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if !errors.As(err, &ee) || !ee.quiet {
		fmt.Fprintln(stderr, "error:", err)
	}
	switch {
	case errors.As(err, &ee):
		return ee.code
	case apierrors.IsNotFound(err):
		return ExitNotFound
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return ExitForbidden
	case isUsage(err):
		return ExitUsage
	default:
		return ExitFailed
	}
}

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

type usageError struct{ error }

// usageArgs makes a cobra argument check's complaint a usage error.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// options are shared by every command.
type options struct {
	flags         *genericclioptions.ConfigFlags
	allNamespaces bool
	out           io.Writer
	color         bool
}

// NewCommand builds the kubectl-release command tree.
func NewCommand(stdout io.Writer) *cobra.Command {
	o := &options{flags: genericclioptions.NewConfigFlags(true), out: stdout}
	if f, ok := stdout.(*os.File); ok {
		o.color = term.IsTerminal(int(f.Fd())) && os.Getenv("NO_COLOR") == ""
	}
	root := &cobra.Command{
		Use:   "kubectl-release",
		Short: "See and steer ImmutableReleases",
		Long: "kubectl release shows ImmutableReleases and asks the operator to act on them.\n\n" +
			"Exit codes: 0 ok, 1 failed or not Ready, 2 usage, 3 not found, 4 forbidden, 5 timed out,\n" +
			"6 diff found changes.",
	}
	// A root command without Args lets cobra reject an unknown subcommand with a plain error,
	// which would exit 1 as if the command had run and failed; with Args it needs a RunE too,
	// or cobra prints the help and exits 0 whatever was typed.
	root.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
		}
		return usageError{errors.New(msg)}
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	o.flags.AddFlags(root.PersistentFlags())
	root.AddCommand(o.getCommand(), o.statusCommand(), o.historyCommand(), o.reconcileCommand(),
		o.suspendCommand(true), o.suspendCommand(false), o.rollbackCommand(), o.unquarantineCommand(), o.verifyCommand(),
		o.diffCommand(), o.pinCommand(), o.auditCommand())
	return root
}

// client returns a client and the namespace from the kubeconfig flags.
func (o *options) client() (client.Client, string, error) {
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, "", err
	}
	ns, _, err := o.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", err
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	return c, ns, err
}

// getRelease reads one release, with a clear error when it does not exist.
func (o *options) getRelease(ctx context.Context, name string) (client.Client, *v1alpha1.ImmutableRelease, error) {
	c, ns, err := o.client()
	if err != nil {
		return nil, nil, err
	}
	rel := &v1alpha1.ImmutableRelease{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, rel); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, &exitError{code: ExitNotFound, err: fmt.Errorf("no ImmutableRelease %q in namespace %q", name, ns)}
		}
		return nil, nil, err
	}
	return c, rel, nil
}

// progress prints a spinner on a terminal while waiting, and nothing otherwise.
type progress struct {
	out   io.Writer
	on    bool
	frame int
	msg   string
}

func (p *progress) tick(msg string) {
	if !p.on {
		return
	}
	frames := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
	p.frame++
	p.msg = msg
	fmt.Fprintf(p.out, "\r\033[K%s %s", frames[p.frame%len(frames)], msg)
}

func (p *progress) done() {
	if p.on && p.msg != "" {
		fmt.Fprint(p.out, "\r\033[K")
	}
}

func shortAge(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}
