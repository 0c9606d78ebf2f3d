package gitprovider

import (
	"testing"

	. "github.com/onsi/gomega"
)

func TestLocate(t *testing.T) {
	cases := []struct {
		name, provider, repoURL, apiURL string
		base, repo, err                 string
	}{
		{name: "github.com", provider: GitHub, repoURL: "https://github.com/acme/shop.git", base: "https://api.github.com", repo: "acme/shop"},
		{name: "github.com over ssh", provider: GitHub, repoURL: "ssh://git@github.com/acme/shop.git", base: "https://api.github.com", repo: "acme/shop"},
		{name: "GitHub Enterprise", provider: GitHub, repoURL: "https://ghe.example.com/acme/shop", base: "https://ghe.example.com/api/v3", repo: "acme/shop"},
		{name: "GitHub Enterprise, API given", provider: GitHub, repoURL: "ssh://git@ghe.example.com:2222/acme/shop.git",
			apiURL: "https://ghe.example.com/api/v3/", base: "https://ghe.example.com/api/v3", repo: "acme/shop"},
		{name: "gitlab.com nested groups", provider: GitLab, repoURL: "https://gitlab.com/platform/apps/shop.git", base: "https://gitlab.com/api/v4", repo: "platform/apps/shop"},
		{name: "self-hosted GitLab over ssh on a port", provider: GitLab, repoURL: "ssh://git@gitlab.example.com:2222/team/shop.git", base: "https://gitlab.example.com/api/v4", repo: "team/shop"},
		{name: "GitLab under a sub-path, API given", provider: GitLab, repoURL: "https://example.com/gitlab/team/shop.git",
			apiURL: "https://example.com/gitlab/api/v4", base: "https://example.com/gitlab/api/v4", repo: "team/shop"},
		{name: "Gitea on a port over http", provider: Gitea, repoURL: "http://127.0.0.1:3000/imr-admin/shop.git", base: "http://127.0.0.1:3000/api/v1", repo: "imr-admin/shop"},
		{name: "Gitea under a sub-path", provider: Gitea, repoURL: "https://example.com/git/acme/shop.git", base: "https://example.com/git/api/v1", repo: "acme/shop"},
		{name: "file URL without API", provider: Gitea, repoURL: "file:///srv/git/shop.git", err: "set spec.rollback.pullRequest.apiURL"},
		{name: "no owner", provider: GitHub, repoURL: "https://github.com/shop.git", err: "does not name an owner and a repository"},
		{name: "bad API URL", provider: Gitea, repoURL: "https://example.com/a/b.git", apiURL: "ftp://example.com", err: "is not an http(s) URL"},
		{name: "unknown provider", provider: "bitbucket", repoURL: "https://bitbucket.org/a/b.git", err: `unknown provider "bitbucket"`},
		{name: "credentials are not echoed", provider: GitHub, repoURL: "https://user:secret@github.com/shop", err: "https://github.com/shop"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			base, repo, err := Locate(tc.provider, tc.repoURL, tc.apiURL)
			if tc.err != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tc.err)))
				g.Expect(err.Error()).NotTo(ContainSubstring("secret"))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(base).To(Equal(tc.base))
			g.Expect(repo).To(Equal(tc.repo))
		})
	}
}

func TestNewRefusesAnEmptyToken(t *testing.T) {
	_, err := New(Options{Provider: Gitea, RepoURL: "http://127.0.0.1:3000/a/b.git"})
	NewWithT(t).Expect(err).To(MatchError("the API token is empty"))
}

// TestErrorMessageKeepsBodiesOut: an apiURL that points at an internal service gets its
// answer into no message; a forge's JSON error still reads as the forge wrote it.
func TestErrorMessageKeepsBodiesOut(t *testing.T) {
	g := NewWithT(t)
	secret := "internal-admin-password-123"
	g.Expect(errorMessage([]byte("<html><body>metadata: " + secret + "</body></html>"))).NotTo(ContainSubstring(secret))
	g.Expect(errorMessage([]byte(`{"token": "` + secret + `"}`))).NotTo(ContainSubstring(secret))
	g.Expect(errorMessage([]byte(`{"message": {"nested": {"deep": "` + secret + `"}}}`))).NotTo(ContainSubstring(secret))
	g.Expect(errorMessage([]byte(`{"message": "Bad credentials"}`))).To(Equal("Bad credentials"))
	g.Expect(errorMessage([]byte(`{"message": ["Another open merge request already exists"]}`))).To(Equal("Another open merge request already exists"))
	g.Expect(errorMessage([]byte(`{"message": {"source_branch": ["is invalid"]}}`))).To(Equal("source_branch is invalid"))
	g.Expect(errorMessage([]byte(`{"message": "Validation Failed", "errors": [{"message": "A pull request already exists"}]}`))).To(Equal("Validation Failed; A pull request already exists"))
}
