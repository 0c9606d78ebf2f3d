package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/decrypt"
	"github.com/immutable-release/operator/internal/testsops"
)

func TestBuildDecrypted(t *testing.T) {
	key := testsops.NewKey(t)
	d, err := decrypt.New(key.Private)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	enc := string(testsops.Encrypt(t, "secret.yaml", []byte(testsops.SecretYAML), key.Recipient))
	envFile := string(testsops.Encrypt(t, "app.env", []byte("API_TOKEN=token-very-secret\n"), key.Recipient))
	binFile := string(testsops.Encrypt(t, "tls.key", []byte("key-very-secret"), key.Recipient))

	for _, tc := range []struct {
		name  string
		files map[string]string
		want  map[string]map[string]any // Secret name: field: value
	}{
		{name: "plain folder", files: map[string]string{"app/secret.yaml": enc, "app/cm.yaml": configMap},
			want: map[string]map[string]any{"db": {"stringData": map[string]any{"password": "hunter2-very-secret"}}}},
		{name: "kustomize resources and generators", files: map[string]string{
			"app/secret.yaml": enc,
			"app/app.env":     envFile,
			"app/tls.key":     binFile,
			"app/kustomization.yaml": "resources: [secret.yaml]\ngeneratorOptions: {disableNameSuffixHash: true}\n" +
				"secretGenerator:\n- name: env\n  envs: [app.env]\n- name: tls\n  files: [tls.key]\n",
		}, want: map[string]map[string]any{
			"db":  {"stringData": map[string]any{"password": "hunter2-very-secret"}},
			"env": {"data": map[string]any{"API_TOKEN": "dG9rZW4tdmVyeS1zZWNyZXQ="}},
			"tls": {"data": map[string]any{"tls.key": "a2V5LXZlcnktc2VjcmV0"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			root := writeTree(t, tc.files)
			objects, err := BuildDecrypted(root, "app", DefaultLimits, d)
			g.Expect(err).NotTo(HaveOccurred())
			got := map[string]map[string]any{}
			for _, o := range objects {
				g.Expect(o.Object).NotTo(HaveKey("sops"))
				if o.GetKind() == "Secret" {
					got[o.GetName()] = map[string]any{}
					for _, f := range []string{"data", "stringData"} {
						if v, ok := o.Object[f]; ok {
							got[o.GetName()][f] = v
						}
					}
				}
			}
			g.Expect(got).To(Equal(tc.want))
			// The checkout keeps the ciphertext: nothing decrypted was written.
			for name, content := range tc.files {
				b, err := os.ReadFile(filepath.Join(root, name))
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(string(b)).To(Equal(content))
			}
		})
	}
}

func TestBuildDecryptedRefuses(t *testing.T) {
	key, other := testsops.NewKey(t), testsops.NewKey(t)
	d, err := decrypt.New(key.Private)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	enc := string(testsops.Encrypt(t, "secret.yaml", []byte(testsops.SecretYAML), key.Recipient))
	forOther := string(testsops.Encrypt(t, "secret.yaml", []byte(testsops.SecretYAML), other.Recipient))
	tampered := strings.Replace(enc, "name: db", "name: dc", 1)
	small := DefaultLimits
	small.MaxFileSize = int64(len(enc)) - 1
	kustomization := "resources: [secret.yaml, cm.yaml]\n"

	for _, tc := range []struct {
		name    string
		files   map[string]string
		d       *decrypt.Decryptor
		limits  Limits
		reason  string
		message []string
	}{
		{name: "no decryption set", files: map[string]string{"app/secret.yaml": enc, "app/cm.yaml": configMap}, reason: ReasonDecryptionFailed,
			message: []string{"app/secret.yaml: the file is SOPS-encrypted and the release sets no spec.decryption"}},
		{name: "no decryption set, kustomize", files: map[string]string{"app/secret.yaml": enc, "app/cm.yaml": configMap, "app/kustomization.yaml": kustomization},
			reason: ReasonDecryptionFailed, message: []string{"app/secret.yaml: the file is SOPS-encrypted and the release sets no spec.decryption"}},
		{name: "wrong key", files: map[string]string{"app/secret.yaml": forOther, "app/cm.yaml": configMap}, d: d, reason: ReasonDecryptionFailed,
			message: []string{"app/secret.yaml: no age key of the key Secret decrypts the file"}},
		{name: "wrong key, kustomize", files: map[string]string{"app/secret.yaml": forOther, "app/cm.yaml": configMap, "app/kustomization.yaml": kustomization}, d: d,
			reason: ReasonDecryptionFailed, message: []string{"app/secret.yaml: no age key of the key Secret decrypts the file"}},
		{name: "tampered", files: map[string]string{"app/secret.yaml": tampered}, d: d, reason: ReasonDecryptionFailed,
			message: []string{"app/secret.yaml: the MAC does not match"}},
		{name: "every file is named", files: map[string]string{"app/a.yaml": forOther, "app/b.yaml": tampered}, d: d, reason: ReasonDecryptionFailed,
			message: []string{"app/a.yaml: no age key", "app/b.yaml: the MAC does not match"}},
		{name: "over the file size limit", files: map[string]string{"app/secret.yaml": enc}, d: d, limits: small, reason: ReasonInvalidManifest,
			message: []string{"app/secret.yaml: file is", "over the limit"}},
		{name: "over the file size limit, kustomize", files: map[string]string{"app/secret.yaml": enc, "app/kustomization.yaml": "resources: [secret.yaml]\n"}, d: d, limits: small,
			reason: ReasonInvalidManifest, message: []string{"app/secret.yaml: file is", "over the limit"}},
		{name: "a patch over a decrypted value is withheld", d: d, files: map[string]string{"app/secret.yaml": enc,
			"app/kustomization.yaml": "resources: [secret.yaml]\npatches:\n- patch: '[{\"op\": \"test\", \"path\": \"/stringData/password\", \"value\": \"guess\"}]'\n  target: {kind: Secret}\n"},
			reason: ReasonInvalidManifest, message: []string{"kustomize build failed: the details are withheld, as they could quote a value decrypted from app/secret.yaml"}},
		{name: "an invalid decrypted object says where only", d: d,
			files:  map[string]string{"app/secret.yaml": string(testsops.Encrypt(t, "secret.yaml", []byte("apiVersion: v1\nkind: {stringData: hunter2-very-secret}\nmetadata: {name: db}\nstringData: {password: hunter2-very-secret}\n"), key.Recipient))},
			reason: ReasonInvalidManifest, message: []string{"app/secret.yaml:1: the decrypted document is not a valid Kubernetes object"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			limits := tc.limits
			if limits == (Limits{}) {
				limits = DefaultLimits
			}
			objects, err := BuildDecrypted(writeTree(t, tc.files), "app", limits, tc.d)
			g.Expect(objects).To(BeNil())
			var merr *Error
			g.Expect(errors.As(err, &merr)).To(BeTrue(), "%v", err)
			g.Expect(merr.Reason).To(Equal(tc.reason))
			for _, m := range tc.message {
				g.Expect(err.Error()).To(ContainSubstring(m))
			}
			g.Expect(err.Error()).NotTo(ContainSubstring("hunter2"))
		})
	}
}
