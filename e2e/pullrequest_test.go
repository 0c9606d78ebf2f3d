//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/immutable-release/operator/internal/testgit"
	"github.com/immutable-release/operator/internal/testgitea"
)

// A real Gitea, started by the first story that needs it and stopped after the last one.
var giteaServer testgitea.Shared

// giteaStory is a story whose repository is on Gitea, not yet released: the story and the
// repository's name.
func giteaStory(t *testing.T, gt *testgitea.Server) (*story, string) {
	t.Helper()
	n := seq.Add(1)
	name := fmt.Sprintf("shop-%d", n)
	url, err := gt.CreateRepo(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := testgit.NewClone(filepath.Join(t.TempDir(), name), url, gt.PushURL(name), "main")
	if err != nil {
		t.Fatal(err)
	}
	return &story{t: t, ns: fmt.Sprintf("e2e-%d", n), repo: repo, url: url}, name
}

func gitea(t *testing.T) *testgitea.Server {
	t.Helper()
	gt, err := giteaServer.Get(context.Background())
	if err != nil {
		t.Fatalf("starting Gitea: %v", err)
	}
	return gt
}

// specRollbackPullRequestOnGitea: a team that reviews every change to production. The
// repository lives on Gitea, which announces pushes to the operator's webhook receiver. A
// broken digest is pushed with git; the rollout fails; the operator proposes the revert as a
// pull request and leaves the cluster on what the branch says. A person merges it in
// Gitea; Gitea's push webhook brings the revert to the cluster.
func specRollbackPullRequestOnGitea(t *testing.T) {
	gt := gitea(t)
	ctx := context.Background()
	s, name := giteaStory(t, gt)
	full := gt.User + "/" + name
	// Gitea posts its signed push events to the namespace's Receiver (created with the
	// release), as a repository owner sets up.
	s.must(gt.API(ctx, http.MethodPost, "/repos/"+full+"/hooks", map[string]any{
		"type": "gitea", "active": true, "events": []string{"push"}, "branch_filter": "*",
		"config": map[string]string{"url": s.hookURL(), "content_type": "json", "secret": webhookSecret},
	}, nil))

	s.release("5s", gt.User, gt.Password, "rollback: {mode: PullRequest, pullRequest: {provider: gitea, secretRef: {name: pr-token}}}")
	s.kubectl("-n", s.ns, "create", "secret", "generic", "pr-token", "--from-literal=token="+gt.Token)
	s.must(gt.WaitForBranch(ctx, name, "main"))
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=2m")

	// No manual webhook call and an interval of an hour: Gitea's own push event does it.
	bad := s.push("Release a broken build", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + dead)})
	s.eventually(time.Minute, func() string {
		if r := s.condition("RollbackPending", "reason"); r != "PullRequestOpened" {
			return "RollbackPending reason is " + r + "; operator log: " + env.operator.log
		}
		return ""
	})
	var pulls []struct {
		Number int    `json:"number"`
		Title  string `json:"title"`
		State  string `json:"state"`
		Head   struct {
			Ref string `json:"ref"`
		} `json:"head"`
	}
	s.must(gt.API(ctx, http.MethodGet, "/repos/"+full+"/pulls?state=all", nil, &pulls))
	if len(pulls) != 1 || pulls[0].Head.Ref != "immutable-release/revert-"+bad[:7] || pulls[0].Title != `Revert "Release a broken build"` {
		t.Fatalf("want one pull request from immutable-release/revert-%s, got %+v", bad[:7], pulls)
	}
	if head, _ := s.repo.Output("ls-remote", "origin", "refs/heads/main"); !strings.HasPrefix(head, bad) {
		t.Fatalf("the branch moved without the pull request being merged: %s", head)
	}
	if img := s.image(); img != "ghcr.io/acme/web@"+dead {
		t.Fatalf("the cluster left what Git says before the merge: %s", img)
	}
	status, err := kubectlRelease("status", "shop", "-n", s.ns)
	s.must(err)
	if !strings.Contains(status, "not merged yet") {
		t.Fatalf("kubectl release status does not show the proposal:\n%s", status)
	}

	// A reviewer merges it in Gitea (which may still be checking that it merges cleanly).
	s.eventually(30*time.Second, func() string {
		err := gt.API(ctx, http.MethodPost, fmt.Sprintf("/repos/%s/pulls/%d/merge", full, pulls[0].Number), map[string]any{"Do": "merge"}, nil)
		if err != nil {
			return err.Error()
		}
		return ""
	})
	s.eventually(time.Minute, func() string {
		if r := s.condition("RolledBack", "reason"); r != "PullRequestMerged" {
			return "RolledBack reason is " + r
		}
		if img := s.image(); img != "ghcr.io/acme/web@"+digestV1 {
			return "the Deployment runs " + img
		}
		return ""
	})
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=1m")
	s.kubectl("-n", s.ns, "wait", "--for=condition=Available", "deployment/web", "--timeout=1m")
	if r := s.condition("RollbackPending", "status"); r != "False" {
		t.Fatalf("RollbackPending is %q after the merge", r)
	}
}

func TestRollbackPullRequestOnGitea(t *testing.T) { specRollbackPullRequestOnGitea(t) }
