package git

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

func TestSourceDue(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	minute := time.Minute
	checked := func(ago time.Duration) Source {
		return Source{Checked: now.Add(-ago), ListedAt: now.Add(-ago), Generation: 1}
	}
	look := Look{Now: now, Generation: 1, Attempted: true, Interval: minute}
	with := func(f func(*Look)) Look { l := look; f(&l); return l }
	for _, tc := range []struct {
		name      string
		source    Source
		look      Look
		due       bool
		notBefore time.Time
	}{
		{name: "never checked in this process", look: look, due: true, notBefore: now.Add(-time.Second)},
		{name: "status has no attempted revision", source: checked(time.Second), look: with(func(l *Look) { l.Attempted = false }), due: true, notBefore: now.Add(-time.Second)},
		{name: "within the interval", source: checked(30 * time.Second), look: look, due: false, notBefore: now.Add(-minute)},
		{name: "interval passed", source: checked(minute), look: look, due: true, notBefore: now.Add(-minute)},
		{name: "spec changed", source: checked(time.Second), look: with(func(l *Look) { l.Generation = 2 }), due: true, notBefore: now},
		{name: "reconcile requested", source: checked(time.Second), look: with(func(l *Look) { l.Token = "now" }), due: true, notBefore: now},
		{name: "a step asked for a fresh look", source: func() Source { s := checked(time.Second); s.Refresh(); return s }(), look: look, due: true, notBefore: now},
		{name: "retriable failure", source: func() Source { s := checked(time.Second); s.Retry = true; return s }(), look: look, due: true, notBefore: now},
		{name: "push after the listing", source: func() Source { s := checked(time.Second); s.Push(now.Add(-500*time.Millisecond), true); return s }(),
			look: look, due: true, notBefore: now.Add(-500 * time.Millisecond)},
		{name: "push after the check but before the reused listing it used",
			source: Source{Checked: now.Add(-time.Second), ListedAt: now.Add(-10 * time.Second), Generation: 1, PushedAt: now.Add(-2 * time.Second)},
			look:   look, due: true, notBefore: now.Add(-2 * time.Second)},
		{name: "listing made after the push saw it", source: func() Source { s := checked(time.Second); s.Push(now.Add(-2*time.Second), true); return s }(),
			look: look, due: false, notBefore: now.Add(-minute)},
		{name: "a dependency on the same reference listed after this release", source: func() Source { s := checked(time.Second); s.Seen(now.Add(-200 * time.Millisecond)); return s }(),
			look: look, due: true, notBefore: now.Add(-200 * time.Millisecond)},
		{name: "a dependency on the same reference listed before this release", source: func() Source { s := checked(time.Second); s.Seen(now.Add(-3 * time.Second)); return s }(),
			look: look, due: false, notBefore: now.Add(-minute)},
		{name: "an older sighting does not hide a newer push", source: func() Source {
			s := checked(time.Second)
			s.Push(now.Add(-100*time.Millisecond), true)
			s.Seen(now.Add(-900 * time.Millisecond))
			return s
		}(), look: look, due: true, notBefore: now.Add(-100 * time.Millisecond)},
		{name: "push announced by another replica", source: checked(time.Second),
			look: with(func(l *Look) { l.PushAnnotation = now.Add(-300 * time.Millisecond).Format(time.RFC3339Nano) }), due: true, notBefore: now.Add(-300 * time.Millisecond)},
		{name: "annotated push already served", source: func() Source { s := checked(time.Second); s.HandledPush = "2026-12-02T11:59:59Z"; return s }(),
			look: with(func(l *Look) { l.PushAnnotation = "2026-12-02T11:59:59Z" }), due: false, notBefore: now.Add(-minute)},
		{name: "annotated push ahead of this clock counts as now", source: checked(time.Second),
			look: with(func(l *Look) { l.PushAnnotation = now.Add(time.Hour).Format(time.RFC3339Nano) }), due: true, notBefore: now},
		{name: "unreadable annotation counts as now", source: checked(time.Second),
			look: with(func(l *Look) { l.PushAnnotation = "yesterday" }), due: true, notBefore: now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			s := tc.source
			due, notBefore := s.Due(tc.look)
			g.Expect(due).To(Equal(tc.due))
			g.Expect(notBefore).To(Equal(tc.notBefore))
		})
	}
}

// TestSourceCheckServes: once a check is recorded, what made it due no longer does.
func TestSourceCheckServes(t *testing.T) {
	g := NewWithT(t)
	now := time.Now()
	l := Look{Now: now, Generation: 3, Token: "t1", Attempted: true, PushAnnotation: now.Format(time.RFC3339Nano), Interval: time.Minute}
	var s Source
	s.Push(now.Add(-time.Second), true)
	s.Refresh()
	due, _ := s.Due(l)
	g.Expect(due).To(BeTrue())
	s.Check(l, now, now, false)
	due, _ = s.Due(l)
	g.Expect(due).To(BeFalse())
	g.Expect(s.Asked(l)).To(BeFalse())
	g.Expect(s.Asked(Look{Generation: 3, Token: "t2"})).To(BeTrue())

	s.Check(l, now, now, true)
	due, notBefore := s.Due(l)
	g.Expect(due).To(BeTrue(), "a retriable failure is retried")
	g.Expect(notBefore).To(Equal(now))
}
