package git

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// BenchmarkRevert times what runs between the health verdict and the revert being on the
// branch: Cache.Revert (clone, find the commits, three-way merge, commit, sign, push) over
// HTTP, on a repository of 30 environments of 20 manifests with 100 commits of history.
// Each run pushes a bad commit (not timed) and reverts it. It prints p50, p90 and max; the
// goal is under 2 s from verdict to push.
func BenchmarkRevert(b *testing.B) {
	for _, signed := range []bool{false, true} {
		name := "unsigned"
		if signed {
			name = "signed"
		}
		b.Run(name, func(b *testing.B) { benchmarkRevert(b, signed) })
	}
}

func benchmarkRevert(b *testing.B, signed bool) {
	t := &testing.T{}
	srv, repo := benchRepo(b)
	files := map[string]string{}
	for env := 0; env < 30; env++ {
		for f := 0; f < 20; f++ {
			files[fmt.Sprintf("deploy/env-%02d/app-%02d.yaml", env, f)] = manifest(f, "good")
		}
	}
	if err := repo.Write(files); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		name := fmt.Sprintf("deploy/env-%02d/app-%02d.yaml", i%30, i%20)
		if err := repo.Write(map[string]string{name: manifest(i%20, fmt.Sprintf("v%d", i))}); err != nil {
			b.Fatal(err)
		}
		if err := repo.Git("add", "-A"); err != nil {
			b.Fatal(err)
		}
		if err := repo.Git("commit", "-q", "-m", fmt.Sprintf("Release %d", i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := repo.Git("push", "-q", "origin", "main"); err != nil {
		b.Fatal(err)
	}
	req := RevertRequest{URL: repo.URL(), Branch: "main", Path: "deploy/env-07", Release: "shop/web",
		Reason: "Deployment/shop/web did not become healthy", AuthorName: "ImmutableRelease", AuthorEmail: "bot@example.com"}
	var err error
	if req.Auth, err = AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)}); err != nil {
		b.Fatal(err)
	}
	if signed {
		private, _ := newKey(t, "s3cret")
		if req.SignKey, err = SigningKey(private, []byte("s3cret")); err != nil {
			b.Fatal(err)
		}
	}
	cache := NewCache(b.TempDir())

	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := repo.Git("pull", "-q", "--ff-only", "origin", "main"); err != nil {
			b.Fatal(err)
		}
		if req.Healthy, err = repo.Head(); err != nil {
			b.Fatal(err)
		}
		if err := repo.Write(map[string]string{"deploy/env-07/app-03.yaml": manifest(3, fmt.Sprintf("bad-%d", i))}); err != nil {
			b.Fatal(err)
		}
		if req.Failed, err = repo.CommitAndPush(fmt.Sprintf("Bad %d", i)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		res, err := cache.Revert(context.Background(), req)
		latencies = append(latencies, time.Since(start))
		if err != nil || res.Existing {
			b.Fatalf("revert: %v %+v", err, res)
		}
	}
	b.StopTimer()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	p50, p90, max := latencies[len(latencies)/2], latencies[len(latencies)*9/10], latencies[len(latencies)-1]
	b.ReportMetric(float64(p50.Milliseconds()), "p50-ms")
	b.ReportMetric(float64(p90.Milliseconds()), "p90-ms")
	fmt.Printf("verdict to revert pushed (%s, %d runs): p50 %s, p90 %s, max %s (goal < 2s)\n",
		b.Name(), len(latencies), p50.Round(time.Millisecond), p90.Round(time.Millisecond), max.Round(time.Millisecond))
}

func manifest(n int, image string) string {
	return fmt.Sprintf("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-%02d\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n      - name: app\n        image: ghcr.io/acme/app-%02d:%s\n%s", n, n, image, strings.Repeat("        # padding\n", 40))
}
