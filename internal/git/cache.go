// Package git fetches the manifests of releases with go-git. One Cache serves every release:
// a remote head is listed (ls-remote) at most once per short window per repository, reference
// and credentials, a commit already in the shared object store is never fetched again, and a
// checked-out tree is shared by all releases at that commit.
//
// Repositories and servers are treated as hostile: trees are checked entry by entry and
// written through os.Root, checkouts and answers are capped (Limits), every remote
// operation has a deadline, and stores are never shared between credentials. Importing the
// package installs go-git's HTTP(S) transport for the whole process (see transport.go).
package git

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
	"golang.org/x/sync/singleflight"
)

// Reference names exactly one of a branch, a tag or a commit.
type Reference struct {
	Branch string
	Tag    string
	Commit string
}

func (r Reference) String() string {
	switch {
	case r.Tag != "":
		return "tag " + r.Tag
	case r.Commit != "":
		return "commit " + r.Commit
	default:
		return "branch " + r.Branch
	}
}

// Revision formats a resolved reference the way Flux does: <branch or tag>@sha1:<hash>, or
// sha1:<hash> for a commit.
func Revision(ref Reference, hash string) string {
	switch {
	case ref.Branch != "":
		return ref.Branch + "@sha1:" + hash
	case ref.Tag != "":
		return ref.Tag + "@sha1:" + hash
	default:
		return "sha1:" + hash
	}
}

// RevisionHash returns the commit hash of a revision written by Revision.
func RevisionHash(revision string) string {
	if i := strings.LastIndex(revision, "sha1:"); i >= 0 {
		return revision[i+len("sha1:"):]
	}
	return ""
}

// Commit describes a commit for the release history.
type Commit struct {
	Hash    string
	Subject string
	// Message is the whole message, trailers included.
	Message string
	Author  string
	Time    time.Time
}

// Stats counts the remote operations a Cache made, for metrics and benchmarks.
type Stats struct {
	Lists   int64
	Fetches int64
	// Reverts counts the reverts built (each fetches its branch into the shared store).
	Reverts int64
	// NotePushes counts the attempts to push a note (more than one per note: another
	// writer won the race).
	NotePushes int64
	// Repositories and Heads are how many stores and listed heads the cache holds now.
	Repositories, Heads int
}

// Cache is the shared store of every repository the operator reads. It is safe for
// concurrent use. Its exported fields are settings: set them before the first call.
type Cache struct {
	// Limits bound what one repository can make the cache write, read and wait for.
	// Fields left at zero take DefaultLimits'.
	Limits Limits
	// AllowFileURLs lets releases read file:// repositories, on the manager's own file
	// system: for local development only (the manager's --allow-file-urls).
	AllowFileURLs bool

	dir string
	// headTTL is how long a listed head is reused by other releases on the same repository.
	headTTL time.Duration
	// keepCheckouts is how many unused checked-out trees are kept per repository.
	keepCheckouts int

	flight singleflight.Group

	mu    sync.Mutex
	heads map[string]head
	repos map[string]*repository
	stats Stats
}

type head struct {
	hash string
	at   time.Time
}

// NewCache keeps its repositories under dir.
func NewCache(dir string) *Cache {
	return &Cache{Limits: DefaultLimits, dir: dir, headTTL: time.Second, keepCheckouts: 8, heads: map[string]head{}, repos: map[string]*repository{}}
}

// Stats returns how many lists and fetches the cache made so far, and what it holds.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Repositories, s.Heads = len(c.repos), len(c.heads)
	return s
}

// Resolve lists the remote and returns the commit hash ref points at. Unless fresh is set,
// answers are shared for a second between callers with the same URL, reference and
// credentials; a person who asks for a reconcile after a push wants fresh.
func (c *Cache) Resolve(ctx context.Context, repoURL string, ref Reference, auth *Auth, fresh bool) (string, error) {
	notBefore := time.Now().Add(-c.headTTL)
	if fresh {
		notBefore = time.Now()
	}
	hash, _, err := c.ResolveSince(ctx, repoURL, ref, auth, notBefore)
	return hash, err
}

// ResolveSince lists the remote and returns the commit hash ref points at, reusing an
// answer for the same URL, reference and credentials listed at or after notBefore: many
// releases on one repository cost one ls-remote per interval, and after a push announced at
// time T, one listing made after T serves them all. A commit reference still lists the
// remote, which proves the credentials can read the repository. listedAt is when the listing
// that answered began: the answer is the remote as of then.
func (c *Cache) ResolveSince(ctx context.Context, repoURL string, ref Reference, auth *Auth, notBefore time.Time) (hash string, listedAt time.Time, err error) {
	if err := c.checkRemote(repoURL, ref); err != nil {
		return "", time.Time{}, err
	}
	key := repoURL + "\x00" + ref.String() + "\x00" + authID(auth)
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		h, ok := c.heads[key]
		c.mu.Unlock()
		if ok && !h.at.Before(notBefore) {
			return h.hash, h.at, nil
		}
		if attempt == 2 {
			// Two listings joined were both older than asked: only possible with a clock
			// jump; the last answer is as fresh as this process can give.
			return h.hash, h.at, nil
		}
		// Joining a listing in flight that began before notBefore gives an older answer:
		// the loop then lists once more.
		_, err, _ := c.flight.Do(key, func() (any, error) {
			started := time.Now()
			hash, err := c.list(ctx, repoURL, ref, auth)
			if err != nil {
				return nil, err
			}
			c.mu.Lock()
			c.heads[key] = head{hash: hash, at: started}
			c.mu.Unlock()
			return nil, nil
		})
		if err != nil {
			return "", time.Time{}, err
		}
	}
}

// PathChange asks whether the tree at Path differs between commits From and To.
type PathChange struct {
	From, To, Path string
}

// PathsChanged answers each question against the shared store of repoURL read with auth's
// credentials. A commit that is not in the store counts as a change. Trees are read once
// each, so a thousand releases at their own paths of one repository cost two walks of the
// shared folders, not a thousand.
func (c *Cache) PathsChanged(repoURL string, auth *Auth, questions []PathChange) ([]bool, error) {
	r, err := c.repository(repoURL, auth)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	w := treeWalker{repo: r.repo, roots: map[string]plumbing.Hash{}, trees: map[plumbing.Hash]map[string]plumbing.Hash{}}
	out := make([]bool, len(questions))
	var errs []error
	for i, q := range questions {
		a, errA := w.lookup(q.From, q.Path)
		b, errB := w.lookup(q.To, q.Path)
		if errA != nil || errB != nil {
			out[i] = true
			errs = append(errs, errA, errB)
			continue
		}
		out[i] = a != b
	}
	return out, errors.Join(errs...)
}

// treeWalker finds the hash of a path in commits, decoding each tree once.
type treeWalker struct {
	repo  *gogit.Repository
	roots map[string]plumbing.Hash                   // commit -> root tree
	trees map[plumbing.Hash]map[string]plumbing.Hash // tree -> entry name -> hash
}

// lookup returns the hash of the tree or file at path in commit hash (zero when absent).
func (w *treeWalker) lookup(hash, path string) (plumbing.Hash, error) {
	root, ok := w.roots[hash]
	if !ok {
		commit, err := w.repo.CommitObject(plumbing.NewHash(hash))
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("reading commit %s: %w", hash, err)
		}
		root = commit.TreeHash
		w.roots[hash] = root
	}
	cur := root
	for _, name := range strings.Split(strings.Trim(filepath.ToSlash(filepath.Clean("/"+path)), "/"), "/") {
		if name == "" {
			continue
		}
		entries, ok := w.trees[cur]
		if !ok {
			tree, err := w.repo.TreeObject(cur)
			if errors.Is(err, plumbing.ErrObjectNotFound) {
				return plumbing.ZeroHash, nil // a file where a folder was asked for
			}
			if err != nil {
				return plumbing.ZeroHash, fmt.Errorf("reading tree %s: %w", cur, err)
			}
			entries = make(map[string]plumbing.Hash, len(tree.Entries))
			for _, e := range tree.Entries {
				entries[e.Name] = e.Hash
			}
			w.trees[cur] = entries
		}
		if cur, ok = entries[name]; !ok {
			return plumbing.ZeroHash, nil
		}
	}
	return cur, nil
}

func (c *Cache) list(ctx context.Context, repoURL string, ref Reference, auth *Auth) (string, error) {
	c.mu.Lock()
	c.stats.Lists++
	c.mu.Unlock()
	op := c.remote(ctx)
	defer op.cancel()
	remote := gogit.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: gogit.DefaultRemoteName, URLs: []string{repoURL}})
	refs, err := remote.ListContext(op.ctx, &gogit.ListOptions{Auth: authMethod(auth), PeelingOption: gogit.AppendPeeled, ProxyOptions: op.proxyFor(repoURL)})
	if err != nil {
		return "", fmt.Errorf("listing references of %s: %w", Redact(repoURL), op.err(err))
	}
	byName := make(map[string]string, len(refs))
	for _, r := range refs {
		if r.Type() == plumbing.HashReference {
			byName[r.Name().String()] = r.Hash().String()
		}
	}
	switch {
	case ref.Branch != "":
		if h, ok := byName["refs/heads/"+ref.Branch]; ok {
			return h, nil
		}
		return "", fmt.Errorf("branch %q not found in %s", ref.Branch, Redact(repoURL))
	case ref.Tag != "":
		// An annotated tag points at a tag object; its peeled name points at the commit.
		if h, ok := byName["refs/tags/"+ref.Tag+"^{}"]; ok {
			return h, nil
		}
		if h, ok := byName["refs/tags/"+ref.Tag]; ok {
			return h, nil
		}
		return "", fmt.Errorf("tag %q not found in %s", ref.Tag, Redact(repoURL))
	default:
		return ref.Commit, nil
	}
}

// repository is one bare repository on disk shared by every release that reads its URL.
type repository struct {
	mu        sync.Mutex
	dir       string
	repo      *gogit.Repository
	checkouts map[string]*checkout
	// lastUse is when the store was last looked up; guarded by the Cache's mu.
	lastUse time.Time
	// notes are the note writes waiting for mu, by notes reference (WriteNote), guarded
	// by notesMu.
	notesMu sync.Mutex
	notes   map[string][]*pendingNote
}

type checkout struct {
	dir     string
	users   int
	lastUse time.Time
	// used is what the checkout holds, for the limits of the next checkout moved from it.
	used usage
}

// repository is the store of repoURL read with auth's credentials. A store is never shared
// between credentials: what one tenant's credentials fetched (a private repository behind
// a public URL's name) must not serve a release that holds other credentials, or none.
func (c *Cache) repository(repoURL string, auth *Auth) (*repository, error) {
	key := repoURL + "\x00" + authID(auth)
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.repos[key]; ok {
		r.lastUse = time.Now()
		return r, nil
	}
	sum := sha256.Sum256([]byte(key))
	dir := filepath.Join(c.dir, hex.EncodeToString(sum[:16]))
	// The store has no remote in its config: every fetch names its URL, so that a config
	// changed on disk cannot send the credentials elsewhere.
	repo, err := gogit.PlainOpen(filepath.Join(dir, "objects.git"))
	if errors.Is(err, gogit.ErrRepositoryNotExists) {
		repo, err = gogit.PlainInit(filepath.Join(dir, "objects.git"), true)
	}
	if err != nil {
		return nil, fmt.Errorf("opening the local store of %s: %w", Redact(repoURL), err)
	}
	// Checkouts of an earlier process may be incomplete; start clean.
	if err := os.RemoveAll(filepath.Join(dir, "trees")); err != nil {
		return nil, err
	}
	r := &repository{dir: dir, repo: repo, checkouts: map[string]*checkout{}, lastUse: time.Now()}
	c.repos[key] = r
	return r, nil
}

// Evict forgets, and removes from disk, the store of every repository and credentials that
// inUse does not name and that nobody used for idle, with its checkouts and listed heads:
// the stores of releases that are gone, or moved to another URL or Secret, do not pile up.
// A store with a checkout in use is kept. Losing a store only costs a fetch. It returns how
// many stores it removed.
func (c *Cache) Evict(inUse func(repoURL, authID string) bool, idle time.Duration) int {
	stale := func(key string, r *repository) bool {
		repoURL, id, _ := strings.Cut(key, "\x00")
		return !inUse(repoURL, id) && time.Since(r.lastUse) >= idle
	}
	c.mu.Lock()
	candidates := map[string]*repository{}
	for key, r := range c.repos {
		if stale(key, r) {
			candidates[key] = r
		}
	}
	c.mu.Unlock()
	// Checkout holds a store's lock while it takes the Cache's: look at the checkouts
	// without the Cache's lock, then check again under it that nobody looked the store up
	// meanwhile.
	for key, r := range candidates {
		if r.busy() {
			delete(candidates, key)
		}
	}
	c.mu.Lock()
	for key, r := range candidates {
		if c.repos[key] != r || !stale(key, r) {
			delete(candidates, key)
			continue
		}
		delete(c.repos, key)
	}
	for key, h := range c.heads {
		parts := strings.Split(key, "\x00") // URL, reference, credentials
		if len(parts) == 3 && !inUse(parts[0], parts[2]) && time.Since(h.at) >= idle {
			delete(c.heads, key)
		}
	}
	c.mu.Unlock()
	for _, r := range candidates {
		r.mu.Lock()
		_ = os.RemoveAll(r.dir)
		r.mu.Unlock()
	}
	return len(candidates)
}

// busy says whether a checkout of the store is in use.
func (r *repository) busy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, co := range r.checkouts {
		if co.users > 0 {
			return true
		}
	}
	return false
}

// Checkout makes sure the commit hash (resolved from ref) is in the shared store, fetching
// it if not, and returns a folder holding the commit's tree and the commit's description.
// The folder is shared and must not be changed; call release when done with it.
func (c *Cache) Checkout(ctx context.Context, repoURL string, ref Reference, hash string, auth *Auth) (dir string, commit Commit, release func(), err error) {
	if err := c.checkRemote(repoURL, ref); err != nil {
		return "", Commit{}, nil, err
	}
	if !isHash(hash) {
		return "", Commit{}, nil, fmt.Errorf("%w: commit %q is not a full hash", ErrInvalidReference, hash)
	}
	r, err := c.repository(repoURL, auth)
	if err != nil {
		return "", Commit{}, nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()

	obj, err := r.repo.CommitObject(plumbing.NewHash(hash))
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		if err := c.fetch(ctx, r, repoURL, ref, auth); err != nil {
			return "", Commit{}, nil, err
		}
		obj, err = r.repo.CommitObject(plumbing.NewHash(hash))
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			return "", Commit{}, nil, fmt.Errorf("commit %s not found in %s", hash, Redact(repoURL))
		}
	}
	if err != nil {
		return "", Commit{}, nil, fmt.Errorf("reading commit %s: %w", hash, err)
	}
	commit = describe(obj)

	co, ok := r.checkouts[hash]
	if !ok {
		dir := filepath.Join(r.dir, "trees", hash)
		co, err = r.checkoutTree(obj, dir, c.Limits.orDefault())
		if err != nil {
			return "", Commit{}, nil, fmt.Errorf("checking out %s of %s: %w", hash, Redact(repoURL), err)
		}
		r.checkouts[hash] = co
	}
	co.users++
	co.lastUse = time.Now()
	// Evict only now that this checkout is in use: it must never be the one removed.
	c.evict(r)
	var once sync.Once
	release = func() {
		once.Do(func() {
			r.mu.Lock()
			co.users--
			r.mu.Unlock()
		})
	}
	return co.dir, commit, release, nil
}

// fetch brings the objects of ref into the store. Branches keep their full history: rolling
// back by revert reads it.
func (c *Cache) fetch(ctx context.Context, r *repository, repoURL string, ref Reference, auth *Auth) error {
	c.mu.Lock()
	c.stats.Fetches++
	c.mu.Unlock()
	var spec config.RefSpec
	switch {
	case ref.Branch != "":
		spec = config.RefSpec(fmt.Sprintf("+refs/heads/%s:refs/remotes/origin/%s", ref.Branch, ref.Branch))
	case ref.Tag != "":
		spec = config.RefSpec(fmt.Sprintf("+refs/tags/%s:refs/tags/%s", ref.Tag, ref.Tag))
	default:
		spec = "+refs/heads/*:refs/remotes/origin/*"
	}
	op := c.remote(ctx)
	defer op.cancel()
	// A remote made here, not read from the store's config: the URL is the release's.
	remote := gogit.NewRemote(r.repo.Storer, &config.RemoteConfig{Name: gogit.DefaultRemoteName, URLs: []string{repoURL}})
	err := remote.FetchContext(op.ctx, &gogit.FetchOptions{
		RemoteURL:    repoURL,
		RefSpecs:     []config.RefSpec{spec},
		Auth:         authMethod(auth),
		Tags:         gogit.NoTags,
		Force:        true,
		ProxyOptions: op.proxyFor(repoURL),
	})
	if err != nil && !errors.Is(err, gogit.NoErrAlreadyUpToDate) {
		return fmt.Errorf("fetching %s from %s: %w", ref, Redact(repoURL), op.err(err))
	}
	return nil
}

// evict removes the oldest unused checkouts beyond keepCheckouts. Called with r.mu held.
func (c *Cache) evict(r *repository) {
	var idle []string
	for hash, co := range r.checkouts {
		if co.users == 0 {
			idle = append(idle, hash)
		}
	}
	if len(idle) <= c.keepCheckouts {
		return
	}
	sort.Slice(idle, func(i, j int) bool { return r.checkouts[idle[i]].lastUse.Before(r.checkouts[idle[j]].lastUse) })
	for _, hash := range idle[:len(idle)-c.keepCheckouts] {
		_ = os.RemoveAll(r.checkouts[hash].dir)
		delete(r.checkouts, hash)
	}
}

// checkRemote refuses a URL or a reference the operator must not use, before anything is
// sent anywhere.
func (c *Cache) checkRemote(repoURL string, ref Reference) error {
	if err := CheckURL(repoURL, c.AllowFileURLs); err != nil {
		return err
	}
	return ref.Validate()
}

// authID is the identity of the credentials, "" for anonymous access.
func authID(auth *Auth) string {
	if auth == nil {
		return ""
	}
	return auth.ID
}

func authMethod(auth *Auth) transport.AuthMethod {
	if auth == nil {
		return nil
	}
	return auth.Method
}

func describe(c *object.Commit) Commit {
	subject, _, _ := strings.Cut(strings.TrimSpace(c.Message), "\n")
	return Commit{
		Hash:    c.Hash.String(),
		Subject: subject,
		Message: c.Message,
		Author:  fmt.Sprintf("%s <%s>", c.Author.Name, c.Author.Email),
		Time:    c.Author.When,
	}
}
