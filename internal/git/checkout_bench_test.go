package git

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/immutable-release/operator/internal/testgit"
)

// BenchmarkNewCommit times what a push costs the shared cache before the first release can
// build its manifests: list the remote, fetch the new commit and check it out, on a
// repository of 1000 releases (a Deployment and a Service each) where the commit changes one.
func BenchmarkNewCommit(b *testing.B) {
	srv, repo := benchRepo(b)
	files := map[string]string{}
	for i := 0; i < 1000; i++ {
		files[fmt.Sprintf("apps/app-%04d/deployment.yaml", i)] = manifest(i, "v0")
		files[fmt.Sprintf("apps/app-%04d/service.yaml", i)] = fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: app-%04d}\n", i)
	}
	if err := repo.Write(files); err != nil {
		b.Fatal(err)
	}
	if _, err := repo.CommitAndPush("A thousand releases"); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	cache := NewCache(b.TempDir())
	auth, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
	if err != nil {
		b.Fatal(err)
	}
	main := Reference{Branch: "main"}
	hash, err := cache.Resolve(ctx, repo.URL(), main, auth, true)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, release, err := cache.Checkout(ctx, repo.URL(), main, hash, auth); err != nil {
		b.Fatal(err)
	} else {
		release()
	}

	var list, fetch, total []time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		if err := repo.Write(map[string]string{fmt.Sprintf("apps/app-%04d/deployment.yaml", i%1000): manifest(i, fmt.Sprintf("v%d", i+1))}); err != nil {
			b.Fatal(err)
		}
		if _, err := repo.CommitAndPush(fmt.Sprintf("Release %d", i)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		hash, err := cache.Resolve(ctx, repo.URL(), main, auth, true)
		if err != nil {
			b.Fatal(err)
		}
		listed := time.Now()
		_, _, release, err := cache.Checkout(ctx, repo.URL(), main, hash, auth)
		if err != nil {
			b.Fatal(err)
		}
		release()
		list, fetch, total = append(list, listed.Sub(start)), append(fetch, time.Since(listed)), append(total, time.Since(start))
	}
	b.StopTimer()
	b.Logf("n=%d  list p50 %s  fetch and checkout p50 %s  total p50 %s  max %s", len(total), p50(list), p50(fetch), p50(total), maxOf(total))
}

func p50(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2].Round(time.Millisecond)
}

func maxOf(d []time.Duration) time.Duration { return slices.Max(d).Round(time.Millisecond) }

// benchRepo starts a Git server, stopped with the benchmark, with an empty repository.
func benchRepo(b *testing.B) (*testgit.Server, *testgit.Repo) {
	srv, err := testgit.NewServer()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Stop)
	repo, err := srv.CreateRepo("acme/fleet.git", "main")
	if err != nil {
		b.Fatal(err)
	}
	return srv, repo
}
