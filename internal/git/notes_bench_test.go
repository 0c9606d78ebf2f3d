package git

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/immutable-release/operator/internal/testgit"
)

// BenchmarkFleetRecords: a fleet of releases on one commit of a monorepo all become
// healthy at once and record it, from one process. The records waiting for the store go
// together, so pushes/op stays far below the fleet's size.
//
//	go test ./internal/git -run '^$' -bench BenchmarkFleetRecords -benchtime 3x
func BenchmarkFleetRecords(b *testing.B) {
	const fleet = 100
	srv, err := testgit.NewServer()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Stop)
	repo, err := srv.CreateRepo("acme/monorepo.git", "main")
	if err != nil {
		b.Fatal(err)
	}
	if err := repo.Write(map[string]string{"deploy/app.yaml": "a: 1\n"}); err != nil {
		b.Fatal(err)
	}
	commit, err := repo.CommitAndPush("Release")
	if err != nil {
		b.Fatal(err)
	}
	auth, err := AuthFromSecret(repo.URL(), map[string][]byte{"username": []byte(srv.Username), "password": []byte(srv.Password)})
	if err != nil {
		b.Fatal(err)
	}
	cache := NewCache(b.TempDir())
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		var wg sync.WaitGroup
		for i := 0; i < fleet; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := cache.WriteNote(context.Background(), noteRequest(repo.URL(), auth, commit, appendLine(fmt.Sprintf("run-%d release-%d", n, i)))); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	b.ReportMetric(float64(cache.Stats().NotePushes)/float64(b.N), "pushes/op")
	b.ReportMetric(fleet, "records/op")
}
