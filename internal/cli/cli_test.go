package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
)

// TestExitCodes checks that a script can tell a mistyped command line (2, as the README
// says) from a command that ran and failed (1). The runtime failure talks to a port that
// refuses connections, so that no usage error can hide behind a cluster that happens to
// answer.
func TestExitCodes(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	unreachable := []string{"--server", "http://127.0.0.1:1", "--request-timeout", "5s"}
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{name: "get with two names", args: []string{"get", "a", "b"}, code: ExitUsage, stderr: "accepts at most 1 arg"},
		{name: "status without a name", args: []string{"status"}, code: ExitUsage, stderr: "expected one release name"},
		{name: "unknown subcommand", args: []string{"gte"}, code: ExitUsage, stderr: `unknown command "gte"`},
		{name: "unknown subcommand after flags", args: append(unreachable, "frobnicate", "a"), code: ExitUsage, stderr: `unknown command "frobnicate"`},
		{name: "unknown flag of a subcommand", args: []string{"get", "--bogus"}, code: ExitUsage, stderr: "unknown flag: --bogus"},
		{name: "unknown flag of the root", args: []string{"--bogus", "get"}, code: ExitUsage, stderr: "unknown flag: --bogus"},
		{name: "flag without its value", args: []string{"history", "a", "-o"}, code: ExitUsage, stderr: "flag needs an argument"},
		{name: "no arguments prints help", args: nil, code: ExitOK},
		{name: "cluster unreachable", args: append(unreachable, "get"), code: ExitFailed, stderr: "127.0.0.1:1"},
		{name: "cluster unreachable for one release", args: append(unreachable, "status", "a"), code: ExitFailed, stderr: "127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			var out, errOut bytes.Buffer
			code := Run(context.Background(), tt.args, &out, &errOut)
			g.Expect(code).To(Equal(tt.code), "stdout: %s\nstderr: %s", out.String(), errOut.String())
			g.Expect(errOut.String()).To(ContainSubstring(tt.stderr))
		})
	}
}
