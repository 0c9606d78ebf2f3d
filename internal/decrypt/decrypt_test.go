package decrypt_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/immutable-release/operator/internal/decrypt"
	"github.com/immutable-release/operator/internal/testsops"
)

func TestDecrypt(t *testing.T) {
	key := testsops.NewKey(t)
	d, err := decrypt.New(key.Private)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	for _, tc := range []struct {
		file, plain, want string
	}{
		{"secret.yaml", testsops.SecretYAML, "password: hunter2-very-secret"},
		{"secret.json", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db"},"stringData":{"password":"hunter2-very-secret"}}`, `"password": "hunter2-very-secret"`},
		{"app.env", "PASSWORD=hunter2-very-secret\n", "PASSWORD=hunter2-very-secret"},
		{"tls.key", "-----BEGIN KEY-----\nhunter2-very-secret\n", "hunter2-very-secret"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			g := NewWithT(t)
			enc := testsops.Encrypt(t, tc.file, []byte(tc.plain), key.Recipient)
			g.Expect(string(enc)).NotTo(ContainSubstring("hunter2"))
			g.Expect(decrypt.Encrypted(tc.file, enc)).To(BeTrue())
			g.Expect(decrypt.Encrypted(tc.file, []byte(tc.plain))).To(BeFalse())
			out, err := d.Decrypt(tc.file, enc)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(string(out)).To(ContainSubstring(tc.want))
			g.Expect(string(out)).NotTo(ContainSubstring("sops"))
			// A plain file passes through untouched, with keys or without.
			plain, err := d.Decrypt(tc.file, []byte(tc.plain))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(string(plain)).To(Equal(tc.plain))
		})
	}
}

// TestDecryptRefuses: every way a file or a key can be wrong refuses it, and no message
// holds a value, a key or a MAC.
func TestDecryptRefuses(t *testing.T) {
	key, other := testsops.NewKey(t), testsops.NewKey(t)
	d, err := decrypt.New(key.Private)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	enc := testsops.Encrypt(t, "secret.yaml", []byte(testsops.SecretYAML), key.Recipient)
	forOther := testsops.Encrypt(t, "secret.yaml", []byte(testsops.SecretYAML), other.Recipient)
	deep := "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\ndata: " + strings.Repeat("[", 150) + strings.Repeat("]", 150) + "\nsops: {mac: x}\n"

	for _, tc := range []struct {
		name string
		d    *decrypt.Decryptor
		data []byte
		want string
	}{
		{"no keys", nil, enc, "sets no spec.decryption"},
		{"wrong key", d, forOther, "no age key of the key Secret decrypts the file"},
		{"tampered value", d, tamperValue(t, enc), "ciphertext was changed"},
		{"tampered plain field", d, bytes.Replace(enc, []byte("name: db"), []byte("name: dc"), 1), "the MAC does not match"},
		{"tampered mac", d, tamperMAC(t, enc), "the MAC does not match"},
		{"deeply nested", d, []byte(deep), "nests more than 100 levels"},
		{"metadata without keys", d, []byte("kind: Secret\nsops: {mac: x, version: 3.13.3, lastmodified: '2026-01-01T00:00:00Z'}\n"), "No keys found"},
		{"a PGP key only", d, []byte("kind: Secret\nsops: {mac: x, version: 3.13.3, lastmodified: '2026-01-01T00:00:00Z', pgp: [{fp: ABCD, enc: x, created_at: '2026-01-01T00:00:00Z'}]}\n"), "no age recipient"},
		{"broken metadata", d, []byte("kind: Secret\nsops: {age: 7}\n"), "reading the SOPS metadata"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			out, err := tc.d.Decrypt("secret.yaml", tc.data)
			g.Expect(err).To(MatchError(ContainSubstring(tc.want)))
			g.Expect(out).To(BeNil())
			g.Expect(err.Error()).NotTo(ContainSubstring("hunter2"))
			g.Expect(err.Error()).NotTo(ContainSubstring("AGE-SECRET-KEY"))
			g.Expect(err.Error()).NotTo(MatchRegexp("[0-9A-F]{64}"))
		})
	}
}

// TestDecryptTooDeepForYAML: a file nested beyond what the YAML parser takes is not a SOPS
// file to it; it is passed on as it is (and the build refuses it as invalid YAML), without
// reaching the recursive SOPS stores.
func TestDecryptTooDeepForYAML(t *testing.T) {
	g := NewWithT(t)
	d, err := decrypt.New(testsops.NewKey(t).Private)
	g.Expect(err).NotTo(HaveOccurred())
	deep := []byte("{\"sops\": {\"mac\": \"x\"}, \"data\": " + strings.Repeat("[", 1_000_000) + strings.Repeat("]", 1_000_000) + "}")
	g.Expect(decrypt.Encrypted("secret.json", deep)).To(BeFalse())
	out, err := d.Decrypt("secret.json", deep)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(out).To(Equal(deep))
}

// TestDecryptIgnoresAmbientKeys: the keys the manager's environment names (SOPS_AGE_KEY_FILE,
// SOPS_AGE_KEY, as the sops CLI reads them) never decrypt a tenant's file.
func TestDecryptIgnoresAmbientKeys(t *testing.T) {
	g := NewWithT(t)
	tenant, ambient := testsops.NewKey(t), testsops.NewKey(t)
	file := filepath.Join(t.TempDir(), "keys.txt")
	g.Expect(os.WriteFile(file, ambient.Private, 0o600)).To(Succeed())
	t.Setenv("SOPS_AGE_KEY_FILE", file)
	t.Setenv("SOPS_AGE_KEY", string(ambient.Private))
	d, err := decrypt.New(tenant.Private)
	g.Expect(err).NotTo(HaveOccurred())
	_, err = d.Decrypt("secret.yaml", testsops.Encrypt(t, "secret.yaml", []byte(testsops.SecretYAML), ambient.Recipient))
	g.Expect(err).To(MatchError(ContainSubstring("no age key of the key Secret decrypts the file")))
}

func TestFromSecret(t *testing.T) {
	key := testsops.NewKey(t)
	enc := testsops.Encrypt(t, "secret.yaml", []byte(testsops.SecretYAML), key.Recipient)
	t.Run("keys under .agekey entries", func(t *testing.T) {
		g := NewWithT(t)
		d, err := decrypt.FromSecret("sops-age", map[string][]byte{"other.agekey": testsops.NewKey(t).Private, "prod.agekey": key.Private, "README": []byte("x")})
		g.Expect(err).NotTo(HaveOccurred())
		out, err := d.Decrypt("secret.yaml", enc)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(out)).To(ContainSubstring("hunter2-very-secret"))
	})
	for _, tc := range []struct {
		name string
		data map[string][]byte
		want string
	}{
		{"no .agekey entry", map[string][]byte{"age.key": key.Private, "identity": key.Private}, `secret "sops-age" holds no age key: add the private key`},
		{"not a key", map[string][]byte{"age.agekey": []byte("AGE-SECRET-KEY-1NOTAKEYATALLNOTAKEYATALL\n")}, `entry "age.agekey" is not a list of age private keys`},
		{"a plugin", map[string][]byte{"age.agekey": []byte("AGE-PLUGIN-YUBIKEY-1QQQQQQQQQQQQQQQQQQQQQQQQ\n")}, "age plugins and SSH keys are not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := decrypt.FromSecret("sops-age", tc.data)
			g.Expect(err).To(MatchError(ContainSubstring(tc.want)))
			g.Expect(err.Error()).NotTo(ContainSubstring("NOTAKEY"))
			g.Expect(err.Error()).NotTo(ContainSubstring("YUBIKEY"))
		})
	}
}

// tamperValue changes one character of the first encrypted value's ciphertext.
func tamperValue(t *testing.T, enc []byte) []byte {
	i := bytes.Index(enc, []byte("ENC[AES256_GCM,data:"))
	if i < 0 {
		t.Fatal("no encrypted value")
	}
	out := bytes.Clone(enc)
	j := i + len("ENC[AES256_GCM,data:")
	if out[j] == 'A' {
		out[j] = 'B'
	} else {
		out[j] = 'A'
	}
	return out
}

// tamperMAC replaces the MAC with one made for another file.
func tamperMAC(t *testing.T, enc []byte) []byte {
	i := bytes.Index(enc, []byte("mac: ENC["))
	if i < 0 {
		t.Fatal("no mac")
	}
	end := bytes.IndexByte(enc[i:], '\n')
	return append(append(bytes.Clone(enc[:i]), "mac: ENC[AES256_GCM,data:AAAA,iv:AAAAAAAAAAAAAAAAAAAAAA==,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]"...), enc[i+end:]...)
}

// FuzzDecrypt: whatever a repository serves as a file, Decrypt returns an error or a
// result, without panicking or exhausting the stack; a changed encrypted file never
// decrypts to a value it did not hold.
func FuzzDecrypt(f *testing.F) {
	key := testsops.NewKey(f)
	d, err := decrypt.New(key.Private)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("secret.yaml", testsops.Encrypt(f, "secret.yaml", []byte(testsops.SecretYAML), key.Recipient))
	f.Add("secret.json", testsops.Encrypt(f, "secret.json", []byte(`{"kind":"Secret","data":{"a":"b"}}`), key.Recipient))
	f.Add("app.env", testsops.Encrypt(f, "app.env", []byte("A=b\n"), key.Recipient))
	f.Add("tls.key", testsops.Encrypt(f, "tls.key", []byte("bin"), key.Recipient))
	f.Add("x.yaml", []byte("sops: {mac: x}\ndata: [[[[]]]]\n"))
	f.Fuzz(func(t *testing.T, file string, data []byte) {
		out, err := d.Decrypt(file, data)
		if err == nil && !decrypt.Encrypted(file, data) && !bytes.Equal(out, data) {
			t.Fatalf("a plain file changed")
		}
	})
}
