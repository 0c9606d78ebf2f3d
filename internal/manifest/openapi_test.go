package manifest

import (
	"testing"

	. "github.com/onsi/gomega"
)

// TestBuildOpenAPISchemaStaysWithItsRelease is one tenant's openapi.path deciding how another
// tenant's patches merge. kustomize keeps the schema in a process-wide global; tenant A's
// schema declares that Deployment containers do not merge by name, so A's patch replaces the
// list. Tenant B, built next in the same manager without an openapi field, must get the
// built-in schema: its patch merges into the container named a and keeps b.
func TestBuildOpenAPISchemaStaysWithItsRelease(t *testing.T) {
	g := NewWithT(t)
	twoContainers := `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: a, image: 'old@` + goodDigest + `'}
      - {name: b, image: 'b@` + goodDigest + `'}
`
	patch := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {template: {spec: {containers: [{name: a, image: 'new@" + goodDigest + "'}]}}}\n"
	// Swagger 2.0 as kustomize reads it: containers is a plain list, with no merge key.
	schema := `{"definitions": {"io.k8s.api.apps.v1.Deployment": {
  "type": "object",
  "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "Deployment", "version": "v1"}],
  "properties": {"spec": {"type": "object", "properties": {"template": {"type": "object", "properties": {
    "spec": {"type": "object", "properties": {"containers": {"type": "array", "items": {"type": "object"}}}}}}}}}}}}
`
	release := func(openapi string) string {
		return writeTree(t, map[string]string{
			"app/kustomization.yaml": "resources: [deploy.yaml]\npatches: [{path: patch.yaml}]\n" + openapi,
			"app/deploy.yaml":        twoContainers,
			"app/patch.yaml":         patch,
			"app/schema.json":        schema,
		})
	}
	containers := func(root string) []Container {
		objects, err := Build(root, "app", DefaultLimits)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(objects).To(HaveLen(1))
		return Containers(objects[0].Unstructured)
	}
	merged := []Container{{Name: "a", Image: "new@" + goodDigest}, {Name: "b", Image: "b@" + goodDigest}}

	tenantB := release("")
	g.Expect(containers(tenantB)).To(Equal(merged))
	g.Expect(containers(release("openapi: {path: schema.json}\n"))).To(Equal([]Container{{Name: "a", Image: "new@" + goodDigest}}),
		"tenant A's schema has no effect, so this test shows nothing")
	g.Expect(containers(tenantB)).To(Equal(merged), "tenant A's schema applied to tenant B's build")
}
