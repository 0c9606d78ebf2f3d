package controllers

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/cli"
)

// kubectlRelease runs the plugin as a person would, with a kubeconfig file.
func kubectlRelease(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = cli.Run(ctx, append([]string{"--kubeconfig", kubeconfigPath}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestKubectlRelease drives the plugin against the real API server and operator.
func TestKubectlRelease(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	repo := newRepo(t, ns, sampleFiles("app", "ghcr.io/acme/web:1.0@"+digestV1))
	first, err := repo.Head()
	g.Expect(err).NotTo(HaveOccurred())
	obj := newRelease(t, ns, repo, "app")
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)

	code, out, _ := kubectlRelease("get", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK))
	g.Expect(out).To(MatchRegexp(`NAME\s+READY\s+REVISION\s+IMAGES\s+AGE\nshop\s+True\s+main@` + first[:7] + `\s+app@111111111111\s+\d+s`))
	code, out, _ = kubectlRelease("get", "-A")
	g.Expect(code).To(Equal(cli.ExitOK))
	g.Expect(out).To(MatchRegexp(`(?m)^` + ns + `\s+shop\s+True`))

	code, out, _ = kubectlRelease("status", "shop", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK))
	g.Expect(out).To(ContainSubstring("Applied:   main@sha1:" + first))
	g.Expect(out).To(MatchRegexp(`Ready\s+True\s+ReconciliationSucceeded\s+Applied revision`))
	g.Expect(out).To(MatchRegexp(`Deployment/` + ns + `/web\s+app\s+ghcr.io/acme/web:1.0@` + digestV1 + `\s+running it`))
	g.Expect(out).To(ContainSubstring("Drift:     mode Correct, 0 corrections"))

	// A new commit, applied by `reconcile`, which waits and shows the outcome.
	second := commit(t, repo, "Release 1.1", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web:1.1@"+digestV2)})
	code, out, _ = kubectlRelease("reconcile", "shop", "-n", ns, "--timeout", "1m")
	g.Expect(code).To(Equal(cli.ExitOK))
	g.Expect(out).To(ContainSubstring("Applied revision main@sha1:" + second))

	code, out, _ = kubectlRelease("history", "shop", "-n", ns, "-o", "json")
	g.Expect(code).To(Equal(cli.ExitOK))
	var history []v1alpha1.ReleaseRecord
	g.Expect(json.Unmarshal([]byte(out), &history)).To(Succeed())
	g.Expect(history).To(HaveLen(2))
	g.Expect(history[0].Subject).To(Equal("Release 1.1"))
	code, out, _ = kubectlRelease("history", "shop", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK))
	g.Expect(out).To(MatchRegexp(`main@` + second[:7] + `\s+(Applied|Healthy)\s+\S+\s+Ada Developer <ada@example.com>\s+Release 1.1`))

	// Suspend and resume.
	code, out, _ = kubectlRelease("suspend", "shop", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK))
	g.Expect(out).To(Equal(ns + "/shop suspended\n"))
	g.Expect(get(g, obj).Spec.Suspend).To(BeTrue())
	code, _, errOut := kubectlRelease("reconcile", "shop", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitFailed))
	g.Expect(errOut).To(ContainSubstring("is suspended: kubectl release resume shop"))
	code, _, _ = kubectlRelease("resume", "shop", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK))
	g.Expect(get(g, obj).Spec.Suspend).To(BeFalse())

	// Errors people meet, with their exit codes.
	code, _, errOut = kubectlRelease("status", "nope", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitNotFound))
	g.Expect(errOut).To(ContainSubstring(`no ImmutableRelease "nope" in namespace "` + ns + `"`))
	code, _, errOut = kubectlRelease("get", "-n", ns, "--as", "nobody")
	g.Expect(code).To(Equal(cli.ExitForbidden))
	g.Expect(errOut).To(ContainSubstring("forbidden"))
	code, _, _ = kubectlRelease("history", "shop", "-n", ns, "-o", "xml")
	g.Expect(code).To(Equal(cli.ExitUsage))
	code, _, _ = kubectlRelease("status")
	g.Expect(code).To(Equal(cli.ExitUsage))

	// A failure: reconcile reports it and exits 1.
	commit(t, repo, "Use a tag", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web:2.0")})
	code, _, errOut = kubectlRelease("reconcile", "shop", "-n", ns, "--timeout", "1m")
	g.Expect(code).To(Equal(cli.ExitFailed))
	g.Expect(strings.TrimSpace(errOut)).To(HavePrefix("error: ImageNotPinned: revision main@sha1:"))
}
