package apply

import (
	"context"
	"testing"

	"github.com/fluxcd/pkg/ssa"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/immutable-release/operator/internal/controlplane"
)

func objects(t *testing.T, image string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range []string{`
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: default}
data: {mode: fast}`, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "` + image + `"}]}`} {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

// apiServer starts etcd and kube-apiserver for the test and returns a client of it.
func apiServer(t *testing.T) client.Client {
	t.Helper()
	cp, err := controlplane.Start(context.Background(), controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	c, err := client.New(cp.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestApplyAnswersLive: Apply returns each object as the API server holds it after the
// apply, so that its caller need not read it again: the answer to a create or a change, and
// the object read when nothing needed applying.
func TestApplyAnswersLive(t *testing.T) {
	ctx := context.Background()
	c := apiServer(t)
	a := NewApplier(c, client.ObjectKey{Namespace: "default", Name: "shop"})

	// resourceVersions reads the objects back, and checks that the answers are what is live.
	check := func(what string, objs, live []*unstructured.Unstructured) []string {
		t.Helper()
		var rvs []string
		for i, o := range objs {
			if live[i] == nil {
				t.Fatalf("%s: no live copy of %s", what, o.GetName())
			}
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(o.GroupVersionKind())
			if err := c.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
				t.Fatal(err)
			}
			if got.GetUID() != live[i].GetUID() || got.GetResourceVersion() != live[i].GetResourceVersion() {
				t.Errorf("%s: %s answered %s@%s, live is %s@%s", what, o.GetName(), live[i].GetUID(),
					live[i].GetResourceVersion(), got.GetUID(), got.GetResourceVersion())
			}
			rvs = append(rvs, got.GetResourceVersion())
		}
		return rvs
	}

	v1 := objects(t, "ghcr.io/acme/web@sha256:1111111111111111111111111111111111111111111111111111111111111111")
	if err := a.Prepare(v1, "", "default"); err != nil {
		t.Fatal(err)
	}
	_, live, err := a.Apply(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	created := check("create", v1, live)

	_, live, err = a.Apply(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	if again := check("unchanged", v1, live); again[0] != created[0] || again[1] != created[1] {
		t.Errorf("an unchanged apply changed the objects: %v, then %v", created, again)
	}

	v2 := objects(t, "ghcr.io/acme/web@sha256:2222222222222222222222222222222222222222222222222222222222222222")
	if err := a.Prepare(v2, "", "default"); err != nil {
		t.Fatal(err)
	}
	_, live, err = a.Apply(ctx, v2)
	if err != nil {
		t.Fatal(err)
	}
	changed := check("change", v2, live)
	if changed[0] != created[0] || changed[1] == created[1] {
		t.Errorf("only the Deployment should have changed: %v, then %v", created, changed)
	}
	if live[1].GetGeneration() != 2 {
		t.Errorf("the answer for the changed Deployment has generation %d, want 2", live[1].GetGeneration())
	}

	fixed, err := a.Put(ctx, v1[1:])
	if err != nil {
		t.Fatal(err)
	}
	check("put", v1[1:], fixed)
}

// reads counts the reads made through a client.
type reads struct {
	client.Client
	n int
}

func (r *reads) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	r.n++
	return r.Client.Get(ctx, key, obj, opts...)
}

// TestApplyWithoutReadingAbsentObjects: objects a watch cache shows absent are dry-run and
// applied without being read first. One that existed all the same (taken over from kubectl,
// or not yet seen by the cache) ends as if it had been read: kubectl's fields taken over,
// and the change set saying what changed.
func TestApplyWithoutReadingAbsentObjects(t *testing.T) {
	ctx := context.Background()
	c := apiServer(t)
	counted := &reads{Client: c}
	a := NewApplier(counted, client.ObjectKey{Namespace: "default", Name: "shop"})
	a.Absent = func(*unstructured.Unstructured) bool { return true }
	actions := func(cs *ssa.ChangeSet) map[string]ssa.Action {
		out := map[string]ssa.Action{}
		for _, e := range cs.Entries {
			out[e.ObjMetadata.Name] = e.Action
		}
		return out
	}

	// A person applied the Deployment with kubectl before the release existed.
	web := objects(t, "ghcr.io/acme/web@sha256:1111111111111111111111111111111111111111111111111111111111111111")[1]
	if err := c.Patch(ctx, web.DeepCopy(), client.Apply, client.FieldOwner("kubectl")); err != nil {
		t.Fatal(err)
	}

	v1 := objects(t, "ghcr.io/acme/web@sha256:1111111111111111111111111111111111111111111111111111111111111111")
	if err := a.Prepare(v1, "", "default"); err != nil {
		t.Fatal(err)
	}
	cs, live, err := a.Apply(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(cs); got["settings"] != ssa.CreatedAction || got["web"] != ssa.ConfiguredAction {
		t.Errorf("change set %v, want settings created and web configured (taken over)", got)
	}
	if counted.n != 1 {
		t.Errorf("%d reads, want 1: the Deployment, read again once its dry run showed it existing", counted.n)
	}
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(web.GroupVersionKind())
	if err := c.Get(ctx, client.ObjectKeyFromObject(web), got); err != nil {
		t.Fatal(err)
	}
	for _, mf := range got.GetManagedFields() {
		if mf.Manager == "kubectl" {
			t.Errorf("kubectl still manages fields of the Deployment taken over: %v", got.GetManagedFields())
		}
	}
	if got.GetLabels()[NameLabel] != "shop" {
		t.Errorf("the Deployment taken over lacks the release's labels: %v", got.GetLabels())
	}
	if live[1] == nil || live[1].GetUID() != got.GetUID() {
		t.Errorf("no live answer for the Deployment taken over")
	}

	// The cache has not seen the objects yet: nothing changed, and the change set says so.
	counted.n = 0
	cs, live, err = a.Apply(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(cs); got["settings"] != ssa.UnchangedAction || got["web"] != ssa.UnchangedAction {
		t.Errorf("change set %v, want both unchanged", got)
	}
	for i, o := range v1 {
		now := &unstructured.Unstructured{}
		now.SetGroupVersionKind(o.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(o), now); err != nil {
			t.Fatal(err)
		}
		if live[i] == nil || live[i].GetResourceVersion() != now.GetResourceVersion() {
			t.Errorf("%s: the answer is not the live object", o.GetName())
		}
	}

	// A prune after an apply reads what it deletes, whatever the cache says.
	pruned, err := a.Delete(ctx, v1[:1])
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(pruned); got["settings"] != ssa.DeletedAction {
		t.Errorf("prune: %v, want settings deleted", got)
	}
}
