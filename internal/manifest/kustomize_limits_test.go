package manifest

import (
	"fmt"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// TestBuildKustomizeLimits holds kustomize to the limits plain folders have: each attack is a
// small repository that makes kustomize read or render more than the limits allow.
func TestBuildKustomizeLimits(t *testing.T) {
	limits := Limits{MaxFileSize: 64 << 10, MaxTotalSize: 256 << 10, MaxObjects: 100}
	pad := func(n int) string { return strings.Repeat("x", n) }
	bigConfigMap := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata: {blob: " + pad(70<<10) + "}\n"

	// A base that eight overlays name: each reads its 40 KiB transformer configuration again,
	// 320 KiB in all from 40 KiB on disk, while the output stays a few small ConfigMaps.
	fanOut := map[string]string{
		"base/kustomization.yaml": "resources: [cm.yaml]\nconfigurations: [conf.yaml]\n",
		"base/cm.yaml":            configMap,
		"base/conf.yaml":          "# " + pad(40<<10) + "\nnamePrefix: [{path: metadata/name}]\n",
	}
	var overlays []string
	for i := range 8 {
		fanOut[fmt.Sprintf("o%d/kustomization.yaml", i)] = fmt.Sprintf("resources: [../base]\nnamePrefix: o%d-\n", i)
		overlays = append(overlays, fmt.Sprintf("../o%d", i))
	}
	fanOut["app/kustomization.yaml"] = "resources: [" + strings.Join(overlays, ", ") + "]\n"

	// Forty small ConfigMaps, each given the same 8 KiB annotation: 330 KiB of output from
	// 12 KiB of input.
	var many strings.Builder
	for i := range 40 {
		fmt.Fprintf(&many, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c%d}\n", i)
	}

	// One object grown past MaxFileSize by annotations from files that are each below it.
	grown := map[string]string{
		"app/kustomization.yaml":  "resources: [../base]\ncommonAnnotations: {a: " + pad(34<<10) + "}\n",
		"base/kustomization.yaml": "resources: [cm.yaml]\ncommonAnnotations: {b: " + pad(34<<10) + "}\n",
		"base/cm.yaml":            configMap,
	}

	// Five copies of a base of 25 ConfigMaps: 125 objects.
	var base strings.Builder
	for i := range 25 {
		fmt.Fprintf(&base, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c%d}\n", i)
	}
	copies := map[string]string{"base/kustomization.yaml": "resources: [cm.yaml]\n", "base/cm.yaml": base.String()}
	overlays = nil
	for i := range 5 {
		copies[fmt.Sprintf("o%d/kustomization.yaml", i)] = fmt.Sprintf("resources: [../base]\nnameSuffix: -o%d\n", i)
		overlays = append(overlays, fmt.Sprintf("../o%d", i))
	}
	copies["app/kustomization.yaml"] = "resources: [" + strings.Join(overlays, ", ") + "]\n"

	tests := []struct {
		name    string
		files   map[string]string
		message []string
	}{
		{name: "resource file over MaxFileSize", files: kust("resources: [cm.yaml, big.yaml]").with("app/big.yaml", bigConfigMap),
			message: []string{fmt.Sprintf("app/big.yaml: file is %d bytes, over the limit of 65536 bytes", len(bigConfigMap))}},
		{name: "patch file over MaxFileSize", files: kust("resources: [cm.yaml]\npatches: [{path: patch.yaml}]").with("app/patch.yaml", strings.ReplaceAll(bigConfigMap, "big", "settings")),
			message: []string{"app/patch.yaml: file is", "over the limit of 65536 bytes"}},
		{name: "generator file over MaxFileSize", files: kust("configMapGenerator: [{name: c, files: [blob.txt]}]").with("app/blob.txt", pad(70<<10)),
			message: []string{"app/blob.txt: file is 71680 bytes, over the limit of 65536 bytes"}},
		{name: "kustomization file over MaxFileSize", files: kust("resources: [cm.yaml]\n# " + pad(70<<10)),
			message: []string{"app/kustomization.yaml: file is", "over the limit of 65536 bytes"}},
		{name: "one base read by many overlays over MaxTotalSize", files: fanOut,
			message: []string{"base/conf.yaml: kustomize read more than the limit of 262144 bytes in all"}},
		{name: "rendered output over MaxTotalSize", files: map[string]string{
			"app/kustomization.yaml": "resources: [many.yaml]\ncommonAnnotations: {blob: " + pad(8<<10) + "}\n",
			"app/many.yaml":          many.String(),
		}, message: []string{"app/kustomization.yaml: kustomize output exceeds the limit of 262144 bytes in all"}},
		{name: "rendered object over MaxFileSize", files: grown,
			message: []string{"app/kustomization.yaml: ConfigMap/settings: kustomize output object is", "over the limit of 65536 bytes"}},
		{name: "copies of a base over MaxObjects", files: copies,
			message: []string{"app/kustomization.yaml: kustomize output holds 125 objects, over the limit of 100"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			root := writeTree(t, tt.files)
			objects, err := Build(root, "app", limits)
			g.Expect(len(objects)).To(BeZero())
			g.Expect(reasonOf(err)).To(Equal(ReasonInvalidManifest), "error: %v", err)
			for _, m := range tt.message {
				g.Expect(err.Error()).To(ContainSubstring(m))
			}
		})
	}

	t.Run("the same repositories build within DefaultLimits", func(t *testing.T) {
		for _, files := range []map[string]string{fanOut, grown, copies} {
			_, err := Build(writeTree(t, files), "app", DefaultLimits)
			NewWithT(t).Expect(err).NotTo(HaveOccurred())
		}
	})
}

// tree is a repository to write with writeTree, built up with with.
type tree map[string]string

func (t tree) with(name, content string) tree {
	t[name] = content
	return t
}

// kust is a repository whose folder app holds a kustomization and a ConfigMap it may name.
func kust(kustomization string) tree {
	return tree{"app/kustomization.yaml": kustomization + "\n", "app/cm.yaml": configMap}
}
