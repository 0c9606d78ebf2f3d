package git

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// SigningKey reads an ASCII-armored OpenPGP private key and unlocks it with passphrase when
// it is protected. The key must be able to sign now: errors say what is wrong with it, so a
// person can fix the Secret.
func SigningKey(armored, passphrase []byte) (*openpgp.Entity, error) {
	if len(bytes.TrimSpace(armored)) == 0 {
		return nil, errors.New("the key is empty")
	}
	keys, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(armored))
	if err != nil {
		return nil, fmt.Errorf("not an armored OpenPGP key (gpg --armor --export-secret-keys): %w", err)
	}
	for _, e := range keys {
		if e.PrivateKey == nil {
			continue
		}
		if encrypted(e) {
			if len(passphrase) == 0 {
				return nil, errors.New("the key is protected by a passphrase: add it to the Secret as passphrase")
			}
			if err := e.DecryptPrivateKeys(passphrase); err != nil {
				return nil, fmt.Errorf("unlocking the key with the passphrase: %w", err)
			}
		}
		if _, ok := e.SigningKey(time.Now()); !ok {
			return nil, fmt.Errorf("key %X cannot sign (expired, revoked, or without a signing subkey)", e.PrimaryKey.Fingerprint)
		}
		return e, nil
	}
	return nil, errors.New("no private key found: export it with gpg --armor --export-secret-keys, not the public key")
}

func encrypted(e *openpgp.Entity) bool {
	if e.PrivateKey != nil && e.PrivateKey.Encrypted {
		return true
	}
	for _, s := range e.Subkeys {
		if s.PrivateKey != nil && s.PrivateKey.Encrypted {
			return true
		}
	}
	return false
}

// sign adds a detached, armored OpenPGP signature of the commit, as git commit -S and go-git's
// CommitOptions.SignKey do: over the commit encoded without its signature.
func sign(c *object.Commit, key *openpgp.Entity) error {
	encoded := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(encoded); err != nil {
		return err
	}
	r, err := encoded.Reader()
	if err != nil {
		return err
	}
	var sig bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&sig, key, r, nil); err != nil {
		return fmt.Errorf("signing the revert commit: %w", err)
	}
	c.PGPSignature = sig.String()
	return nil
}
