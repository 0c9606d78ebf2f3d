package git

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// TestCheckoutLimits: a repository whose tree holds more files or bytes than the cache's
// limits fails with ErrTooLarge naming the limit, and leaves no checkout behind; so does
// one that grows past them a push at a time, each push small, through checkouts moved
// forward.
func TestCheckoutLimits(t *testing.T) {
	cases := []struct {
		name    string
		limits  Limits
		pushes  []map[string]string // each a commit; all but the last fit the limits
		message string
	}{
		{"too many files", Limits{CheckoutFiles: 4},
			[]map[string]string{{"a/1": "1", "a/2": "2", "a/3": "3", "a/4": "4"}},
			"more than 4 files, folders and links"},
		{"too many bytes", Limits{CheckoutBytes: 1 << 10},
			[]map[string]string{{"big.yaml": strings.Repeat("x", 2<<10)}},
			"more than 1 KiB"},
		{"growing a push at a time", Limits{CheckoutBytes: 1 << 10},
			[]map[string]string{{"1.yaml": strings.Repeat("x", 400)}, {"2.yaml": strings.Repeat("x", 400)}, {"3.yaml": strings.Repeat("x", 400)}},
			"more than 1 KiB"},
		{"more folders a push at a time", Limits{CheckoutFiles: 6},
			[]map[string]string{{"a/b/1": "1"}, {"c/d/2": "2"}, {"e/f/3": "3"}},
			"more than 6 files, folders and links"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			srv, repo, _ := newRepo(t)
			auth, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
			g.Expect(err).NotTo(HaveOccurred())
			must(t, repo.Remove("deploy"))
			dir := t.TempDir()
			cache := NewCache(dir)
			cache.Limits = tc.limits
			var last string
			for i, files := range tc.pushes {
				g.Expect(repo.Write(files)).To(Succeed())
				hash, err := repo.CommitAndPush("Push")
				g.Expect(err).NotTo(HaveOccurred())
				co, _, release, err := cache.Checkout(ctx, repo.URL(), Reference{Branch: "main"}, hash, auth)
				if i < len(tc.pushes)-1 {
					g.Expect(err).NotTo(HaveOccurred())
					g.Expect(co).To(BeADirectory())
					release()
					continue
				}
				last = hash
				g.Expect(errors.Is(err, ErrTooLarge)).To(BeTrue(), "%v", err)
				g.Expect(err.Error()).To(ContainSubstring(tc.message))
			}
			trees, _ := filepath.Glob(filepath.Join(dir, "*", "trees", last+"*"))
			g.Expect(trees).To(BeEmpty(), "a half-written checkout was left")
			// Within the limits again, the same cache checks out.
			cache.Limits = DefaultLimits
			_, _, release, err := cache.Checkout(ctx, repo.URL(), Reference{Branch: "main"}, last, auth)
			g.Expect(err).NotTo(HaveOccurred())
			release()
		})
	}
}
