package git

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/memfs"
	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"
)

// RevertRequest asks for the commits after Healthy up to Failed that changed Path to be
// reverted, under Path only, on Branch.
type RevertRequest struct {
	URL    string
	Branch string
	Auth   *Auth
	// Path is the release's folder, relative to the repository root ("" or "." for all).
	Path string
	// Healthy is the last revision known healthy; Failed the revision that failed.
	Healthy, Failed string
	// Release is namespace/name, written as a trailer.
	Release string
	// Reason is the health verdict, written as a trailer.
	Reason      string
	AuthorName  string
	AuthorEmail string
	// PushBranch, when set, is a new branch the revert commit is pushed to instead of
	// Branch: the commit is still made on Branch's head (see ProposeRevert).
	PushBranch string
}

// RevertResult is the revert commit on the branch.
type RevertResult struct {
	Commit string
	// Reverted are the commits reverted, newest first.
	Reverted []Commit
	// Existing is true when an earlier revert for the same failed revision was found on the
	// branch (after a crash between push and status update, say): nothing was pushed.
	Existing bool
}

// ErrFixedForward: commits after the failed revision already changed the path. The new head
// is what to apply; a revert would throw that work away.
var ErrFixedForward = errors.New("the branch moved on: commits after the failed revision changed the path")

// Trailers the revert commit carries; the first two also find it again.
const (
	TrailerRelease        = "Release"
	TrailerFailedRevision = "Failed-Revision"
	TrailerReason         = "Reason"
)

// maxPushAttempts bounds the retries when the branch moves while the revert is pushed.
const maxPushAttempts = 3

// Revert makes and pushes the revert: the path's files go back to what they were at the
// healthy revision, and nothing outside the path changes. It is idempotent: a revert for
// the same release and failed revision already on the branch is returned, not repeated.
// When the branch moves during the push it starts again from the new head (bounded).
func (c *Cache) Revert(ctx context.Context, req RevertRequest) (*RevertResult, error) {
	var lastErr error
	for attempt := 0; attempt < maxPushAttempts; attempt++ {
		res, err := c.revertOnce(ctx, req)
		if err == nil || !errors.Is(err, errNonFastForward) {
			return res, err
		}
		lastErr = err
	}
	return nil, fmt.Errorf("the branch kept moving during %d attempts to push the revert: %w", maxPushAttempts, lastErr)
}

var errNonFastForward = errors.New("non-fast-forward")

func (c *Cache) revertOnce(ctx context.Context, req RevertRequest) (*RevertResult, error) {
	fs := memfs.New()
	repo, err := gogit.CloneContext(ctx, memory.NewStorage(), fs, &gogit.CloneOptions{
		URL:           req.URL,
		Auth:          req.Auth.Method,
		ReferenceName: plumbing.NewBranchReferenceName(req.Branch),
		SingleBranch:  true,
		Tags:          gogit.NoTags,
	})
	if err != nil {
		return nil, fmt.Errorf("cloning %s for the revert: %w", Redact(req.URL), err)
	}
	headRef, err := repo.Head()
	if err != nil {
		return nil, err
	}
	head, err := repo.CommitObject(headRef.Hash())
	if err != nil {
		return nil, err
	}
	prefix := cleanPrefix(req.Path)

	// Walk the first-parent history from the head: find an earlier revert, and whether
	// anything after the failed revision changed the path.
	var after []*object.Commit
	found := false
	for cur := head; cur != nil; cur = firstParent(repo, cur) {
		if cur.Hash.String() == req.Failed {
			found = true
			break
		}
		if isRevertOf(cur, req.Release, req.Failed) {
			return &RevertResult{Commit: cur.Hash.String(), Existing: true}, nil
		}
		after = append(after, cur)
	}
	if !found {
		return nil, fmt.Errorf("revision %s is not in the first-parent history of branch %s (was it force-pushed away?)", req.Failed, req.Branch)
	}
	for _, c := range after {
		if changed, err := touches(repo, c, prefix); err != nil {
			return nil, err
		} else if changed {
			return nil, ErrFixedForward
		}
	}

	// The commits to revert: from the failed revision back to the healthy one.
	failed, err := repo.CommitObject(plumbing.NewHash(req.Failed))
	if err != nil {
		return nil, err
	}
	var reverted []Commit
	healthyFound := false
	for cur := failed; cur != nil; cur = firstParent(repo, cur) {
		if cur.Hash.String() == req.Healthy {
			healthyFound = true
			break
		}
		if changed, err := touches(repo, cur, prefix); err != nil {
			return nil, err
		} else if changed {
			reverted = append(reverted, describe(cur))
		}
	}
	if !healthyFound {
		return nil, fmt.Errorf("the healthy revision %s is not in the first-parent history before %s", req.Healthy, req.Failed)
	}
	if len(reverted) == 0 {
		return nil, fmt.Errorf("no commit between %s and %s changed %q: nothing to revert", short(req.Healthy), short(req.Failed), req.Path)
	}

	// Nothing after the failed revision changed the path, so the head's files under it are
	// the failed revision's: putting back the healthy revision's files is the revert.
	healthy, err := repo.CommitObject(plumbing.NewHash(req.Healthy))
	if err != nil {
		return nil, err
	}
	want, err := filesUnder(healthy, prefix)
	if err != nil {
		return nil, err
	}
	have, err := filesUnder(head, prefix)
	if err != nil {
		return nil, err
	}
	wt, err := repo.Worktree()
	if err != nil {
		return nil, err
	}
	for name := range have {
		if _, keep := want[name]; !keep {
			if _, err := wt.Remove(name); err != nil {
				return nil, fmt.Errorf("removing %s: %w", name, err)
			}
		}
	}
	for name, content := range want {
		if have[name] == content {
			continue
		}
		if err := writeFile(fs, name, content); err != nil {
			return nil, err
		}
		if _, err := wt.Add(name); err != nil {
			return nil, fmt.Errorf("adding %s: %w", name, err)
		}
	}
	sig := &object.Signature{Name: req.AuthorName, Email: req.AuthorEmail, When: time.Now()}
	hash, err := wt.Commit(revertMessage(req, reverted), &gogit.CommitOptions{Author: sig, Committer: sig})
	if err != nil {
		return nil, fmt.Errorf("committing the revert: %w", err)
	}
	target := req.Branch
	if req.PushBranch != "" {
		target = req.PushBranch
	}
	err = repo.PushContext(ctx, &gogit.PushOptions{
		Auth:     req.Auth.Method,
		RefSpecs: []config.RefSpec{config.RefSpec(fmt.Sprintf("refs/heads/%s:refs/heads/%s", req.Branch, target))},
	})
	if err != nil {
		if errors.Is(err, gogit.ErrNonFastForwardUpdate) || strings.Contains(err.Error(), "non-fast-forward") || strings.Contains(err.Error(), "fetch first") {
			return nil, fmt.Errorf("%w: %v", errNonFastForward, err)
		}
		return nil, fmt.Errorf("pushing the revert to %s: %w", Redact(req.URL), err)
	}
	return &RevertResult{Commit: hash.String(), Reverted: reverted}, nil
}

// revertMessage is in git's own form, with trailers that say why and find it again.
func revertMessage(req RevertRequest, reverted []Commit) string {
	var b strings.Builder
	if len(reverted) == 1 {
		fmt.Fprintf(&b, "Revert %q\n\n", reverted[0].Subject)
	} else {
		fmt.Fprintf(&b, "Revert %q and %d more\n\n", reverted[0].Subject, len(reverted)-1)
	}
	for _, c := range reverted {
		fmt.Fprintf(&b, "This reverts commit %s.\n", c.Hash)
	}
	reason := strings.Join(strings.Fields(req.Reason), " ")
	fmt.Fprintf(&b, "\n%s: %s\n%s: %s\n%s: %s\n", TrailerRelease, req.Release, TrailerFailedRevision, req.Failed, TrailerReason, reason)
	return b.String()
}

// RevertTrailers returns the release and failed revision named by a revert commit's
// trailers, or empty strings for any other commit.
func RevertTrailers(message string) (release, failed string) {
	for _, line := range strings.Split(message, "\n") {
		if v, ok := strings.CutPrefix(line, TrailerRelease+": "); ok {
			release = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, TrailerFailedRevision+": "); ok {
			failed = strings.TrimSpace(v)
		}
	}
	if release == "" || failed == "" {
		return "", ""
	}
	return release, failed
}

// isRevertOf says whether c is a revert made for release after failed failed.
func isRevertOf(c *object.Commit, release, failed string) bool {
	return strings.Contains(c.Message, "\n"+TrailerRelease+": "+release+"\n") &&
		strings.Contains(c.Message, "\n"+TrailerFailedRevision+": "+failed+"\n")
}

func firstParent(repo *gogit.Repository, c *object.Commit) *object.Commit {
	if len(c.ParentHashes) == 0 {
		return nil
	}
	p, err := repo.CommitObject(c.ParentHashes[0])
	if err != nil {
		return nil
	}
	return p
}

// touches says whether c changed a file under prefix, compared with its first parent.
func touches(repo *gogit.Repository, c *object.Commit, prefix string) (bool, error) {
	mine, err := filesUnder(c, prefix)
	if err != nil {
		return false, err
	}
	parent := firstParent(repo, c)
	theirs := map[string]string{}
	if parent != nil {
		if theirs, err = filesUnder(parent, prefix); err != nil {
			return false, err
		}
	}
	if len(mine) != len(theirs) {
		return true, nil
	}
	for k, v := range mine {
		if theirs[k] != v {
			return true, nil
		}
	}
	return false, nil
}

// filesUnder maps each file under prefix to its content.
func filesUnder(c *object.Commit, prefix string) (map[string]string, error) {
	tree, err := c.Tree()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	err = tree.Files().ForEach(func(f *object.File) error {
		if prefix == "" || f.Name == prefix || strings.HasPrefix(f.Name, prefix+"/") {
			content, err := f.Contents()
			if err != nil {
				return err
			}
			out[f.Name] = content
		}
		return nil
	})
	return out, err
}

// writeFile writes content to name in the worktree's file system.
func writeFile(fs billy.Filesystem, name, content string) error {
	if err := fs.MkdirAll(path.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := fs.Create(name)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, content); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func cleanPrefix(p string) string {
	p = path.Clean("/" + strings.TrimSpace(p))
	return strings.TrimPrefix(p, "/")
}

func short(h string) string {
	if len(h) > 7 {
		return h[:7]
	}
	return h
}
