package drift

import (
	"encoding/base64"
	"fmt"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
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

// The values of the Secret in the tests below, from Git and live, and their encodings: none
// may appear in a Change.
const (
	gitValue  = "s3cr3t-from-git"
	liveValue = "hunter2-live-value"
)

// secretForms are the forms in which a value could slip out: as is, base64 (as the API
// server stores data), and base64 without padding, which a prefix of the encoding shares.
func secretForms(values ...string) []string {
	var out []string
	for _, v := range values {
		out = append(out, v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawStdEncoding.EncodeToString([]byte(v))[:12])
	}
	return out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestCompareHidesSecretValues is the attack: whoever may read the release's condition or
// events must not learn a Secret's data, live or from Git, whatever field holds it.
func TestCompareHidesSecretValues(t *testing.T) {
	lastApplied := `{"apiVersion":"v1","kind":"Secret","data":{"password":"` + b64(liveValue) + `"}}`
	tests := []struct {
		name          string
		desired, live string
		want          []string
	}{
		{name: "data changed",
			desired: `{apiVersion: v1, kind: Secret, metadata: {name: db}, data: {password: "` + b64(gitValue) + `", user: YWRtaW4=}}`,
			live:    `{apiVersion: v1, kind: Secret, metadata: {name: db}, data: {password: "` + b64(liveValue) + `", user: YWRtaW4=}}`,
			want:    []string{"data[password] differs from Git (value hidden)"}},
		{name: "data key with dots removed live",
			desired: `{apiVersion: v1, kind: Secret, metadata: {name: db}, data: {tls.key: "` + b64(gitValue) + `"}}`,
			live:    `{apiVersion: v1, kind: Secret, metadata: {name: db}, data: {other: "` + b64(liveValue) + `"}}`,
			want:    []string{"data[tls.key] is missing (value hidden)"}},
		{name: "stringData changed",
			desired: `{apiVersion: v1, kind: Secret, metadata: {name: db}, stringData: {password: ` + gitValue + `}}`,
			live:    `{apiVersion: v1, kind: Secret, metadata: {name: db}, stringData: {password: ` + liveValue + `}}`,
			want:    []string{"stringData[password] differs from Git (value hidden)"}},
		{name: "whole data against null",
			desired: `{apiVersion: v1, kind: Secret, metadata: {name: db}, data: null}`,
			live:    `{apiVersion: v1, kind: Secret, metadata: {name: db}, data: {password: "` + b64(liveValue) + `"}}`,
			want:    []string{"data differs from Git (value hidden)"}},
		{name: "whole data as a list",
			desired: `{apiVersion: v1, kind: Secret, metadata: {name: db}, data: ["` + gitValue + `"]}`,
			live:    `{apiVersion: v1, kind: Secret, metadata: {name: db}, data: ["` + liveValue + `"]}`,
			want:    []string{"data differs from Git (value hidden)"}},
		{name: "last-applied annotation",
			desired: `{apiVersion: v1, kind: Secret, metadata: {name: db, annotations: {kubectl.kubernetes.io/last-applied-configuration: '{"data":{"password":"` + b64(gitValue) + `"}}'}}}`,
			live:    `{apiVersion: v1, kind: Secret, metadata: {name: db, annotations: {kubectl.kubernetes.io/last-applied-configuration: '` + lastApplied + `'}}}`,
			want:    []string{"metadata.annotations[kubectl.kubernetes.io/last-applied-configuration] differs from Git (value hidden)"}},
		{name: "annotations that hold the last-applied copy",
			desired: `{apiVersion: v1, kind: Secret, metadata: {name: db, annotations: null}}`,
			live:    `{apiVersion: v1, kind: Secret, metadata: {name: db, annotations: {kubectl.kubernetes.io/last-applied-configuration: '` + lastApplied + `'}}}`,
			want:    []string{"metadata.annotations differs from Git (value hidden)"}},
		{name: "a field Secrets do not have yet",
			desired: `{apiVersion: v1, kind: Secret, metadata: {name: db}, future: {nested: ` + gitValue + `}}`,
			live:    `{apiVersion: v1, kind: Secret, metadata: {name: db}, future: {nested: ` + liveValue + `}}`,
			want:    []string{"future.nested differs from Git (value hidden)"}},
		{name: "only the live object says Secret",
			desired: `{apiVersion: v1, kind: Unknown, metadata: {name: db}, data: {password: "` + b64(gitValue) + `"}}`,
			live:    `{apiVersion: v1, kind: Secret, metadata: {name: db}, data: {password: "` + b64(liveValue) + `"}}`,
			want:    []string{"data[password] differs from Git (value hidden)", "kind is Secret (Git: Unknown)"}},
		{name: "labels and type stay readable",
			desired: `{apiVersion: v1, kind: Secret, type: kubernetes.io/tls, metadata: {name: db, labels: {team: a}, annotations: {owner: ops}}, data: {password: "` + b64(gitValue) + `"}}`,
			live:    `{apiVersion: v1, kind: Secret, type: Opaque, metadata: {name: db, labels: {team: b}, annotations: {owner: dev}}, data: {password: "` + b64(liveValue) + `"}}`,
			want: []string{"data[password] differs from Git (value hidden)", "metadata.annotations[owner] is dev (Git: ops)",
				"metadata.labels[team] is b (Git: a)", "type is Opaque (Git: kubernetes.io/tls)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			desired, live := obj(t, tt.desired), obj(t, tt.live)
			// Both ways round, as the plugin compares them.
			for _, changes := range [][]Change{Compare(desired, live), Compare(live, desired)} {
				g.Expect(changes).NotTo(BeEmpty())
				for _, c := range changes {
					for _, text := range []string{c.String(), c.Path, c.Desired, c.Live, fmt.Sprintf("%+v", c)} {
						for _, form := range secretForms(gitValue, liveValue) {
							g.Expect(text).NotTo(ContainSubstring(form), "%s", c.Path)
						}
					}
				}
			}
			var got []string
			for _, c := range Compare(desired, live) {
				got = append(got, c.String())
			}
			g.Expect(got).To(Equal(tt.want))
		})
	}
}

// TestCompareShowsConfigMapValues: only Secrets are hidden; a ConfigMap's drift still says
// what the value is and what Git wants.
func TestCompareShowsConfigMapValues(t *testing.T) {
	g := NewWithT(t)
	changes := Compare(
		obj(t, `{apiVersion: v1, kind: ConfigMap, metadata: {name: web}, data: {greeting: hello, tls.mode: strict}}`),
		obj(t, `{apiVersion: v1, kind: ConfigMap, metadata: {name: web}, data: {greeting: bonjour}}`))
	g.Expect(changes).To(Equal([]Change{
		{Path: "data[greeting]", Desired: "hello", Live: "bonjour"},
		{Path: "data[tls.mode]", Desired: "strict"},
	}))
	g.Expect(changes[0].String()).To(Equal("data[greeting] is bonjour (Git: hello)"))
	// A Secret in another group is not a core Secret.
	changes = Compare(
		obj(t, `{apiVersion: example.com/v1, kind: Secret, metadata: {name: web}, data: {a: b}}`),
		obj(t, `{apiVersion: example.com/v1, kind: Secret, metadata: {name: web}, data: {a: c}}`))
	g.Expect(changes).To(Equal([]Change{{Path: "data[a]", Desired: "b", Live: "c"}}))
}

// TestRedact: the plugin's diff of a Secret keeps its keys and shows which values changed,
// never the values; the objects given are not changed; other kinds pass as they are.
func TestRedact(t *testing.T) {
	g := NewWithT(t)
	live := obj(t, `{apiVersion: v1, kind: Secret, type: Opaque, metadata: {name: db, labels: {team: a}, annotations: {owner: x, kubectl.kubernetes.io/last-applied-configuration: '{"data":{"password":"`+b64(liveValue)+`"}}'}}, data: {password: "`+b64(liveValue)+`", user: YWRtaW4=, gone: "`+b64(liveValue)+`"}}`)
	merged := obj(t, `{apiVersion: v1, kind: Secret, type: Opaque, metadata: {name: db, labels: {team: a}}, data: {password: "`+b64(gitValue)+`", user: YWRtaW4=, new: "`+b64(gitValue)+`"}, stringData: {token: `+gitValue+`}}`)
	liveCopy, mergedCopy := live.DeepCopy(), merged.DeepCopy()

	before, after := Redact(live, merged)
	g.Expect(live).To(Equal(liveCopy))
	g.Expect(merged).To(Equal(mergedCopy))
	for _, u := range []*unstructured.Unstructured{before, after} {
		b, err := yaml.Marshal(u.Object)
		g.Expect(err).NotTo(HaveOccurred())
		for _, form := range append(secretForms(gitValue, liveValue), "YWRtaW4") {
			g.Expect(string(b)).NotTo(ContainSubstring(form))
		}
	}
	g.Expect(before.Object["data"]).To(Equal(map[string]any{"password": hiddenBefore, "user": HiddenValue, "gone": HiddenValue}))
	g.Expect(after.Object["data"]).To(Equal(map[string]any{"password": hiddenAfter, "user": HiddenValue, "new": HiddenValue}))
	g.Expect(after.Object["stringData"]).To(Equal(map[string]any{"token": HiddenValue}))
	g.Expect(before.GetAnnotations()).To(Equal(map[string]string{"owner": "x", "kubectl.kubernetes.io/last-applied-configuration": HiddenValue}))
	g.Expect(before.GetLabels()).To(Equal(map[string]string{"team": "a"}))
	g.Expect(after.Object["type"]).To(Equal("Opaque"))

	// A created or deleted Secret has one side.
	before, after = Redact(nil, merged)
	g.Expect(before).To(BeNil())
	g.Expect(after.Object["data"]).To(Equal(map[string]any{"password": HiddenValue, "user": HiddenValue, "new": HiddenValue}))
	before, after = Redact(live, nil)
	g.Expect(after).To(BeNil())
	g.Expect(before.Object["data"]).To(HaveKeyWithValue("password", HiddenValue))

	cm := obj(t, `{apiVersion: v1, kind: ConfigMap, metadata: {name: web}, data: {greeting: hello}}`)
	before, after = Redact(cm, nil)
	g.Expect(before).To(BeIdenticalTo(cm))
	g.Expect(after).To(BeNil())
}

// FuzzCompareSecret: whatever a Secret holds, its changes carry no value but HiddenValue,
// and Redact leaves none but the markers.
func FuzzCompareSecret(f *testing.F) {
	f.Add("password", gitValue, liveValue)
	f.Add("tls.crt", "", "x")
	f.Add("a]b[c", "same", "same")
	f.Fuzz(func(t *testing.T, key, desired, live string) {
		switch key {
		case "apiVersion", "kind", "metadata", "type", "immutable":
			t.Skip("the fields that say what the object is, and are shown")
		}
		secret := func(v string) *unstructured.Unstructured {
			return &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "s", "annotations": map[string]any{corev1.LastAppliedConfigAnnotation: v}},
				"data": map[string]any{key: v}, "stringData": map[string]any{key: v}, key: v,
			}}
		}
		d, l := secret(desired), secret(live)
		for _, c := range Compare(d, l) {
			if !c.Hidden || c.Desired != HiddenValue || (c.Live != HiddenValue && c.Live != "") {
				t.Fatalf("change not hidden: %+v", c)
			}
		}
		before, after := Redact(l, d)
		for _, u := range []*unstructured.Unstructured{before, after} {
			for _, field := range []string{"data", "stringData"} {
				m, _, _ := unstructured.NestedMap(u.Object, field)
				for _, v := range m {
					if v != HiddenValue && v != hiddenBefore && v != hiddenAfter {
						t.Fatalf("%s holds %q", field, v)
					}
				}
			}
			if v := u.GetAnnotations()[corev1.LastAppliedConfigAnnotation]; v != HiddenValue && v != hiddenBefore && v != hiddenAfter {
				t.Fatalf("last-applied holds %q", v)
			}
		}
	})
}
