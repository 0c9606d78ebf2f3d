package git

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
)

// TestCheckoutRefusesHostileTrees: a server serves trees whose entry names climb out of
// the checkout (.., names with separators, a symbolic link and a folder of the same name)
// or name Git's own folder, aimed at another tenant's object store in the same cache. The
// checkout fails with ErrUnsafeTree naming the entry, writes nothing outside its folder,
// and leaves no half-written tree; both for a first checkout and for an idle checkout of
// another commit moved forward.
func TestCheckoutRefusesHostileTrees(t *testing.T) {
	// Each tree is built from the victim's store folder name (the attack knows it: it is a
	// hash of the victim's URL and credentials, and the victim's repository may be public).
	cases := []struct {
		name string
		tree func(victim string) []node
		path string // the entry the error names
	}{
		{"a folder named ..", func(v string) []node {
			return []node{folder("..", folder("..", folder("..", folder(v, folder("objects.git", file("config", "[core]\n\tbare = false\n"))))))}
		}, `".."`},
		{"a name that climbs", func(v string) []node {
			return []node{file("../../../"+v+"/objects.git/config", "[core]\n")}
		}, `"../../../`},
		{"a name with a slash", func(string) []node { return []node{folder("deploy", file("a/b", "x"))} }, `"deploy/a/b"`},
		{"a name with a backslash", func(string) []node { return []node{file(`a\b`, "x")} }, `"a\\b"`},
		{"a folder named .", func(string) []node { return []node{folder(".", file("x", "x"))} }, `"."`},
		{"a .git folder", func(string) []node { return []node{folder("apps", folder(".git", file("config", "x")))} }, `"apps/.git"`},
		{"a .GIT folder", func(string) []node { return []node{folder(".GIT", file("config", "x"))} }, `".GIT"`},
		{"an NTFS alias of .git", func(string) []node { return []node{folder("git~1", file("config", "x"))} }, `"git~1"`},
		{"a link and a folder of the same name", func(v string) []node {
			return []node{link("a", "../../../"+v+"/objects.git"), folder("a", file("config", "[core]\n\tbare = false\n"))}
		}, `"a"`},
		{"a link out of the checkout", func(v string) []node {
			return []node{folder("deploy", link("store", "../../../../"+v))}
		}, `"deploy/store"`},
		{"an absolute link", func(string) []node {
			return []node{link("token", "/var/run/secrets/kubernetes.io/serviceaccount/token")}
		}, `"token"`},
	}
	for _, tc := range cases {
		for _, incremental := range []bool{false, true} {
			name := tc.name
			if incremental {
				name += ", moving a checkout forward"
			}
			t.Run(name, func(t *testing.T) {
				g := NewWithT(t)
				ctx := context.Background()
				srv, victim, victimHead := newRepo(t)
				auth, err := AuthFromSecret(victim.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
				g.Expect(err).NotTo(HaveOccurred())
				base := t.TempDir()
				cacheDir := filepath.Join(base, "cache")
				cache := NewCache(cacheDir)
				_, _, release, err := cache.Checkout(ctx, victim.URL(), Reference{Branch: "main"}, victimHead, auth)
				g.Expect(err).NotTo(HaveOccurred())
				release()
				stores, err := os.ReadDir(cacheDir)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(stores).To(HaveLen(1))
				victimStore := stores[0].Name()

				evil, err := srv.CreateRepo("evil/tree.git", "main")
				g.Expect(err).NotTo(HaveOccurred())
				parent := ""
				if incremental {
					g.Expect(evil.Write(map[string]string{"deploy/app.yaml": "a: 1\n", "a/keep.yaml": "k\n"})).To(Succeed())
					parent, err = evil.CommitAndPush("Benign")
					g.Expect(err).NotTo(HaveOccurred())
					_, _, release, err := cache.Checkout(ctx, evil.URL(), Reference{Branch: "main"}, parent, auth)
					g.Expect(err).NotTo(HaveOccurred())
					release()
				}
				hostile := craftCommit(t, filepath.Join(srv.Root(), evil.Name), "main", parent, tc.tree(victimStore)...)
				evilStore := func() string {
					entries, _ := os.ReadDir(cacheDir)
					for _, e := range entries {
						if e.Name() != victimStore {
							return filepath.Join(cacheDir, e.Name())
						}
					}
					return filepath.Join(cacheDir, "none")
				}
				before := snapshot(t, base, evilStore())

				_, _, _, err = cache.Checkout(ctx, evil.URL(), Reference{Branch: "main"}, hostile, auth)
				g.Expect(err).To(HaveOccurred())
				g.Expect(errors.Is(err, ErrUnsafeTree)).To(BeTrue(), "%v", err)
				g.Expect(err.Error()).To(ContainSubstring(tc.path))
				g.Expect(err.Error()).To(ContainSubstring("remove it from the repository"))
				g.Expect(snapshot(t, base, evilStore())).To(Equal(before), "nothing outside the checkout changed")
				trees, _ := os.ReadDir(filepath.Join(evilStore(), "trees"))
				for _, e := range trees {
					g.Expect(e.Name()).NotTo(HavePrefix(hostile), "a half-written checkout was left")
				}
			})
		}
	}
}
