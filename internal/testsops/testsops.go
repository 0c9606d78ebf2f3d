// Package testsops encrypts test fixtures as the sops CLI does, with the SOPS and age Go
// libraries, so that tests make their ciphertext instead of checking in files nobody can
// regenerate.
package testsops

import (
	"crypto/rand"
	"path"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/stores/dotenv"
	"github.com/getsops/sops/v3/stores/json"
	"github.com/getsops/sops/v3/stores/yaml"
)

// SecretYAML is a plain Secret whose password, hunter2-very-secret, a test encrypts and
// then looks for where it must never appear.
const SecretYAML = `apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: hunter2-very-secret
`

// Key is a fresh age key pair.
type Key struct {
	// Private is the key file's content, as age-keygen writes it.
	Private []byte
	// Recipient is the public key (age1...).
	Recipient string
}

// NewKey generates an age key pair.
func NewKey(t testing.TB) Key {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return Key{Private: []byte("# created by a test\n" + id.String() + "\n"), Recipient: id.Recipient().String()}
}

// Encrypt encrypts plain, the content of file (its extension picks the format, as sops
// does), for the recipients, encrypting only data and stringData as Flux's guide advises.
func Encrypt(t testing.TB, file string, plain []byte, recipients ...string) []byte {
	t.Helper()
	store := storeFor(file)
	branches, err := store.LoadPlainFile(plain)
	if err != nil {
		t.Fatalf("loading %s: %v", file, err)
	}
	var group sops.KeyGroup
	for _, r := range recipients {
		k, err := sopsage.MasterKeyFromRecipient(r)
		if err != nil {
			t.Fatal(err)
		}
		group = append(group, k)
	}
	tree := sops.Tree{Branches: branches, Metadata: sops.Metadata{
		KeyGroups: []sops.KeyGroup{group},
		Version:   "3.13.3",
	}}
	if f := strings.ToLower(path.Ext(file)); f == ".yaml" || f == ".yml" || f == ".json" {
		tree.Metadata.EncryptedRegex = "^(data|stringData)$"
	}
	dataKey := make([]byte, 32)
	if _, err := rand.Read(dataKey); err != nil {
		t.Fatal(err)
	}
	for _, k := range group {
		if err := k.Encrypt(dataKey); err != nil {
			t.Fatal(err)
		}
	}
	cipher := aes.NewCipher()
	mac, err := tree.Encrypt(dataKey, cipher)
	if err != nil {
		t.Fatal(err)
	}
	tree.Metadata.LastModified = time.Now().UTC().Truncate(time.Second)
	tree.Metadata.MessageAuthenticationCode, err = cipher.Encrypt(mac, dataKey, tree.Metadata.LastModified.Format(time.RFC3339))
	if err != nil {
		t.Fatal(err)
	}
	out, err := store.EmitEncryptedFile(tree)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func storeFor(file string) sops.Store {
	switch strings.ToLower(path.Ext(file)) {
	case ".yaml", ".yml":
		return yaml.NewStore(&config.YAMLStoreConfig{})
	case ".json":
		return json.NewStore(&config.JSONStoreConfig{})
	case ".env":
		return dotenv.NewStore(&config.DotenvStoreConfig{})
	}
	return json.NewBinaryStore(&config.JSONBinaryStoreConfig{})
}
