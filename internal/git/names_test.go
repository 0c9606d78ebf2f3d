package git

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

func TestValidateEntryName(t *testing.T) {
	cases := []struct {
		name string
		ok   bool
	}{
		{"app.yaml", true},
		{".github", true},
		{".gitignore", true},
		{"..yaml", true},
		{"...", true},
		{"git", true},
		{"a b", true},
		{"ünïcode", true},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"/", false},
		{"../x", false},
		{`a\b`, false},
		{`..\x`, false},
		{"a\x00b", false},
		{".git", false},
		{".GIT", false},
		{".Git", false},
		{".git.", false},
		{".git ", false},
		{".git. .", false},
		{"git~1", false},
		{"GIT~1", false},
		{".g\u200cit", false},
		{"\ufeff.git", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			err := ValidateEntryName(tc.name)
			if tc.ok {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(errors.Is(err, ErrUnsafeTree)).To(BeTrue(), "%v", err)
			g.Expect(err.Error()).To(ContainSubstring("%q", tc.name))
		})
	}
}

func TestCheckLinkTarget(t *testing.T) {
	cases := []struct {
		depth  int
		target string
		ok     bool
	}{
		{0, "apps/a", true},
		{0, "./apps/a", true},
		{1, "../common", true},
		{2, "../../x/y", true},
		{1, "x/./y", true},
		{0, "../x", false},
		{1, "../../x", false},
		{3, "a/../../x", false},
		{3, "a/..", false},
		{5, "/etc/passwd", false},
		{1, "", false},
		{1, "a\x00b", false},
	}
	for _, tc := range cases {
		t.Run(tc.target, func(t *testing.T) {
			g := NewWithT(t)
			err := checkLinkTarget(tc.depth, tc.target)
			if tc.ok {
				g.Expect(err).NotTo(HaveOccurred())
			} else {
				g.Expect(err).To(HaveOccurred())
			}
		})
	}
}

// FuzzValidateEntryName: a name the validator accepts is one path component that stays
// in the folder it is created in, and is not Git's folder.
func FuzzValidateEntryName(f *testing.F) {
	for _, s := range []string{"app.yaml", "", ".", "..", "a/b", `a\b`, ".git", ".GIT.", "git~1", "a\x00", ".g\u200cit"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateEntryName(name) != nil {
			return
		}
		if strings.ContainsAny(name, "/\\\x00") || name == "." || name == ".." || name == "" {
			t.Fatalf("accepted %q", name)
		}
		if strings.EqualFold(strings.TrimRight(name, ". "), ".git") {
			t.Fatalf("accepted %q, an alias of .git", name)
		}
		root := filepath.FromSlash("/checkout/root")
		p := filepath.Join(root, name)
		if filepath.Dir(p) != root {
			t.Fatalf("%q joined to %s gives %s, not an entry of it", name, root, p)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel != name {
			t.Fatalf("%q joined to %s gives %s (relative %q, %v)", name, root, p, rel, err)
		}
	})
}
