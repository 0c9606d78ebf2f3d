// Command localenv runs the local environment of `make demo` and the end-to-end stories
// until it is told to stop: a control plane that runs workloads (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kwok) and a Git server holding the sample
// repository. It writes a kubeconfig and an env file a shell can source, then waits for
// SIGTERM or SIGINT and stops everything.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/immutable-release/operator/internal/controlplane"
	"github.com/immutable-release/operator/internal/testgit"
)

func main() {
	dir := flag.String("dir", ".demo", "Where the kubeconfig, the env file and the logs go.")
	app := flag.String("app", "hack/demo/app", "The folder committed to the sample repository under deploy/.")
	namespace := flag.String("namespace", "shop", "The namespace the sample release uses.")
	flag.Parse()
	if err := run(*dir, *app, *namespace); err != nil {
		fmt.Fprintln(os.Stderr, "localenv:", err)
		os.Exit(1)
	}
}

func run(dir, app, namespace string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	step("Starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok")
	start := time.Now()
	cp, err := controlplane.Start(ctx, controlplane.Options{Workloads: true, LogDir: filepath.Join(dir, "logs")})
	if err != nil {
		return err
	}
	defer cp.Stop()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig); err != nil {
		return err
	}
	step(fmt.Sprintf("Control plane up in %s, with one kwok node", time.Since(start).Round(100*time.Millisecond)))

	step("Starting a Git server (HTTP with basic auth, and SSH) with the sample repository")
	srv, err := testgit.NewServer()
	if err != nil {
		return err
	}
	defer srv.Stop()
	repo, err := srv.CreateRepo("acme/shop.git", "main")
	if err != nil {
		return err
	}
	files, err := readFolder(app, "deploy/prod")
	if err != nil {
		return err
	}
	if err := repo.Write(files); err != nil {
		return err
	}
	if _, err := repo.CommitAndPush("Release web 1.0"); err != nil {
		return err
	}

	env := strings.Join([]string{
		"export KUBECONFIG=" + kubeconfig,
		"export GIT_URL=" + repo.PushURL(),
		"export GIT_REPO_URL=" + repo.URL(),
		"export GIT_USERNAME=" + srv.Username,
		"export GIT_PASSWORD=" + srv.Password,
		"export GIT_SECRET=shop-git",
		"export NAMESPACE=" + namespace,
		"export LOCALENV_PID=" + fmt.Sprint(os.Getpid()),
	}, "\n") + "\n"
	// Written last, through a rename: its presence means everything is up.
	if err := os.WriteFile(filepath.Join(dir, "env.tmp"), []byte(env), 0o600); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(dir, "env.tmp"), filepath.Join(dir, "env")); err != nil {
		return err
	}
	step("Ready: " + filepath.Join(dir, "env"))

	<-ctx.Done()
	step("Stopping")
	_ = os.Remove(filepath.Join(dir, "env"))
	return nil
}

// readFolder reads the files of dir as paths under prefix.
func readFolder(dir, prefix string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	files := map[string]string{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		files[prefix+"/"+e.Name()] = string(b)
	}
	return files, nil
}

func step(msg string) { fmt.Printf("[localenv %s] %s\n", time.Now().Format("15:04:05"), msg) }
