package git

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
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
	// SignKey, when set, signs the revert commit (OpenPGP, as git commit -S).
	SignKey *openpgp.Entity
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

// ErrFixedForward: commits pushed while the revert was being pushed changed the path, or
// commits after the failed revision already undid its changes under the
// path (fixed forward, or reverted by hand): the revert would change nothing. The new head is
// what to apply.
var ErrFixedForward = errors.New("the branch moved on: commits after the failed revision already undid its changes under the path")

// Trailers the revert commit carries; the first two also find it again.
const (
	TrailerRelease        = "Release"
	TrailerFailedRevision = "Failed-Revision"
	TrailerReason         = "Reason"
)

// maxPushAttempts bounds the retries when the branch moves while the revert is pushed.
const maxPushAttempts = 3

// Revert makes and pushes the revert: each commit after the healthy revision up to the failed
// one that changed the path has its changes under the path undone on the branch head, as
// `git revert` would, and nothing outside the path changes. Later commits' changes stay;
// when they changed the same lines, a *ConflictError is returned and nothing is pushed. It is idempotent: a revert for
// the same release and failed revision already on the branch is returned, not repeated.
// When the branch moves during the push it starts again from the new head (bounded).
func (c *Cache) Revert(ctx context.Context, req RevertRequest) (*RevertResult, error) {
	var lastErr error
	seenHead := ""
	for attempt := 0; attempt < maxPushAttempts; attempt++ {
		res, err := c.revertOnce(ctx, req, seenHead, &seenHead)
		if err == nil || !errors.Is(err, errNonFastForward) {
			return res, err
		}
		lastErr = err
	}
	return nil, fmt.Errorf("the branch kept moving during %d attempts to push the revert: %w", maxPushAttempts, lastErr)
}

var errNonFastForward = errors.New("non-fast-forward")

// revertOnce builds and pushes the revert on the branch head, and reports that head in
// *head. seenHead is the head of an attempt whose push the branch outran: if the commits
// pushed since changed the path, someone fixed forward while the revert was being pushed,
// and the rollback is dropped (ErrFixedForward) for the new head to be applied instead.
func (c *Cache) revertOnce(ctx context.Context, req RevertRequest, seenHead string, headOut *string) (*RevertResult, error) {
	if err := c.checkRevert(req); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.stats.Reverts++
	c.mu.Unlock()
	// Built in the shared store of the URL and credentials, not in a clone in memory: the
	// history is on disk and mostly there already, so only what is new is fetched, and a
	// long history is never held in memory. The store is locked until the push is done.
	r, err := c.repository(req.URL, req.Auth)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := c.fetch(ctx, r, req.URL, Reference{Branch: req.Branch}, req.Auth); err != nil {
		return nil, fmt.Errorf("reading branch %s for the revert: %w", req.Branch, err)
	}
	repo := r.repo
	headRef, err := repo.Reference(plumbing.NewRemoteReferenceName(gogit.DefaultRemoteName, req.Branch), true)
	if err != nil {
		return nil, fmt.Errorf("reading branch %s of %s: %w", req.Branch, Redact(req.URL), err)
	}
	head, err := repo.CommitObject(headRef.Hash())
	if err != nil {
		return nil, err
	}
	*headOut = head.Hash.String()
	prefix := cleanPrefix(req.Path)

	// Walk the first-parent history from the head: find an earlier revert, and the commits
	// made after the failed revision.
	var after []*object.Commit
	found := false
	for cur := head; cur != nil; {
		if cur.Hash.String() == req.Failed {
			found = true
			break
		}
		if isRevertOf(cur, req.Release, req.Failed) {
			return &RevertResult{Commit: cur.Hash.String(), Existing: true}, nil
		}
		after = append(after, cur)
		if cur, err = firstParent(repo, cur); err != nil {
			return nil, err
		}
	}
	if !found {
		return nil, fmt.Errorf("revision %s is not in the first-parent history of branch %s (was it force-pushed away?)", req.Failed, req.Branch)
	}
	if seenHead != "" {
		for _, c := range after {
			if c.Hash.String() == seenHead {
				break
			}
			if changed, err := touches(repo, c, prefix); err != nil {
				return nil, err
			} else if changed {
				return nil, ErrFixedForward
			}
		}
	}
	laterChangedPath := false
	for _, c := range after {
		if changed, err := touches(repo, c, prefix); err != nil {
			return nil, err
		} else if changed {
			laterChangedPath = true
			break
		}
	}

	// The commits to revert: from the failed revision back to the healthy one.
	failed, err := repo.CommitObject(plumbing.NewHash(req.Failed))
	if err != nil {
		return nil, err
	}
	var toRevert []*object.Commit
	healthyFound := false
	for cur := failed; cur != nil; {
		if cur.Hash.String() == req.Healthy {
			healthyFound = true
			break
		}
		if changed, err := touches(repo, cur, prefix); err != nil {
			return nil, err
		} else if changed {
			toRevert = append(toRevert, cur)
		}
		if cur, err = firstParent(repo, cur); err != nil {
			return nil, err
		}
	}
	if !healthyFound {
		return nil, fmt.Errorf("the healthy revision %s is not in the first-parent history before %s", req.Healthy, req.Failed)
	}
	if len(toRevert) == 0 {
		return nil, fmt.Errorf("no commit between %s and %s changed %q: nothing to revert", short(req.Healthy), short(req.Failed), req.Path)
	}
	var reverted []Commit
	for _, c := range toRevert {
		reverted = append(reverted, describe(c))
	}

	// Undo each commit's changes under the path on the head, as git revert would; what
	// later commits changed stays, unless they changed the same lines.
	rv := &reverter{repo: repo, prefix: prefix}
	tree, conflicts, err := rv.revert(head, toRevert, after)
	if err != nil {
		return nil, fmt.Errorf("building the revert: %w", err)
	}
	if len(conflicts) > 0 {
		return nil, &ConflictError{Head: head.Hash.String(), Files: conflicts}
	}
	if tree == head.TreeHash {
		if laterChangedPath {
			return nil, ErrFixedForward
		}
		return nil, fmt.Errorf("the files under %q at the head are already those of %s: nothing to revert", req.Path, short(req.Healthy))
	}

	sig := object.Signature{Name: req.AuthorName, Email: req.AuthorEmail, When: time.Now()}
	commit := &object.Commit{Author: sig, Committer: sig, Message: revertMessage(req, reverted),
		TreeHash: tree, ParentHashes: []plumbing.Hash{head.Hash}}
	if req.SignKey != nil {
		if err := sign(commit, req.SignKey); err != nil {
			return nil, err
		}
	}
	obj := repo.Storer.NewEncodedObject()
	if err := commit.Encode(obj); err != nil {
		return nil, fmt.Errorf("committing the revert: %w", err)
	}
	hash, err := repo.Storer.SetEncodedObject(obj)
	if err != nil {
		return nil, fmt.Errorf("committing the revert: %w", err)
	}
	// A reference of the store's own, pushed from, and removed once pushed or refused: the
	// store's other references mirror the remote.
	local := plumbing.ReferenceName("refs/immutable-release/revert/" + req.Branch)
	if err := repo.Storer.SetReference(plumbing.NewHashReference(local, hash)); err != nil {
		return nil, err
	}
	defer func() { _ = repo.Storer.RemoveReference(local) }()
	target := req.Branch
	if req.PushBranch != "" {
		target = req.PushBranch
	}
	push := c.remote(ctx)
	defer push.cancel()
	// A remote made here, as for fetches: the URL is the request's.
	remote := gogit.NewRemote(repo.Storer, &config.RemoteConfig{Name: gogit.DefaultRemoteName, URLs: []string{req.URL}})
	err = remote.PushContext(push.ctx, &gogit.PushOptions{
		RemoteURL:    req.URL,
		Auth:         authMethod(req.Auth),
		RefSpecs:     []config.RefSpec{config.RefSpec(fmt.Sprintf("%s:refs/heads/%s", local, target))},
		ProxyOptions: push.proxyFor(req.URL),
	})
	err = push.err(err)
	if err != nil {
		if errors.Is(err, gogit.ErrNonFastForwardUpdate) || strings.Contains(err.Error(), "non-fast-forward") || strings.Contains(err.Error(), "fetch first") {
			return nil, fmt.Errorf("%w: %v", errNonFastForward, err)
		}
		return nil, fmt.Errorf("pushing the revert to %s: %w", Redact(req.URL), err)
	}
	return &RevertResult{Commit: hash.String(), Reverted: reverted}, nil
}

// checkRevert refuses a request whose URL or branches the operator must not use, before
// anything is sent: the branches go into refspecs.
func (c *Cache) checkRevert(req RevertRequest) error {
	if err := CheckURL(req.URL, c.AllowFileURLs); err != nil {
		return err
	}
	if err := ValidateBranch(req.Branch); err != nil {
		return err
	}
	if req.PushBranch != "" {
		return ValidateBranch(req.PushBranch)
	}
	return nil
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

// firstParent is c's first parent, or nil for a root commit. The store holds the whole
// history of what it fetched, so a parent it cannot read is a damaged store, reported as
// such: only a walk that reaches the root without finding a revision means the branch's
// history was rewritten.
func firstParent(repo *gogit.Repository, c *object.Commit) (*object.Commit, error) {
	if len(c.ParentHashes) == 0 {
		return nil, nil
	}
	p, err := repo.CommitObject(c.ParentHashes[0])
	if err != nil {
		return nil, fmt.Errorf("reading commit %s, the first parent of %s: %w", c.ParentHashes[0], c.Hash, err)
	}
	return p, nil
}

// touches says whether c changed the file or folder at p ("" for everything), compared
// with its first parent.
func touches(repo *gogit.Repository, c *object.Commit, p string) (bool, error) {
	mine, err := entryAt(c, p)
	if err != nil {
		return false, err
	}
	var theirs entry
	parent, err := firstParent(repo, c)
	if err != nil {
		return false, err
	}
	if parent != nil {
		if theirs, err = entryAt(parent, p); err != nil {
			return false, err
		}
	}
	return mine != theirs, nil
}

// entryAt is the tree entry at p in c, the root tree for "", or a zero entry when absent.
func entryAt(c *object.Commit, p string) (entry, error) {
	if p == "" {
		return entry{mode: filemode.Dir, hash: c.TreeHash}, nil
	}
	root, err := c.Tree()
	if err != nil {
		return entry{}, err
	}
	e, err := root.FindEntry(p)
	if errors.Is(err, object.ErrEntryNotFound) || errors.Is(err, object.ErrDirectoryNotFound) {
		return entry{}, nil
	}
	if err != nil {
		return entry{}, err
	}
	return entry{mode: e.Mode, hash: e.Hash}, nil
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
