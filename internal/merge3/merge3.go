// Package merge3 merges two versions of a text that both derive from a common base, line by
// line, the way diff3 and git do: a change made on one side only is taken, the same change
// made on both sides is taken once, and different changes to the same or adjacent lines are
// a conflict. It is pure: no I/O, no Git.
package merge3

import (
	"bytes"
	"strconv"
	"strings"
)

// Range is a run of lines: Start is 1-based, Count may be 0 (an insertion point).
type Range struct {
	Start, Count int
}

// String is "line 3", "lines 3-5", or "after line 2" for an insertion point.
func (r Range) String() string {
	switch {
	case r.Count == 0 && r.Start <= 1:
		return "at the top"
	case r.Count == 0:
		return "after line " + strconv.Itoa(r.Start-1)
	case r.Count == 1:
		return "line " + strconv.Itoa(r.Start)
	default:
		return "lines " + strconv.Itoa(r.Start) + "-" + strconv.Itoa(r.Start+r.Count-1)
	}
}

// Conflict is a region that both sides changed differently, as lines of each version.
type Conflict struct {
	Base, Ours, Theirs Range
}

// Result is the outcome of a merge. Text is only meaningful when there are no conflicts.
type Result struct {
	Text      []byte
	Conflicts []Conflict
}

// Clean says whether the merge needed no decision.
func (r Result) Clean() bool { return len(r.Conflicts) == 0 }

// Merge merges the changes from base to ours and from base to theirs. Lines keep their line
// ending, so a last line without a newline differs from the same line with one, as in git.
// Content that looks binary (a NUL byte) is not merged line by line: if both sides changed
// it differently, the whole of it is one conflict.
func Merge(base, ours, theirs []byte) Result {
	switch {
	case bytes.Equal(ours, theirs), bytes.Equal(base, theirs):
		return Result{Text: ours}
	case bytes.Equal(base, ours):
		return Result{Text: theirs}
	}
	b, o, t := Lines(base), Lines(ours), Lines(theirs)
	if isBinary(base) || isBinary(ours) || isBinary(theirs) {
		return Result{Conflicts: []Conflict{{Base: Range{1, len(b)}, Ours: Range{1, len(o)}, Theirs: Range{1, len(t)}}}}
	}
	return merge(b, o, t)
}

func merge(base, ours, theirs []string) Result {
	mo, mt := Match(base, ours), Match(base, theirs)
	var out strings.Builder
	var conflicts []Conflict
	i, a, c := 0, 0, 0
	for {
		// Lines all three share, in place.
		for i < len(base) && mo[i] == a && mt[i] == c {
			out.WriteString(base[i])
			i, a, c = i+1, a+1, c+1
		}
		if i == len(base) && a == len(ours) && c == len(theirs) {
			break
		}
		// An unstable chunk runs to the next base line both sides kept.
		j := i
		for j < len(base) && (mo[j] < 0 || mt[j] < 0) {
			j++
		}
		aEnd, cEnd := len(ours), len(theirs)
		if j < len(base) {
			aEnd, cEnd = mo[j], mt[j]
		}
		bs, os, ts := base[i:j], ours[a:aEnd], theirs[c:cEnd]
		switch {
		case equal(os, bs):
			writeAll(&out, ts)
		case equal(ts, bs), equal(os, ts):
			writeAll(&out, os)
		default:
			conflicts = append(conflicts, Conflict{
				Base: Range{i + 1, j - i}, Ours: Range{a + 1, aEnd - a}, Theirs: Range{c + 1, cEnd - c}})
		}
		i, a, c = j, aEnd, cEnd
	}
	if len(conflicts) > 0 {
		return Result{Conflicts: conflicts}
	}
	return Result{Text: []byte(out.String())}
}

// Lines splits text after each newline; the last line may lack one.
func Lines(text []byte) []string {
	var lines []string
	s := string(text)
	for len(s) > 0 {
		n := strings.IndexByte(s, '\n') + 1
		if n == 0 {
			n = len(s)
		}
		lines = append(lines, s[:n])
		s = s[n:]
	}
	return lines
}

func isBinary(b []byte) bool {
	if len(b) > 8000 {
		b = b[:8000] // as git does
	}
	return bytes.IndexByte(b, 0) >= 0
}

func equal(x, y []string) bool {
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

func writeAll(b *strings.Builder, lines []string) {
	for _, l := range lines {
		b.WriteString(l)
	}
}
