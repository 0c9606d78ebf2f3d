package gitprovider

import (
	"context"
	"net/http"
	"net/url"
	"strings"
)

// github speaks the GitHub REST API (github.com and GitHub Enterprise Server).
type github struct {
	*api
	repo string // owner/name
}

type githubPull struct {
	Number  int    `json:"number"`
	HTMLURL string `json:"html_url"`
	Head    struct {
		Ref string `json:"ref"`
	} `json:"head"`
	Base struct {
		Ref string `json:"ref"`
	} `json:"base"`
}

func (p githubPull) pullRequest() *PullRequest {
	return &PullRequest{Number: p.Number, URL: p.HTMLURL, Head: p.Head.Ref, Base: p.Base.Ref}
}

func (c *github) CheckAccess(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/repos/"+c.repo, nil, nil, nil)
}

// FindOpen filters on the server: head is "owner:branch" for a branch of the same
// repository.
func (c *github) FindOpen(ctx context.Context, head, base string) (*PullRequest, error) {
	owner, _, _ := strings.Cut(c.repo, "/")
	q := url.Values{"state": {"open"}, "head": {owner + ":" + head}, "base": {base}, "per_page": {"100"}}
	var pulls []githubPull
	if err := c.do(ctx, http.MethodGet, "/repos/"+c.repo+"/pulls", q, nil, &pulls); err != nil {
		return nil, err
	}
	for _, p := range pulls {
		if p.Head.Ref == head && p.Base.Ref == base {
			return p.pullRequest(), nil
		}
	}
	return nil, nil
}

func (c *github) Create(ctx context.Context, pr NewPullRequest) (*PullRequest, error) {
	in := map[string]any{"head": pr.Head, "base": pr.Base, "title": pr.Title, "body": pr.Body, "maintainer_can_modify": true}
	var out githubPull
	if err := c.do(ctx, http.MethodPost, "/repos/"+c.repo+"/pulls", nil, in, &out); err != nil {
		return nil, err
	}
	return out.pullRequest(), nil
}
