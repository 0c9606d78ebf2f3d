// Package decrypt decrypts the SOPS-encrypted files of a release with age keys, in memory:
// what it returns is handed to the build and never written anywhere.
//
// Only age keys are used, and only those given to New: the SOPS libraries would otherwise
// look for keys in the manager's environment and home folder (SOPS_AGE_KEY_FILE, ~/.config)
// and run age plugins, which would let one tenant's file be decrypted with keys the tenant
// was never given. (The SOPS audit package, linked in by the libraries, reads
// /etc/sops/audit.yaml once at start: a file of the manager's image, not of any tenant.)
package decrypt

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/logging"
	"github.com/getsops/sops/v3/shamir"
	"github.com/getsops/sops/v3/stores/dotenv"
	"github.com/getsops/sops/v3/stores/json"
	"github.com/getsops/sops/v3/stores/yaml"
	"github.com/sirupsen/logrus"
	goyaml "go.yaml.in/yaml/v3"
)

// ProviderSOPS is the only value of spec.decryption.provider.
const ProviderSOPS = "sops"

// AgeKeySuffix ends the name of every entry of the key Secret that holds age private keys,
// as in Flux's kustomize-controller.
const AgeKeySuffix = ".agekey"

// MaxDepth is how deeply an encrypted file may nest. The SOPS stores walk a document
// recursively, so a file nested a million deep would exhaust the stack, which no recover
// survives; a Kubernetes object nests a few dozen levels at most.
const MaxDepth = 100

// metadataKey is the top-level key under which SOPS keeps its metadata.
const metadataKey = "sops"

// ErrNoDecryption is returned for an encrypted file when the release has no keys.
var ErrNoDecryption = errors.New("the file is SOPS-encrypted and the release sets no spec.decryption: " +
	"set spec.decryption.provider to sops and spec.decryption.secretRef to a Secret holding the age key (an entry ending in .agekey); it is never applied as ciphertext")

// Decryptor decrypts SOPS files with a fixed set of age identities. The nil *Decryptor has
// no keys: it passes plain files through and refuses encrypted ones with ErrNoDecryption.
type Decryptor struct {
	identities sopsage.ParsedIdentities
}

// FromSecret reads the age private keys held by the entries of a Secret whose names end in
// .agekey. An error names the entry at fault, never its content.
func FromSecret(secret string, data map[string][]byte) (*Decryptor, error) {
	var keys [][]byte
	var names []string
	for name, v := range data {
		if strings.HasSuffix(name, AgeKeySuffix) {
			keys = append(keys, v)
			names = append(names, name)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("secret %q holds no age key: add the private key (AGE-SECRET-KEY-1...) under an entry whose name ends in %s, for example age.agekey", secret, AgeKeySuffix)
	}
	d := &Decryptor{}
	for i, k := range keys {
		ids, err := parseIdentities(k)
		if err != nil {
			return nil, fmt.Errorf("secret %q entry %q is not a list of age private keys (AGE-SECRET-KEY-1..., one a line); age plugins and SSH keys are not supported", secret, names[i])
		}
		d.identities = append(d.identities, ids...)
	}
	return d, nil
}

// New reads age private keys, one a line, as age-keygen writes them (comments allowed).
func New(keys ...[]byte) (*Decryptor, error) {
	d := &Decryptor{}
	for _, k := range keys {
		ids, err := parseIdentities(k)
		if err != nil {
			return nil, errors.New("not a list of age private keys (AGE-SECRET-KEY-1..., one a line); age plugins and SSH keys are not supported")
		}
		d.identities = append(d.identities, ids...)
	}
	if len(d.identities) == 0 {
		return nil, errors.New("no age private key given")
	}
	return d, nil
}

// parseIdentities accepts native age keys only: ParseIdentities from age itself knows no
// plugins, so a key Secret cannot make the manager run a program.
func parseIdentities(data []byte) ([]age.Identity, error) {
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		// age's message may quote the offending line: a key.
		return nil, errors.New("invalid age identity")
	}
	return ids, nil
}

// format is how SOPS stored a file, decided as the sops CLI decides it: by the extension.
type format int

const (
	formatBinary format = iota
	formatYAML
	formatJSON
	formatDotenv
)

func formatOf(file string) format {
	switch strings.ToLower(path.Ext(file)) {
	case ".yaml", ".yml":
		return formatYAML
	case ".json":
		return formatJSON
	case ".env":
		return formatDotenv
	}
	return formatBinary
}

// Encrypted says whether data, read from file, is a SOPS-encrypted file: a YAML or JSON
// document with a top-level sops key holding a mapping, or a dotenv file with sops_ entries.
// A YAML file is encrypted when any of its documents is.
func Encrypted(file string, data []byte) bool {
	if !bytes.Contains(data, []byte(metadataKey)) {
		return false
	}
	if formatOf(file) == formatDotenv {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "sops_mac=") {
				return true
			}
		}
		return false
	}
	dec := goyaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc goyaml.Node
		if err := dec.Decode(&doc); err != nil {
			// Not YAML or JSON: SOPS could not have written it; or the end.
			return false
		}
		if hasMetadata(&doc) {
			return true
		}
	}
}

func hasMetadata(doc *goyaml.Node) bool {
	if doc.Kind != goyaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != goyaml.MappingNode {
		return false
	}
	m := doc.Content[0].Content
	for i := 0; i+1 < len(m); i += 2 {
		if m[i].Value == metadataKey && m[i+1].Kind == goyaml.MappingNode {
			return true
		}
	}
	return false
}

// Decrypt returns data decrypted when it is a SOPS file (see Encrypted), and data as it is
// otherwise. The MAC is checked: a file changed after it was encrypted is refused. Errors
// say what is wrong in words that reveal neither a key nor a value.
func (d *Decryptor) Decrypt(file string, data []byte) (plain []byte, err error) {
	if !Encrypted(file, data) {
		return data, nil
	}
	if d == nil || len(d.identities) == 0 {
		return nil, ErrNoDecryption
	}
	f := formatOf(file)
	if f != formatDotenv {
		if depth := maxDepth(data); depth > MaxDepth {
			return nil, fmt.Errorf("the encrypted file nests more than %d levels deep", MaxDepth)
		}
	}
	silenceSOPS()
	defer func() {
		// The SOPS libraries were not written for hostile input; a panic is a refusal.
		if r := recover(); r != nil {
			plain, err = nil, errors.New("the encrypted file is malformed")
		}
	}()
	store := storeFor(f)
	tree, err := store.LoadEncryptedFile(data)
	if err != nil {
		return nil, fmt.Errorf("reading the SOPS metadata: %s", firstLine(err))
	}
	key, err := d.dataKey(tree.Metadata)
	if err != nil {
		return nil, err
	}
	cipher := aes.NewCipher()
	mac, err := tree.Decrypt(key, cipher)
	if err != nil {
		return nil, errors.New("a value does not decrypt with the file's data key: the ciphertext was changed after it was encrypted")
	}
	stored, err := cipher.Decrypt(tree.Metadata.MessageAuthenticationCode, key, tree.Metadata.LastModified.Format(time.RFC3339))
	if err != nil || stored != mac {
		// Neither MAC is printed: it is a hash of the values, which would let a reader test
		// guesses of a weak secret offline.
		return nil, errors.New("the MAC does not match: the file was changed after it was encrypted (re-encrypt it with sops)")
	}
	out, err := store.EmitPlainFile(tree.Branches)
	if err != nil {
		return nil, fmt.Errorf("writing the decrypted document: %s", firstLine(err))
	}
	return out, nil
}

// dataKey recovers the file's data key from its age recipients with the Decryptor's
// identities only; keys of other kinds (KMS, PGP, Vault) are skipped. Several key groups
// mean Shamir's secret sharing, as SOPS does it.
func (d *Decryptor) dataKey(m sops.Metadata) ([]byte, error) {
	var parts [][]byte
	ageKeys := 0
	for _, group := range m.KeyGroups {
		for _, k := range group {
			ak, ok := k.(*sopsage.MasterKey)
			if !ok {
				continue
			}
			ageKeys++
			d.identities.ApplyToMasterKey(ak)
			if part, err := ak.Decrypt(); err == nil {
				parts = append(parts, part)
				break
			}
		}
	}
	switch {
	case ageKeys == 0:
		return nil, errors.New("the file is encrypted for no age recipient: encrypt it with sops --age <recipient>")
	case len(m.KeyGroups) == 1 && len(parts) == 1:
		return parts[0], nil
	case len(m.KeyGroups) > 1 && len(parts) >= m.ShamirThreshold && len(parts) > 1:
		key, err := shamir.Combine(parts)
		if err != nil {
			return nil, errors.New("the key groups' shares do not combine into a data key")
		}
		return key, nil
	}
	return nil, errors.New("no age key of the key Secret decrypts the file: it was encrypted for other recipients (add the matching private key, or re-encrypt the file for this key's recipient)")
}

func storeFor(f format) sops.Store {
	switch f {
	case formatYAML:
		return yaml.NewStore(&config.YAMLStoreConfig{})
	case formatJSON:
		return json.NewStore(&config.JSONStoreConfig{})
	case formatDotenv:
		return dotenv.NewStore(&config.DotenvStoreConfig{})
	}
	return json.NewBinaryStore(&config.JSONBinaryStoreConfig{})
}

// maxDepth measures how deeply the YAML (or JSON) documents of data nest, by walking its
// tokens without recursion. A document that does not parse counts as flat: SOPS refuses it.
func maxDepth(data []byte) int {
	deepest, depth := 0, 0
	inString, escaped := byte(0), false
	// Brackets and indentation both nest; brackets are what a small file nests deeply with.
	for _, c := range data {
		switch {
		case inString != 0:
			switch {
			case escaped:
				escaped = false
			case c == '\\' && inString == '"':
				escaped = true
			case c == inString:
				inString = 0
			}
		case c == '"' || c == '\'':
			inString = c
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return max(deepest, indentDepth(data))
}

// indentDepth counts the distinct indentations of block YAML on the way down to the deepest
// line: each is a level.
func indentDepth(data []byte) int {
	var stack []int
	deepest := 0
	for _, line := range bytes.Split(data, []byte("\n")) {
		trimmed := bytes.TrimLeft(line, " -")
		if len(bytes.TrimSpace(trimmed)) == 0 || trimmed[0] == '#' {
			continue
		}
		indent := len(line) - len(trimmed)
		for len(stack) > 0 && stack[len(stack)-1] >= indent {
			stack = stack[:len(stack)-1]
		}
		stack = append(stack, indent)
		deepest = max(deepest, len(stack))
	}
	return deepest
}

var silence sync.Once

// silenceSOPS turns off the SOPS libraries' logging: it would print to the manager's
// stderr for every file, and a warning about comments quotes them.
func silenceSOPS() {
	silence.Do(func() { logging.SetLevel(logrus.PanicLevel) })
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
