// Command kubectl-release is the kubectl release plugin: put it on PATH and run
// `kubectl release get`.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/immutable-release/operator/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
