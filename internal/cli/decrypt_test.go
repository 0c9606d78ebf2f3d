package cli

import (
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/testsops"
)

const sopsSecret = "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2-very-secret}\n"

// TestVerifyDecrypts: verify decrypts SOPS files with the key it is given (flag or the
// environment sops reads), reports them without one, and never prints a value or a key.
func TestVerifyDecrypts(t *testing.T) {
	key, other := testsops.NewKey(t), testsops.NewKey(t)
	dir := folder(t, map[string]string{
		"deploy/app.yaml":    deployment("ghcr.io/acme/web@" + digest),
		"deploy/secret.yaml": string(testsops.Encrypt(t, "secret.yaml", []byte(sopsSecret), key.Recipient)),
	})
	keys := filepath.Join(t.TempDir(), "keys.txt")
	otherKeys := filepath.Join(t.TempDir(), "other.txt")
	NewWithT(t).Expect(os.WriteFile(keys, key.Private, 0o600)).To(Succeed())
	NewWithT(t).Expect(os.WriteFile(otherKeys, other.Private, 0o600)).To(Succeed())
	deploy := filepath.Join(dir, "deploy")

	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
	}{
		{"no key", nil, nil, ExitFailed, "secret.yaml: the file is SOPS-encrypted and the release sets no spec.decryption"},
		{"--age-key-file", []string{"--age-key-file", keys}, nil, ExitOK, "2 objects, 1 images pinned by digest"},
		{"SOPS_AGE_KEY_FILE", nil, map[string]string{"SOPS_AGE_KEY_FILE": keys}, ExitOK, "2 objects"},
		{"SOPS_AGE_KEY", nil, map[string]string{"SOPS_AGE_KEY": string(key.Private)}, ExitOK, "2 objects"},
		{"the flag wins", []string{"--age-key-file", otherKeys}, map[string]string{"SOPS_AGE_KEY_FILE": keys}, ExitFailed, "secret.yaml: no age key of the key Secret decrypts the file"},
		{"json", []string{"--age-key-file", otherKeys, "-o", "json"}, nil, ExitFailed, `"reason": "DecryptionFailed"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			t.Setenv("SOPS_AGE_KEY_FILE", "")
			t.Setenv("SOPS_AGE_KEY", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, out, errOut := verify(append([]string{deploy}, tc.args...)...)
			g.Expect(code).To(Equal(tc.code), out+errOut)
			g.Expect(out).To(ContainSubstring(tc.want))
			for _, s := range []string{out, errOut} {
				g.Expect(s).NotTo(ContainSubstring("hunter2"))
				g.Expect(s).NotTo(ContainSubstring("AGE-SECRET-KEY"))
			}
		})
	}

	g := NewWithT(t)
	bad := filepath.Join(t.TempDir(), "bad.txt")
	g.Expect(os.WriteFile(bad, []byte("AGE-SECRET-KEY-1NOTAKEYNOTAKEY\n"), 0o600)).To(Succeed())
	code, out, errOut := verify(deploy, "--age-key-file", bad)
	g.Expect(code).To(Equal(ExitUsage))
	g.Expect(errOut).To(ContainSubstring("--age-key-file: not a list of age private keys"))
	g.Expect(out + errOut).NotTo(ContainSubstring("NOTAKEY"))
}
