// Package gitprovider opens pull requests (GitLab: merge requests) and posts commit
// statuses on the forges a release's repository can live on: GitHub, GitLab and Gitea. Each
// client speaks the forge's REST API over net/http, with an API token. Opening is
// idempotent: an open pull request from the same branch is found and returned instead of a
// second one.
package gitprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Providers this package has a client for.
const (
	GitHub = "github"
	GitLab = "gitlab"
	Gitea  = "gitea"
)

// PullRequest is an open pull request (GitLab: merge request).
type PullRequest struct {
	// Number is the pull request's number in its repository (GitLab: the iid).
	Number int
	// URL is its web page.
	URL string
	// Head is the branch it proposes; Base the branch it would be merged into.
	Head, Base string
}

// NewPullRequest is what to open.
type NewPullRequest struct {
	Head, Base  string
	Title, Body string
}

// Client talks to one repository on one forge.
type Client interface {
	// CheckAccess reads the repository with the token, so that a missing repository or a
	// refused token is reported before anything is pushed.
	CheckAccess(ctx context.Context) error
	// FindOpen returns the open pull request from head into base, or nil.
	FindOpen(ctx context.Context, head, base string) (*PullRequest, error)
	// Create opens a pull request.
	Create(ctx context.Context, pr NewPullRequest) (*PullRequest, error)
	// SetCommitStatus posts a status on commit sha; a later one of the same context
	// replaces it.
	SetCommitStatus(ctx context.Context, sha string, s CommitStatus) error
}

// Options configure a client.
type Options struct {
	// Provider is github, gitlab or gitea.
	Provider string
	// RepoURL is the repository's Git address (http, https or ssh); the repository's path
	// and, unless APIURL is set, the API's address are read from it.
	RepoURL string
	// APIURL is the API root, such as https://ghe.example.com/api/v3. Optional.
	APIURL string
	// Token is the API token.
	Token string
	// HTTPClient defaults to a client with a 30s timeout.
	HTTPClient *http.Client
}

// New returns the client for opts.Provider.
func New(opts Options) (Client, error) {
	if opts.Token == "" {
		return nil, errors.New("the API token is empty")
	}
	base, repo, err := Locate(opts.Provider, opts.RepoURL, opts.APIURL)
	if err != nil {
		return nil, err
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	a := &api{provider: opts.Provider, base: base, http: hc, header: http.Header{}}
	a.header.Set("User-Agent", "immutable-release-operator")
	a.header.Set("Accept", "application/json")
	switch opts.Provider {
	case GitHub:
		a.header.Set("Authorization", "Bearer "+opts.Token)
		a.header.Set("Accept", "application/vnd.github+json")
		a.header.Set("X-GitHub-Api-Version", "2022-11-28")
		return &github{api: a, repo: repo}, nil
	case GitLab:
		a.header.Set("PRIVATE-TOKEN", opts.Token)
		return &gitlab{api: a, project: url.PathEscape(repo)}, nil
	case Gitea:
		a.header.Set("Authorization", "token "+opts.Token)
		return &gitea{api: a, repo: repo}, nil
	}
	return nil, fmt.Errorf("unknown provider %q: use github, gitlab or gitea", opts.Provider)
}

// Open returns the open pull request from pr.Head into pr.Base, and opens it when there is
// none. existing says it was found rather than opened. A pull request opened meanwhile by
// someone else (the forge refuses a second one) is found and returned too.
func Open(ctx context.Context, c Client, pr NewPullRequest) (_ *PullRequest, existing bool, err error) {
	found, err := c.FindOpen(ctx, pr.Head, pr.Base)
	if err != nil {
		return nil, false, err
	}
	if found != nil {
		return found, true, nil
	}
	created, err := c.Create(ctx, pr)
	var apiErr *APIError
	if errors.As(err, &apiErr) && (apiErr.StatusCode == http.StatusConflict || apiErr.StatusCode == http.StatusUnprocessableEntity) {
		if found, ferr := c.FindOpen(ctx, pr.Head, pr.Base); ferr == nil && found != nil {
			return found, true, nil
		}
	}
	if err != nil {
		return nil, false, err
	}
	return created, false, nil
}

// Locate derives the API root and the repository's path (owner/name; for GitLab, with
// every group) from the repository's Git address and an optional API root.
func Locate(provider, repoURL, apiURL string) (base, repo string, err error) {
	u, err := url.Parse(repoURL)
	if err != nil {
		return "", "", fmt.Errorf("parsing the repository URL: %w", err)
	}
	scheme, host := u.Scheme, u.Host
	switch u.Scheme {
	case "http", "https":
	case "ssh":
		// The API is served over HTTPS on the same host, not on the SSH port.
		scheme, host = "https", u.Hostname()
	default:
		if apiURL == "" {
			return "", "", fmt.Errorf("cannot derive the %s API address from a %s:// URL: set spec.rollback.pullRequest.apiURL", provider, u.Scheme)
		}
	}
	path := strings.TrimSuffix(strings.Trim(u.Path, "/"), ".git")

	if apiURL != "" {
		a, err := url.Parse(apiURL)
		if err != nil || (a.Scheme != "http" && a.Scheme != "https") || a.Host == "" {
			return "", "", fmt.Errorf("apiURL %q is not an http(s) URL", apiURL)
		}
		base = strings.TrimSuffix(apiURL, "/")
		// A forge served under a sub-path (https://host/git/api/v1) serves its repositories
		// under the same sub-path: drop it from the repository's path.
		prefix := strings.Trim(a.Path, "/")
		for _, suffix := range []string{"api/v1", "api/v3", "api/v4"} {
			prefix = strings.Trim(strings.TrimSuffix(prefix, suffix), "/")
		}
		if prefix != "" && strings.HasPrefix(path, prefix+"/") {
			path = strings.TrimPrefix(path, prefix+"/")
		}
	}

	segments := strings.Split(path, "/")
	if path == "" || len(segments) < 2 {
		return "", "", fmt.Errorf("the repository URL %q does not name an owner and a repository", redact(repoURL))
	}
	switch provider {
	case GitHub, Gitea:
		// owner/name are the last two segments; anything before them is a sub-path.
		prefix := strings.Join(segments[:len(segments)-2], "/")
		repo = strings.Join(segments[len(segments)-2:], "/")
		if base == "" {
			switch {
			case provider == GitHub && (host == "github.com" || host == "www.github.com"):
				base = "https://api.github.com"
			case provider == GitHub:
				base = scheme + "://" + join(host, prefix, "api/v3")
			default:
				base = scheme + "://" + join(host, prefix, "api/v1")
			}
		}
	case GitLab:
		repo = path
		if base == "" {
			base = scheme + "://" + host + "/api/v4"
		}
	default:
		return "", "", fmt.Errorf("unknown provider %q: use github, gitlab or gitea", provider)
	}
	return base, repo, nil
}

func join(parts ...string) string {
	var kept []string
	for _, p := range parts {
		if p != "" {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, "/")
}

func redact(repoURL string) string {
	u, err := url.Parse(repoURL)
	if err != nil || u.User == nil {
		return repoURL
	}
	u.User = nil
	return u.String()
}

// APIError is an answer of the forge other than success.
type APIError struct {
	Provider   string
	Method     string
	URL        string
	StatusCode int
	// Message is what the forge said, when it said something.
	Message string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s %s: %s API answered %d %s", e.Method, e.URL, e.Provider, e.StatusCode, http.StatusText(e.StatusCode))
	switch e.StatusCode {
	case http.StatusUnauthorized:
		msg += " (the token was refused: is it valid and unexpired?)"
	case http.StatusForbidden:
		msg += " (the token lacks a permission)"
	case http.StatusNotFound:
		msg += " (no such repository, or the token cannot see it)"
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Unauthorized says whether the forge refused the token.
func (e *APIError) Unauthorized() bool { return e.StatusCode == http.StatusUnauthorized }

// api is the HTTP plumbing the clients share.
type api struct {
	provider string
	base     string
	header   http.Header
	http     *http.Client
}

// maxResponse bounds what is read of an answer.
const maxResponse = 4 << 20

// do sends a JSON request to base+path and decodes a JSON answer into out (if not nil).
func (a *api) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	target := a.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return err
	}
	req.Header = a.header.Clone()
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, a.base+path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, a.base+path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &APIError{Provider: a.provider, Method: method, URL: a.base + path, StatusCode: resp.StatusCode, Message: errorMessage(data)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, a.base+path, err)
	}
	return nil
}

// errorMessage reads the message of an error answer: {"message": ...} on all three forges
// (GitLab may give a list or an object there), {"error": ...} on GitLab, and GitHub's
// validation errors beside its message. Nothing else of the answer is shown: apiURL is the
// tenant's to choose, and an answer that is not a forge's error (an internal service's
// page) must not reach the release's status, which the tenant can read.
func errorMessage(data []byte) string {
	var e struct {
		Message json.RawMessage `json:"message"`
		Error   string          `json:"error"`
		Errors  []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(data, &e) != nil {
		return "the answer is not a forge's JSON error; its body is not shown"
	}
	var parts []string
	var s string
	var list []string
	var fields map[string][]string
	switch {
	case json.Unmarshal(e.Message, &s) == nil:
		parts = append(parts, s)
	case json.Unmarshal(e.Message, &list) == nil:
		parts = append(parts, list...)
	case json.Unmarshal(e.Message, &fields) == nil:
		// GitLab's validation errors: {"message": {"field": ["is invalid"]}}.
		for field, msgs := range fields {
			parts = append(parts, field+" "+strings.Join(msgs, ", "))
		}
		sort.Strings(parts)
	}
	if e.Error != "" {
		parts = append(parts, e.Error)
	}
	for _, v := range e.Errors {
		if v.Message != "" {
			parts = append(parts, v.Message)
		}
	}
	return truncate(strings.Join(parts, "; "), 300)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
