package gitprovider

import (
	"context"
	"net/http"
	"net/url"
)

// gitlab speaks the GitLab REST API v4, where pull requests are merge requests.
type gitlab struct {
	*api
	// project is the URL-encoded path with namespace, such as group%2Fsub%2Fname.
	project string
}

type gitlabMergeRequest struct {
	IID          int    `json:"iid"`
	WebURL       string `json:"web_url"`
	SourceBranch string `json:"source_branch"`
	TargetBranch string `json:"target_branch"`
}

func (m gitlabMergeRequest) pullRequest() *PullRequest {
	return &PullRequest{Number: m.IID, URL: m.WebURL, Head: m.SourceBranch, Base: m.TargetBranch}
}

func (c *gitlab) CheckAccess(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/projects/"+c.project, nil, nil, nil)
}

func (c *gitlab) FindOpen(ctx context.Context, head, base string) (*PullRequest, error) {
	q := url.Values{"state": {"opened"}, "source_branch": {head}, "target_branch": {base}}
	var mrs []gitlabMergeRequest
	if err := c.do(ctx, http.MethodGet, "/projects/"+c.project+"/merge_requests", q, nil, &mrs); err != nil {
		return nil, err
	}
	for _, m := range mrs {
		if m.SourceBranch == head && m.TargetBranch == base {
			return m.pullRequest(), nil
		}
	}
	return nil, nil
}

// Create opens a merge request that deletes its branch once merged: the branch only
// carries the revert.
func (c *gitlab) Create(ctx context.Context, pr NewPullRequest) (*PullRequest, error) {
	in := map[string]any{"source_branch": pr.Head, "target_branch": pr.Base, "title": pr.Title,
		"description": pr.Body, "remove_source_branch": true}
	var out gitlabMergeRequest
	if err := c.do(ctx, http.MethodPost, "/projects/"+c.project+"/merge_requests", nil, in, &out); err != nil {
		return nil, err
	}
	return out.pullRequest(), nil
}
