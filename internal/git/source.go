package git

import "time"

// Source is what a release remembers of its Git source between reconciles, and decides
// when the remote must be looked at again: the last check (when, for which spec and
// request, with a listing made when), the pushes announced since, and whether a step asked
// for a fresh look. Reconciles between checks (watch events, health polling) reuse the
// last check instead of listing the remote. The zero Source has never checked: a check is
// due. Losing a Source (a restart, the release moving to another shard) costs one check.
type Source struct {
	// Checked is when the last check began; zero: none in this process.
	Checked time.Time
	// ListedAt is when the listing the last check used was made, which can be before
	// Checked: a listing made for another release on the same repository is reused. A
	// push after it is not in the check.
	ListedAt time.Time
	// Generation and Token are the spec generation and reconcile request the last check
	// served.
	Generation int64
	Token      string
	// Retry says the last check failed in a way that retrying can fix (Git unreachable, a
	// missing Secret): it is tried again, fresh, at every reconcile the backoff brings.
	Retry bool
	// Fresh says a step asked for the remote to be listed again at once (a revert pushed,
	// a quarantine lifted).
	Fresh bool
	// PushedAt is when a webhook last announced a push the release follows, and Changed
	// whether that push changed the release's path.
	PushedAt time.Time
	Changed  bool
	// HandledPush is the last pushed-at annotation value that a check served.
	HandledPush string
}

// Look is what a reconcile knows of the release when it asks whether to look at Git.
type Look struct {
	Now        time.Time
	Generation int64
	// Token is the reconcile request (reconcile.fluxcd.io/requestedAt) the release carries.
	Token string
	// Attempted says the release's status records a revision fetched before: without one,
	// even a check this process remembers did not reach the status.
	Attempted bool
	// PushAnnotation is the release's pushed-at annotation (RFC 3339): a push another
	// replica received for it.
	PushAnnotation string
	// Interval is the shortest interval the release's jitter gives.
	Interval time.Duration
}

// Asked says whether a person asked for a look (a reconcile request or a spec change) since
// the last check, or a step asked for a fresh one: everything is looked at again, nothing
// taken from what the process remembers.
func (s *Source) Asked(l Look) bool {
	return s.Checked.IsZero() || s.Fresh || s.Generation != l.Generation || s.Token != l.Token
}

// Due says whether this reconcile must list the remote, and how old a listing made for
// another release on the same repository may be to serve this one (notBefore): as of now
// when someone asked (likely right after a push) or a retriable failure is retried; as of
// the push when one was announced; and the shortest interval when polling, so that a fleet
// on one repository lists it about once an interval and a commit is seen within two
// intervals at worst (as with Flux's source and Kustomization intervals); a webhook makes
// it seconds.
func (s *Source) Due(l Look) (due bool, notBefore time.Time) {
	switch {
	case s.Checked.IsZero() || !l.Attempted:
		return true, l.Now.Add(-time.Second)
	case s.Asked(l) || s.Retry:
		return true, l.Now
	case s.PushedAt.After(s.ListedAt):
		return true, s.PushedAt
	}
	if at, ok := s.annotatedPush(l); ok {
		return true, at
	}
	return l.Now.Sub(s.Checked) >= l.Interval, l.Now.Add(-l.Interval)
}

// annotatedPush is the time of a push another replica announced in the annotation and no
// check has served yet. A time ahead of this process's clock counts as now: the clocks of
// two replicas differ a little.
func (s *Source) annotatedPush(l Look) (time.Time, bool) {
	if l.PushAnnotation == "" || l.PushAnnotation == s.HandledPush {
		return time.Time{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, l.PushAnnotation)
	if err != nil || at.After(l.Now) {
		at = l.Now
	}
	return at, true
}

// Check records a check begun at checked, for the release as l describes it, with a
// listing made at listedAt; retry says it failed in a way that retrying can fix.
func (s *Source) Check(l Look, checked, listedAt time.Time, retry bool) {
	s.Checked, s.ListedAt = checked, listedAt
	s.Generation, s.Token = l.Generation, l.Token
	s.Retry, s.Fresh = retry, false
	s.HandledPush = l.PushAnnotation
}

// Push records a push announced at at; changed says it changed the release's path.
func (s *Source) Push(at time.Time, changed bool) {
	s.PushedAt, s.Changed = at, changed
}

// Seen records that another release following the same reference listed the remote at at
// and is at another revision than this one: when that listing is newer than this release's,
// the next reconcile lists the remote again, as of at (a listing made since serves it).
func (s *Source) Seen(at time.Time) {
	if at.After(s.PushedAt) {
		s.PushedAt = at
	}
}

// Refresh has the next reconcile list the remote fresh, at once.
func (s *Source) Refresh() { s.Fresh = true }
