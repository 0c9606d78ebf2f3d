package gitprovider

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// gitea speaks Gitea's (and Forgejo's) API v1.
type gitea struct {
	*api
	repo string // owner/name
}

type giteaPull struct {
	Number  int    `json:"number"`
	HTMLURL string `json:"html_url"`
	Head    struct {
		Ref    string `json:"ref"`
		RepoID int64  `json:"repo_id"`
	} `json:"head"`
	Base struct {
		Ref    string `json:"ref"`
		RepoID int64  `json:"repo_id"`
	} `json:"base"`
}

func (p giteaPull) pullRequest() *PullRequest {
	return &PullRequest{Number: p.Number, URL: p.HTMLURL, Head: p.Head.Ref, Base: p.Base.Ref}
}

func (c *gitea) CheckAccess(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/repos/"+c.repo, nil, nil, nil)
}

// giteaPageSize is the page size asked for; Gitea caps it at its MAX_RESPONSE_ITEMS (50).
const giteaPageSize = 50

// maxPages bounds the pages of open pull requests looked through.
const maxPages = 20

// FindOpen lists the open pull requests, since Gitea's list has no head filter, and picks
// the one from head into base within the same repository.
func (c *gitea) FindOpen(ctx context.Context, head, base string) (*PullRequest, error) {
	for page := 1; page <= maxPages; page++ {
		var pulls []giteaPull
		q := url.Values{"state": {"open"}, "limit": {strconv.Itoa(giteaPageSize)}, "page": {strconv.Itoa(page)}}
		if err := c.do(ctx, http.MethodGet, "/repos/"+c.repo+"/pulls", q, nil, &pulls); err != nil {
			return nil, err
		}
		for _, p := range pulls {
			if p.Head.Ref == head && p.Base.Ref == base && p.Head.RepoID == p.Base.RepoID {
				return p.pullRequest(), nil
			}
		}
		if len(pulls) == 0 {
			return nil, nil
		}
	}
	return nil, nil
}

func (c *gitea) Create(ctx context.Context, pr NewPullRequest) (*PullRequest, error) {
	in := map[string]string{"head": pr.Head, "base": pr.Base, "title": pr.Title, "body": pr.Body}
	var out giteaPull
	if err := c.do(ctx, http.MethodPost, "/repos/"+c.repo+"/pulls", nil, in, &out); err != nil {
		return nil, err
	}
	return out.pullRequest(), nil
}
