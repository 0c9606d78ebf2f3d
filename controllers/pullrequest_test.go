package controllers

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/cli"
	"github.com/immutable-release/operator/internal/testgit"
	"github.com/immutable-release/operator/internal/testgitea"
)

// A real Gitea is both the Git server and the pull-request API of these tests. It starts
// with the first test that needs it and stops with the suite.
var gitea testgitea.Shared

func startGitea(t *testing.T) *testgitea.Server {
	t.Helper()
	gt, err := gitea.Get(ctx)
	if errors.Is(err, testgitea.ErrMissingBinary) && testing.Short() {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("starting Gitea: %v", err)
	}
	return gt
}

// giteaRepo creates a repository on Gitea holding files, a working clone of it, and in
// namespace the Git credentials (git-credentials) and, unless token is empty, the API token
// (pr-token).
func giteaRepo(t *testing.T, gt *testgitea.Server, namespace, token string, files map[string]string) (*testgit.Repo, string) {
	t.Helper()
	g := NewWithT(t)
	name := uniqueName("shop")
	url, err := gt.CreateRepo(ctx, name)
	g.Expect(err).NotTo(HaveOccurred())
	repo, err := testgit.NewClone(filepath.Join(t.TempDir(), name), url, gt.PushURL(name), "main")
	g.Expect(err).NotTo(HaveOccurred())
	commit(t, repo, "Initial release", files)
	g.Expect(gt.WaitForBranch(ctx, name, "main")).To(Succeed())
	g.Expect(k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "git-credentials", Namespace: namespace},
		StringData: map[string]string{"username": gt.User, "password": gt.Password},
	})).To(Succeed())
	if token != "" {
		g.Expect(k8s.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "pr-token", Namespace: namespace},
			StringData: map[string]string{"token": token},
		})).To(Succeed())
	}
	return repo, gt.User + "/" + name
}

func pullRequestMode(o *v1alpha1.ImmutableRelease) {
	o.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Second}
	o.Spec.Rollback = &v1alpha1.RollbackSpec{
		Mode:        v1alpha1.RollbackPullRequest,
		PullRequest: &v1alpha1.PullRequestSpec{Provider: v1alpha1.GitProviderGitea, SecretRef: meta.LocalObjectReference{Name: "pr-token"}},
	}
}

type giteaPull struct {
	Number  int    `json:"number"`
	Title   string `json:"title"`
	Body    string `json:"body"`
	State   string `json:"state"`
	HTMLURL string `json:"html_url"`
	Head    struct {
		Ref string `json:"ref"`
	} `json:"head"`
}

func pulls(g Gomega, gt *testgitea.Server, repo string) []giteaPull {
	var out []giteaPull
	g.Expect(gt.API(ctx, http.MethodGet, "/repos/"+repo+"/pulls?state=all", nil, &out)).To(Succeed())
	return out
}

// remoteHeads lists the branches of the remote: name -> commit.
func remoteHeads(g Gomega, repo *testgit.Repo) map[string]string {
	out, err := repo.Output("ls-remote", "--heads", "origin")
	g.Expect(err).NotTo(HaveOccurred())
	heads := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			heads[strings.TrimPrefix(f[1], "refs/heads/")] = f[0]
		}
	}
	return heads
}

// TestRollbackByPullRequest: in PullRequest mode a failed revision gets one branch with the
// revert commit and one pull request on Gitea; the cluster stays on what the branch says.
// The revert commit is signed with spec.rollback.signingKeySecretRef, as a pushed revert is.
// Reconciling again, even with the status lost as after a crash, opens nothing more. Merging
// the pull request through Gitea's API brings the revert, which is applied.
func TestRollbackByPullRequest(t *testing.T) {
	g := NewWithT(t)
	gt := startGitea(t)
	ns := newNamespace(t)
	good := "ghcr.io/acme/web@" + digestV1
	repo, fullName := giteaRepo(t, gt, ns, gt.Token, sampleFiles("app", good))
	private, public := signingKey(g, "s3cret")
	g.Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "release-signing"},
		Data: map[string][]byte{"git.asc": private, "passphrase": []byte("s3cret")}})).To(Succeed())
	obj := newRelease(t, ns, repo, "app", pullRequestMode, func(o *v1alpha1.ImmutableRelease) {
		o.Spec.Rollback.SigningKeySecretRef = &meta.LocalObjectReference{Name: "release-signing"}
	})
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)

	bad := commit(t, repo, "Release a broken build", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+deadDigest)})
	reconcileNow(t, obj)
	cur := waitFor(t, obj, v1alpha1.RollbackPendingCondition, metav1.ConditionTrue, v1alpha1.PullRequestOpenedReason, time.Minute)
	branch := "immutable-release/revert-" + bad[:7]
	lr := cur.Status.LastRollback
	g.Expect(lr).NotTo(BeNil())
	g.Expect(lr.FailedRevision).To(Equal("main@sha1:" + bad))
	g.Expect(lr.PullRequestURL).To(Equal(gt.URL + "/" + fullName + "/pulls/1"))
	heads := remoteHeads(g, repo)
	g.Expect(heads).To(HaveLen(2))
	g.Expect(heads).To(HaveKeyWithValue("main", bad), "the branch itself is left alone")
	g.Expect(heads).To(HaveKeyWithValue(branch, lr.RevertCommit))
	g.Expect(condition(cur, v1alpha1.RolledBackCondition)).To(conditionIs(v1alpha1.PullRequestOpenedReason, metav1.ConditionUnknown))
	g.Expect(condition(cur, v1alpha1.RollbackPendingCondition).Message).To(ContainSubstring("merge it to roll back"))

	// The proposed commit is signed as a pushed revert is.
	g.Expect(repo.Git("fetch", "-q", "origin", branch)).To(Succeed())
	clone, err := gogit.PlainOpen(repo.Dir)
	g.Expect(err).NotTo(HaveOccurred())
	proposed, err := clone.CommitObject(plumbing.NewHash(lr.RevertCommit))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(proposed.PGPSignature).NotTo(BeEmpty(), "the proposed revert is unsigned")
	_, err = proposed.Verify(string(public))
	g.Expect(err).NotTo(HaveOccurred())

	prs := pulls(g, gt, fullName)
	g.Expect(prs).To(HaveLen(1))
	g.Expect(prs[0].Title).To(Equal(`Revert "Release a broken build"`))
	g.Expect(prs[0].Head.Ref).To(Equal(branch))
	g.Expect(prs[0].Body).To(ContainSubstring("did not become healthy within 5s"))
	g.Expect(prs[0].Body).To(ContainSubstring("This reverts commit " + bad + "."))
	g.Expect(prs[0].Body).To(ContainSubstring("Release: " + ns + "/shop\nFailed-Revision: " + bad))

	// The cluster stays on what Git says; the release reports the failure and the proposal.
	g.Expect(deploymentImage(g, ns, "web")).To(Equal("ghcr.io/acme/web@" + deadDigest))
	ready := condition(cur, meta.ReadyCondition)
	g.Expect(ready.Reason).To(Equal(v1alpha1.HealthCheckFailedReason))
	g.Expect(ready.Message).To(ContainSubstring("pull request " + lr.PullRequestURL + " proposes its revert"))
	checkKstatus(t, cur, status.FailedStatus)
	g.Eventually(func(g Gomega) {
		g.Expect(typedEvents(g, obj, "RollbackProposed")).To(ContainElement(And(
			HaveField("Type", corev1.EventTypeWarning), HaveField("Note", ContainSubstring("Opened pull request "+lr.PullRequestURL)))))
	}, 10*time.Second, 200*time.Millisecond).Should(Succeed())

	code, out, _ := kubectlRelease("status", "shop", "-n", ns)
	g.Expect(code).To(Equal(cli.ExitOK))
	g.Expect(out).To(ContainSubstring("Last rollback: main@sha1:" + bad + " failed, revert " + lr.RevertCommit + " proposed in " + lr.PullRequestURL + ", not merged yet"))

	// Reconciling again opens nothing more.
	reconcileNow(t, obj)
	g.Consistently(func(g Gomega) {
		g.Expect(pulls(g, gt, fullName)).To(HaveLen(1))
		g.Expect(remoteHeads(g, repo)).To(HaveLen(2))
	}, 3*time.Second, 500*time.Millisecond).Should(Succeed())

	// As after a crash between the push and the status update: the branch and the pull
	// request are found, not made again.
	g.Eventually(func() error {
		cur := get(g, obj)
		base := cur.DeepCopy()
		cur.Status.LastRollback = nil
		var kept []metav1.Condition
		for _, c := range cur.Status.Conditions {
			if c.Type != v1alpha1.RollbackPendingCondition && c.Type != v1alpha1.RolledBackCondition {
				kept = append(kept, c)
			}
		}
		cur.Status.Conditions = kept
		return k8s.Status().Patch(ctx, cur, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	reconcileNow(t, obj)
	cur = waitFor(t, obj, v1alpha1.RollbackPendingCondition, metav1.ConditionTrue, v1alpha1.PullRequestOpenedReason, time.Minute)
	g.Expect(cur.Status.LastRollback.PullRequestURL).To(Equal(lr.PullRequestURL))
	g.Expect(cur.Status.LastRollback.RevertCommit).To(Equal(lr.RevertCommit))
	g.Expect(pulls(g, gt, fullName)).To(HaveLen(1))
	g.Expect(remoteHeads(g, repo)).To(HaveLen(2))
	g.Eventually(func(g Gomega) {
		g.Expect(typedEvents(g, obj, "RollbackProposed")).To(ContainElement(And(
			HaveField("Type", corev1.EventTypeNormal), HaveField("Note", ContainSubstring("Found pull request "+lr.PullRequestURL)))))
	}, 10*time.Second, 200*time.Millisecond).Should(Succeed())

	// Merged through Gitea (as a person would): the revert is applied and Healthy.
	g.Eventually(func() error {
		return gt.API(ctx, http.MethodPost, fmt.Sprintf("/repos/%s/pulls/1/merge", fullName), map[string]any{"Do": "merge"}, nil)
	}, 30*time.Second, 500*time.Millisecond).Should(Succeed())
	g.Expect(repo.Git("pull", "-q", "--ff-only", "origin", "main")).To(Succeed())
	merge, err := repo.Head()
	g.Expect(err).NotTo(HaveOccurred())
	reconcileNow(t, obj) // what a push webhook does
	cur = waitFor(t, obj, v1alpha1.RollbackPendingCondition, metav1.ConditionFalse, v1alpha1.PullRequestMergedReason, time.Minute)
	g.Expect(cur.Status.LastAppliedRevision).To(Equal("main@sha1:" + merge))
	cur = waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	g.Expect(deploymentImage(g, ns, "web")).To(Equal(good))
	g.Expect(condition(cur, v1alpha1.RolledBackCondition)).To(conditionIs(v1alpha1.PullRequestMergedReason, metav1.ConditionTrue))
	g.Expect(cur.Status.History[0].Revision).To(Equal("main@sha1:" + merge))
	g.Expect(cur.Status.History[0].Result).To(Equal(v1alpha1.ReleaseHealthy))
	g.Expect(cur.Status.History[1].Revision).To(Equal("main@sha1:" + bad))
	g.Expect(cur.Status.History[1].Result).To(Equal(v1alpha1.ReleaseFailed))
	g.Expect(cur.Status.History[1].RevertedBy).To(Equal(lr.RevertCommit))
	g.Expect(cur.Status.Quarantine).To(ContainElement(HaveField("Digest", deadDigest)))
	checkKstatus(t, cur, status.CurrentStatus)
	g.Expect(pulls(g, gt, fullName)).To(HaveLen(1))
}

// TestPullRequestRollbackBadToken: without the token Secret, or with a token Gitea refuses,
// the rollback says so and pushes nothing; with a good token it proceeds.
func TestPullRequestRollbackBadToken(t *testing.T) {
	g := NewWithT(t)
	gt := startGitea(t)
	ns := newNamespace(t)
	repo, fullName := giteaRepo(t, gt, ns, "", sampleFiles("app", "ghcr.io/acme/web@"+digestV1))
	obj := newRelease(t, ns, repo, "app", pullRequestMode)
	waitFor(t, obj, meta.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciliationSucceededReason, time.Minute)
	commit(t, repo, "Release a broken build", map[string]string{"app/deployment.yaml": deploymentYAML("web", "ghcr.io/acme/web@"+deadDigest)})
	reconcileNow(t, obj)

	cur := waitFor(t, obj, meta.ReadyCondition, metav1.ConditionFalse, v1alpha1.PullRequestFailedReason, time.Minute)
	g.Expect(condition(cur, meta.ReadyCondition).Message).To(ContainSubstring(`secret "pr-token" not found in namespace "` + ns + `": create it with the gitea API token under the key "token"`))
	g.Expect(condition(cur, v1alpha1.RolledBackCondition)).To(conditionIs(v1alpha1.PullRequestFailedReason, metav1.ConditionFalse))
	checkKstatus(t, cur, status.InProgressStatus)

	g.Expect(k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "pr-token", Namespace: ns},
		StringData: map[string]string{"token": "0123456789abcdef0123456789abcdef01234567"},
	})).To(Succeed())
	reconcileNow(t, obj)
	g.Eventually(func(g Gomega) {
		msg := condition(get(g.(*WithT), obj), meta.ReadyCondition).Message
		g.Expect(msg).To(ContainSubstring(`the gitea API refused the token of secret "pr-token"`))
		g.Expect(msg).To(ContainSubstring("401 Unauthorized (the token was refused"))
	}, time.Minute, 200*time.Millisecond).Should(Succeed())
	g.Expect(remoteHeads(g, repo)).To(HaveLen(1), "nothing is pushed before the token is known good")
	g.Expect(pulls(g, gt, fullName)).To(BeEmpty())

	g.Eventually(func() error {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pr-token"}, s); err != nil {
			return err
		}
		s.Data = map[string][]byte{"token": []byte(gt.Token)}
		return k8s.Update(ctx, s)
	}, 10*time.Second).Should(Succeed())
	reconcileNow(t, obj)
	waitFor(t, obj, v1alpha1.RollbackPendingCondition, metav1.ConditionTrue, v1alpha1.PullRequestOpenedReason, time.Minute)
	g.Expect(pulls(g, gt, fullName)).To(HaveLen(1))
}

// TestPullRequestModeNeedsItsSettings: the API server refuses PullRequest mode without
// spec.rollback.pullRequest.
func TestPullRequestModeNeedsItsSettings(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	obj := &v1alpha1.ImmutableRelease{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns},
		Spec: v1alpha1.ImmutableReleaseSpec{
			Git:      v1alpha1.GitSource{URL: "http://127.0.0.1:1/acme/shop.git", Ref: v1alpha1.GitReference{Branch: "main"}},
			Rollback: &v1alpha1.RollbackSpec{Mode: v1alpha1.RollbackPullRequest},
		},
	}
	g.Expect(k8s.Create(ctx, obj)).To(MatchError(ContainSubstring("rollback.pullRequest is required when rollback.mode is PullRequest")))
	obj.Spec.Rollback.PullRequest = &v1alpha1.PullRequestSpec{Provider: "bitbucket", SecretRef: meta.LocalObjectReference{Name: "t"}}
	g.Expect(k8s.Create(ctx, obj)).To(MatchError(ContainSubstring(`Unsupported value: "bitbucket"`)))
}

// conditionIs matches a condition's reason and status.
func conditionIs(reason string, st metav1.ConditionStatus) OmegaMatcher {
	return And(HaveField("Reason", reason), HaveField("Status", st))
}

// typedEvents returns the release's events with reason, with their type.
func typedEvents(g Gomega, obj *v1alpha1.ImmutableRelease, reason string) []eventsv1.Event {
	var list eventsv1.EventList
	g.Expect(k8s.List(ctx, &list, client.InNamespace(obj.Namespace))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Reason == reason && e.Regarding.Name == obj.Name {
			out = append(out, e)
		}
	}
	return out
}
