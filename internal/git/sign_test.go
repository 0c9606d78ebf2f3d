package git

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	. "github.com/onsi/gomega"
)

// newKey makes an OpenPGP key and returns the armored private key (protected by passphrase
// when one is given) and the armored public key.
func newKey(t *testing.T, passphrase string) (private, public []byte) {
	t.Helper()
	e, err := openpgp.NewEntity("Release Bot", "", "bot@example.com", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	must(t, err)
	var pub bytes.Buffer
	w, err := armor.Encode(&pub, openpgp.PublicKeyType, nil)
	must(t, err)
	must(t, e.Serialize(w))
	must(t, w.Close())
	if passphrase != "" {
		must(t, e.EncryptPrivateKeys([]byte(passphrase), nil))
	}
	var priv bytes.Buffer
	w, err = armor.Encode(&priv, openpgp.PrivateKeyType, nil)
	must(t, err)
	must(t, e.SerializePrivateWithoutSigning(w, nil))
	must(t, w.Close())
	return priv.Bytes(), pub.Bytes()
}

// TestSignedRevert: with a key, the revert commit carries an OpenPGP signature that go-git
// and git verify-commit (through gpg, when installed) accept with the public key.
func TestSignedRevert(t *testing.T) {
	g := NewWithT(t)
	private, public := newKey(t, "s3cret")
	key, err := SigningKey(private, []byte("s3cret"))
	g.Expect(err).NotTo(HaveOccurred())

	srv, repo, _ := newRepo(t)
	healthy := write(t, repo, "Healthy", healthyFiles)
	bad := write(t, repo, "Bad image", map[string]string{"deploy/prod/app.yaml": badApp})
	req := revertRequest(t, srv, repo, healthy, bad)
	req.SignKey = key
	res, err := NewCache(t.TempDir()).Revert(context.Background(), req)
	g.Expect(err).NotTo(HaveOccurred())

	// go-git reads the pushed commit from the server's repository and checks the signature.
	server, err := gogit.PlainOpen(filepath.Join(srv.Root(), repo.Name))
	g.Expect(err).NotTo(HaveOccurred())
	c, err := server.CommitObject(plumbing.NewHash(res.Commit))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c.PGPSignature).To(HavePrefix("-----BEGIN PGP SIGNATURE-----"))
	signer, err := c.Verify(string(public))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(signer.PrimaryKey.Fingerprint).To(Equal(key.PrimaryKey.Fingerprint))
	// A different key does not verify it.
	_, other := newKey(t, "")
	_, err = c.Verify(string(other))
	g.Expect(err).To(HaveOccurred())
	must(t, run("git", "-C", filepath.Join(srv.Root(), repo.Name), "fsck", "--strict"))

	if _, err := exec.LookPath("gpg"); err != nil {
		t.Log("gpg is not installed: git verify-commit skipped")
		return
	}
	home, err := os.MkdirTemp("", "gpg")
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { os.RemoveAll(home) })
	gpg := exec.Command("gpg", "--batch", "--import")
	gpg.Env = append(os.Environ(), "GNUPGHOME="+home)
	gpg.Stdin = bytes.NewReader(public)
	out, err := gpg.CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), "%s", out)
	must(t, repo.Git("pull", "-q", "--ff-only", "origin", "main"))
	verify := exec.Command("git", "verify-commit", "--raw", res.Commit)
	verify.Dir = repo.Dir
	verify.Env = append(os.Environ(), "GNUPGHOME="+home)
	out, err = verify.CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), "%s", out)
	g.Expect(string(out)).To(ContainSubstring("GOODSIG"))
}

func TestSigningKeyErrors(t *testing.T) {
	protected, public := newKey(t, "s3cret")
	open, _ := newKey(t, "")
	cases := map[string]struct {
		key, passphrase string
		want            string
	}{
		"empty":              {key: "", want: "the key is empty"},
		"not a key":          {key: "hello", want: "not an armored OpenPGP key"},
		"public key":         {key: string(public), want: "no private key found"},
		"missing passphrase": {key: string(protected), want: "protected by a passphrase: add it to the Secret as passphrase"},
		"wrong passphrase":   {key: string(protected), passphrase: "nope", want: "unlocking the key with the passphrase"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := SigningKey([]byte(tc.key), []byte(tc.passphrase))
			g.Expect(err).To(MatchError(ContainSubstring(tc.want)))
		})
	}
	g := NewWithT(t)
	_, err := SigningKey(open, nil)
	g.Expect(err).NotTo(HaveOccurred())
}
