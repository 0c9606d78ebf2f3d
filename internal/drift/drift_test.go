package drift

import (
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func obj(t *testing.T, s string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(s), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

const desired = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}, resourceVersion: "1"}
spec:
  replicas: 2
  template:
    spec:
      containers:
      - {name: web, image: "web@sha256:aa", ports: [{containerPort: 80}]}
status: {replicas: 2}
`

func TestCompare(t *testing.T) {
	tests := []struct {
		name string
		live string
		want []string
	}{
		{name: "same", live: desired, want: nil},
		{name: "image and replicas", live: `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}, resourceVersion: "7"}
spec:
  replicas: 5
  template:
    spec:
      containers:
      - {name: istio-proxy, image: "proxy:1"}
      - {name: web, image: "web:evil", ports: [{containerPort: 80}]}
status: {replicas: 5}
`, want: []string{"spec.replicas is 5 (Git: 2)", "spec.template.spec.containers[web].image is web:evil (Git: web@sha256:aa)"}},
		{name: "label removed", live: `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  template: {spec: {containers: [{name: web, image: "web@sha256:aa", ports: [{containerPort: 80}]}]}}
`, want: []string{"metadata.labels[app] is missing (Git: web)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			var got []string
			for _, c := range Compare(obj(t, desired), obj(t, tt.live)) {
				got = append(got, c.String())
			}
			g.Expect(got).To(Equal(tt.want))
		})
	}
	g := NewWithT(t)
	changes := Compare(obj(t, desired), obj(t, `{apiVersion: apps/v1, kind: Deployment, metadata: {name: web, labels: {app: web}}, spec: {replicas: 2, template: {spec: {containers: [{name: web, image: "x", ports: [{containerPort: 80}]}]}}}}`))
	g.Expect(changes).To(HaveLen(1))
	g.Expect(changes[0].Image).To(BeTrue())
}

func TestAddedContainersAndChangedBy(t *testing.T) {
	g := NewWithT(t)
	live := obj(t, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec: {template: {spec: {containers: [{name: web, image: a}, {name: istio-proxy, image: b}]}}}
`)
	g.Expect(AddedContainers(obj(t, desired), live, "spec", "template", "spec")).To(Equal([]string{"istio-proxy"}))

	t1, t2, t3 := metav1.Unix(100, 0), metav1.Unix(200, 0), metav1.Unix(300, 0)
	live.SetManagedFields([]metav1.ManagedFieldsEntry{
		{Manager: "immutable-release", Operation: metav1.ManagedFieldsOperationApply, Time: &t3},
		{Manager: "kube-controller-manager", Subresource: "status", Time: &t3},
		{Manager: "helm", Operation: metav1.ManagedFieldsOperationUpdate, Time: &t1},
		{Manager: "kubectl-set", Operation: metav1.ManagedFieldsOperationUpdate, Time: &t2},
	})
	g.Expect(ChangedBy(live, "immutable-release")).To(Equal("kubectl-set"))
}
