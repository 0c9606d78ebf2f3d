//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// migrationCRD is a kind Migration with a status subresource: a schema migration that a
// database operator runs and reports on, here played by the story.
const migrationCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: migrations.e2e.example.com}
spec:
  group: e2e.example.com
  names: {kind: Migration, plural: migrations, singular: migration, listKind: MigrationList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`

func migration(version string) string {
	return "apiVersion: e2e.example.com/v1\nkind: Migration\nmetadata: {name: schema}\nspec: {version: \"" + version + "\"}\n"
}

// migrationHealth is how a Flux user tells Flux what a Migration's health is.
const migrationHealth = `healthCheckExprs: [{apiVersion: e2e.example.com/v1, kind: Migration, ` +
	`current: "status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')", ` +
	`failed: "status.conditions.exists(c, c.type == 'Ready' && c.status == 'False' && c.reason == 'MigrationFailed')"}]`

// specCustomResourceReverted: a release judges a custom resource by Flux's CEL health
// expressions. A pushed schema migration that its operator reports failed is judged failed
// at once (not at the timeout), reverted in Git like a failed Deployment, and the reverted
// migration, reported healthy, makes the release Ready again.
func specCustomResourceReverted(t *testing.T) {
	s := newStory(t, "5m", migrationHealth)
	s.apply(migrationCRD)
	t.Cleanup(func() { _, _ = kubectl("delete", "crd", "migrations.e2e.example.com", "--ignore-not-found") })
	s.kubectl("wait", "--for=condition=Established", "crd/migrations.e2e.example.com", "--timeout=1m")

	s.push("Add the schema at version 1", map[string]string{"deploy/prod/migration.yaml": migration("1")})
	if code := s.webhook(); code != http.StatusAccepted {
		t.Fatalf("the push's webhook answered %d", code)
	}
	s.report("1", "True", "Migrated")
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=1m")

	bad := s.push("Migrate the schema to version 2", map[string]string{"deploy/prod/migration.yaml": migration("2")})
	s.webhook()
	s.report("2", "False", "MigrationFailed")
	reported := time.Now()
	s.eventually(time.Minute, func() string {
		out, _ := s.repo.Output("ls-remote", "origin", "refs/heads/main")
		if strings.HasPrefix(out, bad) {
			return "no revert on the branch yet: " + s.condition("Healthy", "message")
		}
		return ""
	})
	t.Logf("the failed migration reverted in Git %s after its operator reported it", time.Since(reported).Round(time.Millisecond))
	s.must(s.repo.Git("pull", "-q", "--ff-only", "origin", "main"))
	msg, err := s.repo.Output("log", "-1", "--format=%B")
	s.must(err)
	if !strings.Contains(msg, "Failed-Revision: "+bad) {
		t.Fatalf("unexpected revert commit:\n%s", msg)
	}
	s.report("1", "True", "Migrated")
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=1m")
	history := s.kubectl("-n", s.ns, "get", "immutablerelease", "shop", "-o", "jsonpath={.status.history[*].result}")
	if !strings.Contains(history, "Failed") {
		t.Errorf("the history does not record the failed migration: %s", history)
	}
}

// report plays the Migration's operator: once the release has applied version, it writes
// the Migration's status, a Ready condition for the generation it looked at.
func (s *story) report(version, ready, reason string) {
	s.t.Helper()
	s.eventually(time.Minute, func() string {
		out, err := kubectl("-n", s.ns, "get", "migrations.e2e.example.com", "schema", "-o", "jsonpath={.spec.version} {.metadata.generation}")
		if err != nil {
			return "no Migration yet: " + s.condition("Ready", "message")
		}
		f := strings.Fields(out)
		if len(f) != 2 || f[0] != version {
			return "the Migration is not at version " + version + " yet: " + out
		}
		status := fmt.Sprintf(`{"status":{"observedGeneration":%s,"conditions":[{"type":"Ready","status":%q,"reason":%q,"message":"schema version %s","lastTransitionTime":%q}]}}`,
			f[1], ready, reason, version, time.Now().UTC().Format(time.RFC3339))
		if _, err := kubectl("-n", s.ns, "patch", "migrations.e2e.example.com", "schema", "--subresource=status", "--type=merge", "-p", status); err != nil {
			return "writing the Migration's status: " + err.Error()
		}
		return ""
	})
}

func TestCustomResourceReverted(t *testing.T) { specCustomResourceReverted(t) }
