package git

import (
	"context"
	"errors"
	"fmt"
	"strings"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"
)

// ProposalBranchPrefix starts the name of every branch a proposed revert is pushed to.
const ProposalBranchPrefix = "immutable-release/revert-"

// ProposalBranches are the names a proposed revert of failed may be pushed to, in order:
// immutable-release/revert-<short sha>, and, when another release (or a person) already
// holds that name, the same followed by the release's namespace and name.
func ProposalBranches(failed, release string) []string {
	first := ProposalBranchPrefix + short(failed)
	return []string{first, first + "-" + strings.ReplaceAll(release, "/", "-")}
}

// ProposeResult is a revert pushed to a branch of its own, for a pull request.
type ProposeResult struct {
	RevertResult
	// Branch holds the revert commit. It is empty when the revert is already on the base
	// branch (Existing): there is nothing left to propose.
	Branch string
	// Message is the revert commit's message.
	Message string
}

// ProposeRevert makes the same revert commit as Revert on the head of req.Branch (the
// pull request's base), but pushes it to a new branch named by ProposalBranches. It is
// idempotent and safe after a crash: a proposal branch whose head is a revert of the same
// failed revision for the same release is returned (Existing) and nothing is pushed, so a
// failed revision never gets a second branch.
func (c *Cache) ProposeRevert(ctx context.Context, req RevertRequest) (*ProposeResult, error) {
	if err := c.checkRevert(req); err != nil {
		return nil, err
	}
	for _, branch := range ProposalBranches(req.Failed, req.Release) {
		if err := ValidateBranch(branch); err != nil {
			return nil, err
		}
	}
	list := c.remote(ctx)
	defer list.cancel()
	remote := gogit.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: gogit.DefaultRemoteName, URLs: []string{req.URL}})
	refs, err := remote.ListContext(list.ctx, &gogit.ListOptions{Auth: authMethod(req.Auth), ProxyOptions: list.proxyFor(req.URL)})
	if err != nil {
		return nil, fmt.Errorf("listing references of %s: %w", Redact(req.URL), list.err(err))
	}
	heads := map[string]bool{}
	for _, r := range refs {
		heads[r.Name().String()] = true
	}
	var taken []string
	for _, branch := range ProposalBranches(req.Failed, req.Release) {
		if heads[plumbing.NewBranchReferenceName(branch).String()] {
			head, err := c.branchHead(ctx, req.URL, req.Auth, branch)
			if err != nil {
				return nil, err
			}
			if isRevertOf(head, req.Release, req.Failed) {
				res := RevertResult{Commit: head.Hash.String(), Existing: true, Reverted: revertedBy(head.Message)}
				return &ProposeResult{RevertResult: res, Branch: branch, Message: head.Message}, nil
			}
			taken = append(taken, branch)
			continue
		}
		push := req
		push.PushBranch = branch
		var base string
		res, err := c.revertOnce(ctx, push, "", &base)
		if err != nil {
			if errors.Is(err, errNonFastForward) {
				// Created since the listing, by another run: the next attempt finds it.
				return nil, fmt.Errorf("branch %s appeared while the revert was pushed to it; trying again", branch)
			}
			return nil, err
		}
		if res.Existing {
			// The revert is already on the base branch.
			return &ProposeResult{RevertResult: *res}, nil
		}
		head, err := c.branchHead(ctx, req.URL, req.Auth, branch)
		if err != nil {
			return nil, err
		}
		return &ProposeResult{RevertResult: *res, Branch: branch, Message: head.Message}, nil
	}
	return nil, fmt.Errorf("branches %s already exist and do not hold a revert of %s for %s: delete them", strings.Join(taken, " and "), short(req.Failed), req.Release)
}

// revertedBy reads the commits a revert message names, in its "This reverts commit <sha>."
// lines (the hash only).
func revertedBy(message string) []Commit {
	var out []Commit
	for _, line := range strings.Split(message, "\n") {
		if h, ok := strings.CutPrefix(line, "This reverts commit "); ok {
			out = append(out, Commit{Hash: strings.TrimSuffix(strings.TrimSpace(h), ".")})
		}
	}
	return out
}

// branchHead reads the head commit of a branch of the remote.
func (c *Cache) branchHead(ctx context.Context, repoURL string, auth *Auth, branch string) (*object.Commit, error) {
	op := c.remote(ctx)
	defer op.cancel()
	repo, err := gogit.CloneContext(op.ctx, memory.NewStorage(), nil, &gogit.CloneOptions{
		URL:           repoURL,
		Auth:          authMethod(auth),
		ReferenceName: plumbing.NewBranchReferenceName(branch),
		SingleBranch:  true,
		Depth:         1,
		Tags:          gogit.NoTags,
		NoCheckout:    true,
		ProxyOptions:  op.proxyFor(repoURL),
	})
	if err != nil {
		return nil, fmt.Errorf("reading branch %s of %s: %w", branch, Redact(repoURL), op.err(err))
	}
	ref, err := repo.Head()
	if err != nil {
		return nil, err
	}
	return repo.CommitObject(ref.Hash())
}

// ProposalOutcome is what became of a proposed revert once the branch it was proposed for
// moved to a new head.
type ProposalOutcome struct {
	// Merged is the commit of the new head's history that brought the revert: the revert
	// commit itself (merged, or fast-forwarded), or a squashed or rebased copy that kept
	// its trailers. Empty when the revert is not there.
	Merged string
	// PathChanged says that, without the revert, commits after the failed revision changed
	// the path (someone fixed forward), or that the failed revision is no longer in the
	// branch's first-parent history.
	PathChanged bool
}

// maxOutcomeWalk bounds the commits looked at for a merged revert.
const maxOutcomeWalk = 2000

// Outcome looks, in the local store of repoURL read with auth's credentials (where head
// was checked out), for what became of the revert commit revertCommit of failed for
// release under path.
func (c *Cache) Outcome(repoURL string, auth *Auth, head, failed, revertCommit, release, path string) (ProposalOutcome, error) {
	r, err := c.repository(repoURL, auth)
	if err != nil {
		return ProposalOutcome{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	tip, err := r.repo.CommitObject(plumbing.NewHash(head))
	if err != nil {
		return ProposalOutcome{}, fmt.Errorf("reading commit %s: %w", head, err)
	}

	// Every parent, not only the first: a merge commit brings the revert as its second.
	// The revert commit itself wins over a commit that only carries its trailers (a
	// squash, a rebase, or a merge commit whose message quotes the pull request).
	queue := []*object.Commit{tip}
	seen := map[plumbing.Hash]bool{tip.Hash: true}
	copied := ""
	for n := 0; len(queue) > 0 && n < maxOutcomeWalk; n++ {
		cur := queue[0]
		queue = queue[1:]
		if cur.Hash.String() == failed {
			continue
		}
		if cur.Hash.String() == revertCommit {
			return ProposalOutcome{Merged: revertCommit}, nil
		}
		if copied == "" && isRevertOf(cur, release, failed) {
			copied = cur.Hash.String()
		}
		for _, p := range cur.ParentHashes {
			if seen[p] {
				continue
			}
			seen[p] = true
			if pc, err := r.repo.CommitObject(p); err == nil {
				queue = append(queue, pc)
			}
		}
	}

	if copied != "" {
		return ProposalOutcome{Merged: copied}, nil
	}
	prefix := cleanPrefix(path)
	for cur := tip; cur != nil; {
		if cur.Hash.String() == failed {
			return ProposalOutcome{}, nil
		}
		changed, err := touches(r.repo, cur, prefix)
		if err != nil {
			return ProposalOutcome{}, err
		}
		if changed {
			return ProposalOutcome{PathChanged: true}, nil
		}
		if cur, err = firstParent(r.repo, cur); err != nil {
			return ProposalOutcome{}, err
		}
	}
	return ProposalOutcome{PathChanged: true}, nil
}
