package merge3

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

func lines(s ...string) string { return strings.Join(s, "\n") + "\n" }

var cases = map[string]struct {
	base, ours, theirs string
	want               string // "" with conflicts set
	conflicts          []Conflict
}{
	"nothing changed":  {base: lines("a", "b"), ours: lines("a", "b"), theirs: lines("a", "b"), want: lines("a", "b")},
	"only ours":        {base: lines("a", "b", "c"), ours: lines("a", "B", "c"), theirs: lines("a", "b", "c"), want: lines("a", "B", "c")},
	"only theirs":      {base: lines("a", "b", "c"), ours: lines("a", "b", "c"), theirs: lines("a", "b", "C"), want: lines("a", "b", "C")},
	"same change":      {base: lines("a", "b", "c"), ours: lines("a", "X", "c"), theirs: lines("a", "X", "c"), want: lines("a", "X", "c")},
	"apart":            {base: lines("a", "b", "c", "d", "e"), ours: lines("A", "b", "c", "d", "e"), theirs: lines("a", "b", "c", "d", "E"), want: lines("A", "b", "c", "d", "E")},
	"insert and edit":  {base: lines("a", "b", "c"), ours: lines("a", "new", "b", "c"), theirs: lines("a", "b", "C"), want: lines("a", "new", "b", "C")},
	"delete and edit":  {base: lines("a", "b", "c", "d"), ours: lines("a", "c", "d"), theirs: lines("a", "b", "c", "D"), want: lines("a", "c", "D")},
	"from empty":       {base: "", ours: "", theirs: lines("a"), want: lines("a")},
	"to empty":         {base: lines("a"), ours: lines("a"), theirs: "", want: ""},
	"both insert same": {base: lines("a", "b"), ours: lines("a", "x", "b"), theirs: lines("a", "x", "b"), want: lines("a", "x", "b")},
	"same line": {base: lines("a", "image: good", "c"), ours: lines("a", "image: fixed", "c"), theirs: lines("a", "image: old", "c"),
		conflicts: []Conflict{{Base: Range{2, 1}, Ours: Range{2, 1}, Theirs: Range{2, 1}}}},
	// git also calls changes to adjacent lines a conflict.
	"adjacent lines": {base: lines("a", "b", "c", "d"), ours: lines("a", "B", "c", "d"), theirs: lines("a", "b", "C", "d"),
		conflicts: []Conflict{{Base: Range{2, 2}, Ours: Range{2, 2}, Theirs: Range{2, 2}}}},
	"both insert differently": {base: lines("a", "b"), ours: lines("a", "x", "b"), theirs: lines("a", "y", "b"),
		conflicts: []Conflict{{Base: Range{2, 0}, Ours: Range{2, 1}, Theirs: Range{2, 1}}}},
	"modify and delete": {base: lines("a", "b", "c"), ours: lines("a", "B", "c"), theirs: lines("a", "c"),
		conflicts: []Conflict{{Base: Range{2, 1}, Ours: Range{2, 1}, Theirs: Range{2, 0}}}},
	"no newline at the end": {base: "a\nx\nb", ours: "a\nx\nb\n", theirs: "A\nx\nb", want: "A\nx\nb\n"},
	"binary both changed": {base: "a\x00", ours: "b\x00", theirs: "c\x00",
		conflicts: []Conflict{{Base: Range{1, 1}, Ours: Range{1, 1}, Theirs: Range{1, 1}}}},
	"binary one side": {base: "a\x00", ours: "a\x00", theirs: "c\x00", want: "c\x00"},
}

func TestMerge(t *testing.T) {
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			res := Merge([]byte(tc.base), []byte(tc.ours), []byte(tc.theirs))
			g.Expect(res.Conflicts).To(Equal(tc.conflicts))
			if tc.conflicts == nil {
				g.Expect(string(res.Text)).To(Equal(tc.want))
			}
		})
	}
}

// TestMergeMatchesGit compares the verdict and the merged text with git merge-file.
func TestMergeMatchesGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	for name, tc := range cases {
		if strings.Contains(name, "binary") {
			continue // git merge-file refuses binary files outright
		}
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			dir := t.TempDir()
			for f, s := range map[string]string{"base": tc.base, "ours": tc.ours, "theirs": tc.theirs} {
				g.Expect(os.WriteFile(filepath.Join(dir, f), []byte(s), 0o644)).To(Succeed())
			}
			cmd := exec.Command("git", "merge-file", "-p", "ours", "base", "theirs")
			cmd.Dir = dir
			out, err := cmd.Output()
			res := Merge([]byte(tc.base), []byte(tc.ours), []byte(tc.theirs))
			g.Expect(res.Clean()).To(Equal(err == nil), "git: %s", out)
			if res.Clean() {
				g.Expect(string(res.Text)).To(Equal(string(out)))
			}
		})
	}
}

func TestRangeString(t *testing.T) {
	g := NewWithT(t)
	g.Expect(Range{3, 1}.String()).To(Equal("line 3"))
	g.Expect(Range{3, 3}.String()).To(Equal("lines 3-5"))
	g.Expect(Range{3, 0}.String()).To(Equal("after line 2"))
	g.Expect(Range{1, 0}.String()).To(Equal("at the top"))
}

func TestMatchIsALongestCommonSubsequence(t *testing.T) {
	g := NewWithT(t)
	x := strings.Split("abcabba", "")
	y := strings.Split("cbabac", "")
	m := Match(x, y)
	checkMatch(t, x, y, m)
	g.Expect(matched(m)).To(Equal(lcs(x, y)))
}

func matched(m []int) int {
	n := 0
	for _, j := range m {
		if j >= 0 {
			n++
		}
	}
	return n
}

// checkMatch fails unless m pairs equal lines in increasing order.
func checkMatch(t *testing.T, x, y []string, m []int) {
	t.Helper()
	last := -1
	for i, j := range m {
		if j < 0 {
			continue
		}
		if j <= last || j >= len(y) || x[i] != y[j] {
			t.Fatalf("bad match %d->%d in %v", i, j, m)
		}
		last = j
	}
}

// lcs is the textbook dynamic program, to check that Match is minimal.
func lcs(x, y []string) int {
	dp := make([][]int, len(x)+1)
	for i := range dp {
		dp[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				dp[i][j] = dp[i+1][j+1] + 1
			} else {
				dp[i][j] = max(dp[i+1][j], dp[i][j+1])
			}
		}
	}
	return dp[0][0]
}

func FuzzMatch(f *testing.F) {
	f.Add("a\nb\nc\n", "b\nc\nd\n")
	f.Add("x\ny\nx\ny\n", "y\nx\n")
	f.Fuzz(func(t *testing.T, a, b string) {
		x, y := Lines([]byte(a)), Lines([]byte(b))
		if len(x) > 200 || len(y) > 200 {
			return
		}
		m := Match(x, y)
		checkMatch(t, x, y, m)
		if got, want := matched(m), lcs(x, y); got != want {
			t.Fatalf("matched %d lines, a longest common subsequence has %d", got, want)
		}
	})
}

func FuzzMerge(f *testing.F) {
	for _, tc := range cases {
		f.Add(tc.base, tc.ours, tc.theirs)
	}
	f.Fuzz(func(t *testing.T, base, ours, theirs string) {
		b, o, th := []byte(base), []byte(ours), []byte(theirs)
		same := func(r Result, want []byte) {
			t.Helper()
			if !r.Clean() || !bytes.Equal(r.Text, want) {
				t.Fatalf("want %q clean, got %q %v", want, r.Text, r.Conflicts)
			}
		}
		same(Merge(o, o, o), o)   // x with itself is x
		same(Merge(b, o, b), o)   // only ours changed
		same(Merge(b, b, th), th) // only theirs changed
		same(Merge(b, o, o), o)   // the same change on both sides
		same(Merge(o, o, b), b)   // a revert on an unchanged head gives the parent back

		// The verdict does not depend on which side is ours.
		r1, r2 := Merge(b, o, th), Merge(b, th, o)
		if r1.Clean() != r2.Clean() {
			t.Fatalf("clean %v one way, %v the other", r1.Clean(), r2.Clean())
		}
		if r1.Clean() && !bytes.Equal(r1.Text, r2.Text) {
			t.Fatalf("%q one way, %q the other", r1.Text, r2.Text)
		}
		for _, c := range r1.Conflicts {
			if c.Ours.Start < 1 || c.Ours.Start+c.Ours.Count-1 > len(Lines(o)) || c.Base.Start+c.Base.Count-1 > len(Lines(b)) {
				t.Fatalf("conflict %+v out of range", c)
			}
		}
	})
}
