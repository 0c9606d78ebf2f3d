package git

import (
	"errors"
	"net/url"
	"os/exec"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

func TestCheckURL(t *testing.T) {
	cases := []struct {
		url       string
		allowFile bool
		message   string // "" when allowed
	}{
		{"https://github.com/acme/shop.git", false, ""},
		{"http://127.0.0.1:8080/acme/shop.git", false, ""},
		{"ssh://git@github.com/acme/shop.git", false, ""},
		{"ssh://github.com:2222/acme/shop.git", false, ""},
		{"HTTPS://github.com/acme/shop.git", false, ""},
		{"file:///srv/git/shop.git", true, ""},
		{"file:///srv/git/shop.git", false, "start the manager with --allow-file-urls"},
		{"file://other-host/srv/git/shop.git", true, "names a host"},
		{"file://", true, "names no path"},
		{"https://user:hunter2@github.com/acme/shop.git", false, "carries credentials in the URL"},
		{"https://token@github.com/acme/shop.git", false, "carries credentials in the URL"},
		{"http://user@127.0.0.1/x.git", false, "carries credentials in the URL"},
		{"ssh://git:hunter2@github.com/acme/shop.git", false, "carries a password"},
		{"git://github.com/acme/shop.git", false, `unsupported URL scheme "git"`},
		{"ext::sh -c touch% /tmp/pwned", false, "no // after its scheme"},
		{"git@github.com:acme/shop.git", false, "does not parse"},
		{"github.com/acme/shop.git", false, "has no scheme"},
		{"https:///acme/shop.git", false, "names no host"},
		{"https://:443/acme/shop.git", false, "names no host"},
		{"https://github.com/acme/shop.git\n", false, "does not parse"},
		{"http://user:hunter2@[::1/x", false, "does not parse"},
		{"", false, "has no scheme"},
	}
	for _, tc := range cases {
		t.Run(tc.url, func(t *testing.T) {
			g := NewWithT(t)
			err := CheckURL(tc.url, tc.allowFile)
			if tc.message == "" {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(errors.Is(err, ErrURLNotAllowed)).To(BeTrue(), "%v", err)
			g.Expect(err.Error()).To(ContainSubstring(tc.message))
			g.Expect(err.Error()).NotTo(ContainSubstring("hunter2"))
		})
	}
}

// FuzzCheckURL: an accepted URL names a host (or is file:// where allowed), uses an allowed
// scheme, and carries no secret; a refusal never prints a password.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{"https://github.com/a/b.git", "ssh://git@h/p", "http://u:p@h/x", "file:///x", "git@h:p", "ext::x", "https://h:99999/x"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, raw string, allowFile bool) {
		err := CheckURL(raw, allowFile)
		if err != nil {
			if u, perr := url.Parse(raw); perr == nil {
				if p, ok := u.User.Password(); ok && len(p) > 3 && strings.Contains(err.Error(), p) && !strings.Contains(Redact(raw), p) {
					t.Fatalf("the refusal of %q prints its password: %v", raw, err)
				}
			}
			return
		}
		u, perr := url.Parse(raw)
		if perr != nil {
			t.Fatalf("accepted %q, which does not parse: %v", raw, perr)
		}
		switch u.Scheme {
		case "http", "https":
			if u.User != nil {
				t.Fatalf("accepted %q with credentials", raw)
			}
		case "ssh":
			if _, ok := u.User.Password(); ok {
				t.Fatalf("accepted %q with a password", raw)
			}
		case "file":
			if !allowFile {
				t.Fatalf("accepted %q without allowFile", raw)
			}
			return
		default:
			t.Fatalf("accepted %q, scheme %q", raw, u.Scheme)
		}
		if u.Hostname() == "" {
			t.Fatalf("accepted %q without a host", raw)
		}
	})
}

// refNames are names for ValidateBranch and ValidateTag, checked against git itself.
var refNames = []string{
	"main", "feature/x", "release-1.2", "v1.0.0", "ü", "a@b", "@", "a/@/b", "x.y", "a_b", "HEAD",
	"refs/heads/x", "-x", "a-", "", "a..b", "..", ".a", "a/.b", "a.", "a/", "/a", "a//b",
	"a.lock", "a/b.lock", "x.lock/y", "a.lockx", "a@{b", "@{-1}", "a b", "a\tb", "a\x7fb", "a\x01",
	"a~1", "a^", "a:b", "a?", "a*", "a[b", `a\b`, "a/./b", "a/../b", "./a", "lock", ".lock",
}

// TestValidateBranchMatchesGit: ValidateBranch accepts what `git check-ref-format --branch`
// accepts, except @, which git reads as HEAD.
func TestValidateBranchMatchesGit(t *testing.T) {
	for _, name := range refNames {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			// Outside any repository: inside one, git expands @{-1} to the branch checked
			// out before.
			oracle := exec.Command("git", "check-ref-format", "--branch", name)
			oracle.Dir = t.TempDir()
			want := oracle.Run() == nil && name != "@"
			err := ValidateBranch(name)
			g.Expect(err == nil).To(Equal(want), "git says %v, we say %v", want, err)
			if err != nil {
				g.Expect(errors.Is(err, ErrInvalidReference)).To(BeTrue())
			}
		})
	}
}

// TestValidateTagMatchesGit: ValidateTag accepts what `git check-ref-format refs/tags/<name>`
// accepts.
func TestValidateTagMatchesGit(t *testing.T) {
	for _, name := range refNames {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			want := exec.Command("git", "check-ref-format", "refs/tags/"+name).Run() == nil
			err := ValidateTag(name)
			g.Expect(err == nil).To(Equal(want), "git says %v, we say %v", want, err)
		})
	}
}

// FuzzValidateBranch: an accepted branch name cannot change the refspec it is put in: no
// colon, no wildcard, no leading + or -, no climbing.
func FuzzValidateBranch(f *testing.F) {
	for _, s := range refNames {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateBranch(name) != nil {
			return
		}
		if name == "" || strings.ContainsAny(name, ": *?[\\^~") || strings.HasPrefix(name, "-") ||
			strings.Contains(name, "..") || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") {
			t.Fatalf("accepted %q", name)
		}
		for _, r := range name {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("accepted %q with a control character", name)
			}
		}
	})
}

func TestReferenceValidate(t *testing.T) {
	cases := []struct {
		ref Reference
		ok  bool
	}{
		{Reference{Branch: "main"}, true},
		{Reference{Tag: "v1.0.0"}, true},
		{Reference{Commit: strings.Repeat("a", 40)}, true},
		{Reference{Branch: "main", Commit: strings.Repeat("A", 40)}, true},
		{Reference{}, false},
		{Reference{Branch: "main:refs/heads/other"}, false},
		{Reference{Branch: "*"}, false},
		{Reference{Tag: "v1:refs/tags/x"}, false},
		{Reference{Commit: "abc123"}, false},
		{Reference{Commit: strings.Repeat("g", 40)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.ref.String(), func(t *testing.T) {
			g := NewWithT(t)
			err := tc.ref.Validate()
			if tc.ok {
				g.Expect(err).NotTo(HaveOccurred())
			} else {
				g.Expect(errors.Is(err, ErrInvalidReference)).To(BeTrue(), "%v", err)
			}
		})
	}
}
