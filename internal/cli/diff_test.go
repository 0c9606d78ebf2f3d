package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/immutable-release/operator/internal/drift"
)

func object(t *testing.T, s string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(s), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestDiffHidesSecretValues is the attack on `kubectl release diff` and `verify --against`,
// whose output lands in CI logs: a Secret changed, created or deleted shows its keys and
// which of them change, never a value, live or from Git, in text or JSON, nor the copy
// kubectl apply keeps in an annotation.
func TestDiffHidesSecretValues(t *testing.T) {
	const gitValue, liveValue = "s3cr3t-from-git", "hunter2-live-value"
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	live := object(t, `{apiVersion: v1, kind: Secret, type: Opaque, metadata: {name: db, namespace: shop, resourceVersion: "7",
  annotations: {kubectl.kubernetes.io/last-applied-configuration: '{"data":{"password":"`+b64(liveValue)+`"}}'}},
  data: {password: "`+b64(liveValue)+`", user: YWRtaW4=}}`)
	merged := object(t, `{apiVersion: v1, kind: Secret, type: Opaque, metadata: {name: db, namespace: shop},
  data: {password: "`+b64(gitValue)+`", user: YWRtaW4=}}`)
	forms := []string{"YWRtaW4", "admin"}
	for _, v := range []string{gitValue, liveValue} {
		forms = append(forms, v, b64(v), base64.RawStdEncoding.EncodeToString([]byte(v))[:12])
	}

	tests := []struct {
		name        string
		live, after *unstructured.Unstructured
		action      string
		fields      []string
		lines       []string
	}{
		{name: "configured", live: live, after: merged, action: actionConfigured,
			fields: []string{"data[password]", "metadata.annotations[kubectl.kubernetes.io/last-applied-configuration]"},
			lines: []string{"-  password: (value hidden, before)\n", "+  password: (value hidden, after)\n", "   user: (value hidden)\n",
				"-    kubectl.kubernetes.io/last-applied-configuration: (value hidden)\n"}},
		{name: "created", after: merged, action: actionCreated, lines: []string{"+  password: (value hidden)\n"}},
		{name: "deleted", live: live, action: actionDeleted, lines: []string{"-  password: (value hidden)\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			c := compare("Secret/shop/db", tt.live, tt.after, "main@sha1:1234")
			g.Expect(c.Action).To(Equal(tt.action))
			g.Expect(c.Fields).To(Equal(tt.fields))
			var out bytes.Buffer
			(&options{out: &out}).printChanges([]objectChange{c})
			js, err := json.Marshal(c)
			g.Expect(err).NotTo(HaveOccurred())
			for _, text := range []string{out.String(), string(js)} {
				for _, form := range forms {
					g.Expect(text).NotTo(ContainSubstring(form))
				}
			}
			for _, l := range tt.lines {
				g.Expect(out.String()).To(ContainSubstring(l))
			}
		})
	}
	// The objects given are not changed: the caller may apply them.
	g := NewWithT(t)
	g.Expect(merged.Object["data"]).To(HaveKeyWithValue("password", b64(gitValue)))
	g.Expect(live.Object["data"]).To(HaveKeyWithValue("password", b64(liveValue)))
	g.Expect(drift.HiddenValue).To(Equal("(value hidden)"))
}

// TestDiffShowsConfigMapValues: other kinds show their values, as before.
func TestDiffShowsConfigMapValues(t *testing.T) {
	g := NewWithT(t)
	c := compare("ConfigMap/shop/web",
		object(t, `{apiVersion: v1, kind: ConfigMap, metadata: {name: web}, data: {greeting: hello}}`),
		object(t, `{apiVersion: v1, kind: ConfigMap, metadata: {name: web}, data: {greeting: bonjour}}`), "local dir")
	g.Expect(c.Action).To(Equal(actionConfigured))
	g.Expect(c.Fields).To(Equal([]string{"data[greeting]"}))
	g.Expect(c.Diff).To(ContainSubstring("-  greeting: hello\n+  greeting: bonjour\n"))
}
