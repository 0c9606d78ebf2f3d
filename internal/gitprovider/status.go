package gitprovider

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// Commit status states, as GitHub and Gitea name them; the GitLab client translates.
const (
	StatePending = "pending"
	StateSuccess = "success"
	StateFailure = "failure"
)

// CommitStatus is a status to post on a commit.
type CommitStatus struct {
	// State is StatePending, StateSuccess or StateFailure.
	State string
	// Context names the status, so that a later one for the same context replaces it.
	Context string
	// Description says why, in a line; forges cap it (GitHub at 140 characters).
	Description string
	// TargetURL is where the status links to; optional.
	TargetURL string
}

// maxDescription is GitHub's limit on a commit status description, the lowest of the three.
const maxDescription = 140

// description is the description in one line of at most maxDescription characters (runes,
// as forges count them): a message naming objects or quoting a custom resource's status may
// hold any text, and is never cut inside a character.
func (s CommitStatus) description() string {
	d := strings.Join(strings.Fields(s.Description), " ")
	if r := []rune(d); len(r) > maxDescription {
		d = string(r[:maxDescription-3]) + "..."
	}
	return d
}

func (c *github) SetCommitStatus(ctx context.Context, sha string, s CommitStatus) error {
	in := map[string]string{"state": s.State, "context": s.Context, "description": s.description(), "target_url": s.TargetURL}
	return c.do(ctx, http.MethodPost, "/repos/"+c.repo+"/statuses/"+url.PathEscape(sha), nil, in, nil)
}

func (c *gitea) SetCommitStatus(ctx context.Context, sha string, s CommitStatus) error {
	in := map[string]string{"state": s.State, "context": s.Context, "description": s.description(), "target_url": s.TargetURL}
	return c.do(ctx, http.MethodPost, "/repos/"+c.repo+"/statuses/"+url.PathEscape(sha), nil, in, nil)
}

// gitlabStates maps the states to GitLab's pipeline states.
var gitlabStates = map[string]string{StatePending: "pending", StateSuccess: "success", StateFailure: "failed"}

// SetCommitStatus posts an external pipeline status. GitLab refuses to move a status to the
// state it is in already ("Cannot transition status via :enqueue from :pending"): posted
// before, by a run whose record of it was lost, which is what was asked.
func (c *gitlab) SetCommitStatus(ctx context.Context, sha string, s CommitStatus) error {
	in := map[string]string{"state": gitlabStates[s.State], "name": s.Context, "description": s.description(), "target_url": s.TargetURL}
	err := c.do(ctx, http.MethodPost, "/projects/"+c.project+"/statuses/"+url.PathEscape(sha), nil, in, nil)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusBadRequest && strings.Contains(apiErr.Message, "Cannot transition status") {
		return nil
	}
	return err
}

// CommitURL is the web page of commit sha in the repository at repoURL, for a status or an
// event to link to: "" when the repository's web address cannot be derived (a file:// URL).
func CommitURL(provider, repoURL, sha string) string {
	u, err := url.Parse(repoURL)
	if err != nil || sha == "" {
		return ""
	}
	scheme, host := u.Scheme, u.Host
	switch u.Scheme {
	case "http", "https":
	case "ssh":
		scheme, host = "https", u.Hostname()
	default:
		return ""
	}
	web := scheme + "://" + host + "/" + strings.TrimSuffix(strings.Trim(u.Path, "/"), ".git")
	if provider == GitLab {
		return web + "/-/commit/" + sha
	}
	return web + "/commit/" + sha
}
