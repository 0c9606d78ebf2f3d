package pin

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	goyaml "go.yaml.in/yaml/v3"
)

const testDigest = "sha256:abababababababababababababababababababababababababababababababab"

func TestScanAndRewrite(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		in       string
		want     string
		images   []string
		problems []string
	}{
		{
			name: "plain, quoted and commented images keep their formatting",
			file: "deploy.yaml",
			in: `# the web tier
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      initContainers:
      - name: init
        image: "busybox"   # no tag: latest
      containers:
      - name: app
        image: ghcr.io/acme/web:1.0 # pinned by kubectl release pin
      - {name: side, image: 'ghcr.io/acme/side:2'}
      - name: done
        image: ghcr.io/acme/done:1@` + testDigest + `
`,
			want: `# the web tier
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      initContainers:
      - name: init
        image: "busybox:latest@` + testDigest + `"   # no tag: latest
      containers:
      - name: app
        image: ghcr.io/acme/web:1.0@` + testDigest + ` # pinned by kubectl release pin
      - {name: side, image: 'ghcr.io/acme/side:2@` + testDigest + `'}
      - name: done
        image: ghcr.io/acme/done:1@` + testDigest + `
`,
			images: []string{"busybox:latest", "ghcr.io/acme/web:1.0", "ghcr.io/acme/side:2"},
		},
		{
			name: "pod, cronjob and list, CRLF line ends",
			file: "more.yaml",
			in: "apiVersion: v1\r\nkind: Pod\r\nmetadata: {name: p}\r\nspec:\r\n  containers:\r\n  - {name: a, image: a:1}\r\n---\r\n" +
				"apiVersion: v1\r\nkind: List\r\nitems:\r\n- apiVersion: batch/v1\r\n  kind: CronJob\r\n  metadata: {name: c}\r\n  spec:\r\n    jobTemplate:\r\n      spec:\r\n        template:\r\n          spec:\r\n            containers:\r\n            - {name: b, image: b:2}\r\n",
			want: "apiVersion: v1\r\nkind: Pod\r\nmetadata: {name: p}\r\nspec:\r\n  containers:\r\n  - {name: a, image: a:1@" + testDigest + "}\r\n---\r\n" +
				"apiVersion: v1\r\nkind: List\r\nitems:\r\n- apiVersion: batch/v1\r\n  kind: CronJob\r\n  metadata: {name: c}\r\n  spec:\r\n    jobTemplate:\r\n      spec:\r\n        template:\r\n          spec:\r\n            containers:\r\n            - {name: b, image: b:2@" + testDigest + "}\r\n",
			images: []string{"a:1", "b:2"},
		},
		{
			name: "kustomization images entries get a digest field",
			file: "overlay/kustomization.yaml",
			in: `resources: [../base]
images:
- name: web # the app
  newName: ghcr.io/acme/web
  newTag: "1.0" # bumped by CI
- {name: side, newTag: '2'}
- name: done
  newTag: "1"
  digest: ` + testDigest + `
- name: renamed
  newName: ghcr.io/acme/renamed
`,
			want: `resources: [../base]
images:
- name: web # the app
  newName: ghcr.io/acme/web
  newTag: "1.0" # bumped by CI
  digest: ` + testDigest + `
- {name: side, newTag: '2', digest: ` + testDigest + `}
- name: done
  newTag: "1"
  digest: ` + testDigest + `
- name: renamed
  newName: ghcr.io/acme/renamed
`,
			images: []string{"ghcr.io/acme/web:1.0", "side:2"},
		},
		{
			name: "what pin cannot fix",
			file: "bad.yaml",
			in: `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
      - name: a
        image: "Not A Reference"
      - name: b
        image: web@md5:abc
      - name: c
        image: >-
          web:1
      - name: d
        image: "web\x3a1"
`,
			want: "",
			problems: []string{
				`bad.yaml:9: Deployment/web container a: image "Not A Reference" is not a valid image reference`,
				`bad.yaml:11: Deployment/web container b: image "web@md5:abc" uses a md5 digest; only sha256 digests are accepted; pin does not replace digests: correct it by hand`,
				`bad.yaml:13: Deployment/web container c: the image is written in a form pin cannot edit in place: write it as a plain or quoted string on one line`,
				`bad.yaml:16: Deployment/web container d: the image is written in a form pin cannot edit in place: write it as a plain or quoted string on one line`,
			},
		},
		{
			name:     "syntax error",
			file:     "broken.yaml",
			in:       "kind: [\n",
			problems: []string{"broken.yaml: YAML error: line 1: did not find expected node content"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			sites, problems := Scan(tt.file, []byte(tt.in))
			var got []string
			for _, p := range problems {
				got = append(got, p.String())
			}
			g.Expect(got).To(Equal(tt.problems))
			var images []string
			digests := map[string]string{}
			for _, s := range sites {
				images = append(images, s.Image)
				digests[s.Image] = testDigest
			}
			g.Expect(images).To(Equal(tt.images))
			if tt.want != "" {
				g.Expect(string(Rewrite([]byte(tt.in), sites, digests))).To(Equal(tt.want))
			}
		})
	}
}

// FuzzScanRewrite checks that whatever a file holds, pinning every image it finds leaves a
// file that still parses and has nothing left to pin, and changes nothing but those images.
func FuzzScanRewrite(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: a:1}\n"))
	f.Add([]byte("images:\n- name: web\n  newTag: \"1.0\" # c\n- {name: x, newTag: '2'}\n"))
	f.Add([]byte("apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: 'é:1'\n"))
	f.Add([]byte("kind: Kustomization\nimages:\n- name: a\n  newTag: b\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, file := range []string{"f.yaml", "kustomization.yaml"} {
			sites, _ := Scan(file, data)
			if len(sites) == 0 {
				continue
			}
			digests := map[string]string{}
			for _, s := range sites {
				digests[s.Image] = testDigest
			}
			out := Rewrite(data, sites, digests)
			again, problems := Scan(file, out)
			if len(again) != 0 {
				t.Fatalf("still unpinned after rewrite: %+v\n%q", again, out)
			}
			for _, p := range problems {
				if strings.Contains(p.Message, "YAML error") {
					t.Fatalf("rewrite broke the YAML: %v\n%q", p, out)
				}
			}
			var before, after []any
			decodeAll(data, &before)
			decodeAll(out, &after)
			if len(before) != len(after) {
				t.Fatalf("rewrite changed the documents: %d then %d\n%q", len(before), len(after), out)
			}
		}
	})
}

func decodeAll(data []byte, docs *[]any) {
	dec := goyaml.NewDecoder(strings.NewReader(string(data)))
	for {
		var v any
		if dec.Decode(&v) != nil {
			return
		}
		*docs = append(*docs, v)
	}
}
