package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

const (
	commitA = "0123456789abcdef0123456789abcdef01234567"
	hexV1   = "1111111111111111111111111111111111111111111111111111111111111111"
	hexV2   = "2222222222222222222222222222222222222222222222222222222222222222"
	hexM    = "3333333333333333333333333333333333333333333333333333333333333333"
)

func deployment(cluster, name string) Deployment {
	applied := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	return Deployment{
		Release: Release{Namespace: "shop", Name: name},
		Cluster: cluster,
		Source:  Source{URL: "https://git.example.com/acme/shop.git", Path: "deploy/prod", Revision: "main@sha1:" + commitA, Commit: commitA, Author: "Ann <ann@example.com>"},
		Images: []Image{
			{Workload: "Deployment/shop/web", Container: "app", Image: "ghcr.io/acme/web:1.0@sha256:" + hexV1},
			{Workload: "Deployment/shop/web", Container: "init", Image: "ghcr.io/acme/web@sha256:" + hexV1},
			{Workload: "Deployment/shop/db", Container: "db", Image: "registry.local:5000/db@sha256:" + hexV2},
		},
		ManifestsDigest: "sha256:" + hexM,
		AppliedAt:       applied,
		HealthyAt:       applied.Add(time.Minute),
	}
}

func pemKey(t testing.TB, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func newEd25519(t testing.TB) *Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParsePrivateKey(pemKey(t, priv))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newP256(t testing.TB) *Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParsePrivateKey(pemKey(t, priv))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t *testing.T, k *Key, d Deployment) []byte {
	t.Helper()
	st, err := New(d)
	if err != nil {
		t.Fatal(err)
	}
	line, err := k.Sign(st)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

func TestNewStatement(t *testing.T) {
	g := NewWithT(t)
	st, err := New(deployment("prod-eu", "web"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(st.Type).To(Equal(StatementType))
	g.Expect(st.PredicateType).To(Equal(PredicateType))
	// One subject per distinct digest, named by repository (tag and port handled), and the
	// manifests last.
	g.Expect(st.Subject).To(Equal([]Subject{
		{Name: "ghcr.io/acme/web", Digest: map[string]string{"sha256": hexV1}},
		{Name: "registry.local:5000/db", Digest: map[string]string{"sha256": hexV2}},
		{Name: "manifests:shop/web", Digest: map[string]string{"sha256": hexM}},
	}))

	for name, mutate := range map[string]func(*Deployment){
		"an image by tag":         func(d *Deployment) { d.Images[0].Image = "ghcr.io/acme/web:1.0" },
		"a short digest":          func(d *Deployment) { d.Images[0].Image = "ghcr.io/acme/web@sha256:1234" },
		"another algorithm":       func(d *Deployment) { d.Images[0].Image = "ghcr.io/acme/web@sha512:" + hexV1 + hexV1 },
		"no manifests digest":     func(d *Deployment) { d.ManifestsDigest = "" },
		"a manifests digest bare": func(d *Deployment) { d.ManifestsDigest = hexM },
		"no cluster":              func(d *Deployment) { d.Cluster = "" },
		"no commit":               func(d *Deployment) { d.Source.Commit = "main" },
	} {
		d := deployment("prod-eu", "web")
		mutate(&d)
		_, err := New(d)
		g.Expect(err).To(HaveOccurred(), name)
	}
}

func TestSignAndVerify(t *testing.T) {
	for name, newKey := range map[string]func(testing.TB) *Key{"ed25519": newEd25519, "ecdsa p-256": newP256} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			key := newKey(t)
			line := sign(t, key, deployment("prod-eu", "web"))
			g.Expect(bytes.ContainsAny(line, "\n")).To(BeFalse())

			st, err := key.Public().Verify(line)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(st.Predicate).To(Equal(deployment("prod-eu", "web")))

			// The public key travels as PEM and still verifies.
			pub, err := ParsePublicKey(key.Public().PEM())
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(pub.ID()).To(Equal(key.Public().ID()))
			g.Expect(pub.ID()).To(HavePrefix("SHA256:"))
			_, err = pub.Verify(line)
			g.Expect(err).NotTo(HaveOccurred())
		})
	}
}

// envelope is a DSSE envelope as JSON, to tamper with.
type envelope struct {
	PayloadType string `json:"payloadType"`
	Payload     string `json:"payload"`
	Signatures  []struct {
		KeyID string `json:"keyid"`
		Sig   string `json:"sig"`
	} `json:"signatures"`
}

func tamper(t *testing.T, line []byte, f func(*envelope)) []byte {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(line, &e); err != nil {
		t.Fatal(err)
	}
	f(&e)
	out, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVerifyRefuses(t *testing.T) {
	key, other := newEd25519(t), newP256(t)
	good := sign(t, key, deployment("prod-eu", "web"))
	changedPayload := func(f func(*Statement)) func(*envelope) {
		return func(e *envelope) {
			body, _ := base64.StdEncoding.DecodeString(e.Payload)
			var st Statement
			_ = json.Unmarshal(body, &st)
			f(&st)
			body, _ = json.Marshal(st)
			e.Payload = base64.StdEncoding.EncodeToString(body)
		}
	}
	cases := map[string][]byte{
		"signed by another key":  sign(t, other, deployment("prod-eu", "web")),
		"another digest put in":  tamper(t, good, changedPayload(func(st *Statement) { st.Subject[0].Digest["sha256"] = hexV2 })),
		"another cluster put in": tamper(t, good, changedPayload(func(st *Statement) { st.Predicate.Cluster = "laptop" })),
		"another payload type":   tamper(t, good, func(e *envelope) { e.PayloadType = "text/plain" }),
		"no signature":           tamper(t, good, func(e *envelope) { e.Signatures = nil }),
		"a signature of garbage": tamper(t, good, func(e *envelope) {
			e.Signatures[0].Sig = base64.StdEncoding.EncodeToString([]byte("garbage"))
		}),
		"a signature that is not base64": tamper(t, good, func(e *envelope) { e.Signatures[0].Sig = "%%%" }),
		"the keyid of ours on another's signature": tamper(t, sign(t, other, deployment("prod-eu", "web")), func(e *envelope) {
			e.Signatures[0].KeyID = key.Public().ID()
		}),
		"a statement of another predicate type, signed by the key": func() []byte {
			st, _ := New(deployment("prod-eu", "web"))
			st.PredicateType = "https://slsa.dev/provenance/v1"
			body, _ := json.Marshal(st)
			es, _ := dsse.NewEnvelopeSigner(dsseKey{k: key.signer, pub: key.public})
			env, _ := es.SignPayload(context.Background(), PayloadType, body)
			out, _ := json.Marshal(env)
			return out
		}(),
		"garbage":           []byte("this is not json"),
		"json of something": []byte(`{"hello": "world"}`),
		"huge":              append([]byte(`{"payloadType":"`), bytes.Repeat([]byte("a"), MaxLineBytes)...),
		"empty":             nil,
	}
	for name, line := range cases {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := key.Public().Verify(line)
			g.Expect(err).To(HaveOccurred())
			// The error never repeats what the line holds.
			g.Expect(err.Error()).NotTo(ContainSubstring("laptop"))
			g.Expect(len(err.Error())).To(BeNumerically("<", 200))
		})
	}
}

func TestParseKeys(t *testing.T) {
	g := NewWithT(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	g.Expect(err).NotTo(HaveOccurred())
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	g.Expect(err).NotTo(HaveOccurred())
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	g.Expect(err).NotTo(HaveOccurred())
	sec1, err := x509.MarshalECPrivateKey(p256)
	g.Expect(err).NotTo(HaveOccurred())

	_, err = ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))
	g.Expect(err).NotTo(HaveOccurred(), "SEC 1 P-256")

	for name, data := range map[string][]byte{
		"rsa":            pemKey(t, rsaKey),
		"p-384":          pemKey(t, p384),
		"not pem":        []byte("-----BEGIN garbage"),
		"a public key":   newEd25519(t).Public().PEM(),
		"two keys":       append(pemKey(t, p256), pemKey(t, p256)...),
		"corrupt":        pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("nope")}),
		"encrypted form": pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("nope")}),
	} {
		_, err := ParsePrivateKey(data)
		g.Expect(err).To(MatchError(ErrInvalidKey), name)
	}

	// A Secret whose public key is not its private key's own is refused: auditors would be
	// given a key that verifies nothing.
	a, b := newEd25519(t), newEd25519(t)
	priv := pemKey(t, a.signer)
	_, err = KeyFromSecret(map[string][]byte{PrivateKeyField: priv, PublicKeyField: b.Public().PEM()})
	g.Expect(err).To(MatchError(ErrInvalidKey))
	g.Expect(err.Error()).To(ContainSubstring(PublicKeyField))
	g.Expect(err.Error()).NotTo(ContainSubstring(string(priv[30:60])), "no key bytes in errors")
	k, err := KeyFromSecret(map[string][]byte{PrivateKeyField: priv, PublicKeyField: a.Public().PEM()})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(k.Public().ID()).To(Equal(a.Public().ID()))
	_, err = KeyFromSecret(map[string][]byte{"key": priv})
	g.Expect(err).To(MatchError(ContainSubstring(PrivateKeyField)))

	pub, err := PublicKeyFromSecret(map[string][]byte{PrivateKeyField: priv})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(pub.ID()).To(Equal(a.Public().ID()))
}

func TestMerge(t *testing.T) {
	g := NewWithT(t)
	key, other := newEd25519(t), newP256(t)
	web := sign(t, key, deployment("prod-eu", "web"))
	api := sign(t, key, deployment("prod-eu", "api"))
	us := sign(t, other, deployment("prod-us", "web"))

	note, err := Merge(nil, web, key.Public())
	g.Expect(err).NotTo(HaveOccurred())
	note, err = Merge(note, us, other.Public())
	g.Expect(err).NotTo(HaveOccurred())
	// A line that is not ours to read is kept as it is.
	note = append(note, []byte("written by hand\n")...)
	note, err = Merge(note, api, key.Public())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(strings.Count(string(note), "\n")).To(Equal(4))

	// The same deployment, re-signed when replaced: it takes the place of its first line.
	replaced := deployment("prod-eu", "web")
	at := replaced.AppliedAt.Add(time.Hour)
	replaced.ReplacedAt, replaced.ReplacedBy = &at, "main@sha1:"+strings.Repeat("b", 40)
	note, err = Merge(note, sign(t, key, replaced), key.Public())
	g.Expect(err).NotTo(HaveOccurred())
	entries, err := Verify(note, key.Public(), other.Public())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(entries).To(HaveLen(4))
	g.Expect(entries[0].Statement.Predicate.Cluster).To(Equal("prod-us"))
	g.Expect(entries[0].KeyID).To(Equal(other.Public().ID()))
	g.Expect(entries[1].Err).To(HaveOccurred(), "the hand-written line")
	g.Expect(entries[1].Statement).To(BeNil())
	g.Expect(entries[2].Statement.Predicate.Release.Name).To(Equal("api"))
	g.Expect(entries[3].Statement.Predicate.ReplacedAt).NotTo(BeNil())

	// The same release applying the same commit again, later, is another deployment.
	again := deployment("prod-eu", "web")
	again.AppliedAt = again.AppliedAt.Add(2 * time.Hour)
	note, err = Merge(note, sign(t, key, again), key.Public())
	g.Expect(err).NotTo(HaveOccurred())
	entries, err = Verify(note, key.Public())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(entries).To(HaveLen(5))

	// A line with a newline in it, or garbage, is not written.
	_, err = Merge(note, append(append([]byte{}, web...), '\n', 'x'), key.Public())
	g.Expect(err).To(HaveOccurred())
	_, err = Merge(note, []byte(`{"payloadType":"x"}`), key.Public())
	g.Expect(err).To(HaveOccurred())
}

func TestFind(t *testing.T) {
	g := NewWithT(t)
	key, attacker := newEd25519(t), newEd25519(t)
	d := deployment("prod-eu", "web")
	note, err := Merge(nil, sign(t, key, d), key.Public())
	g.Expect(err).NotTo(HaveOccurred())

	// Someone who can push to the notes reference appends a line claiming the same
	// deployment with other images: Find, which the re-signing reads, ignores it.
	forged := deployment("prod-eu", "web")
	forged.Images = forged.Images[:1]
	forged.Images[0].Image = "evil.example.com/miner@sha256:" + hexV2
	note = append(note, append(sign(t, attacker, forged), '\n')...)

	st, err := Find(note, d.Key(), key.Public())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(st.Predicate.Images).To(HaveLen(3))
	g.Expect(st.Predicate.Images[0].Image).NotTo(ContainSubstring("evil"))

	_, err = Find(note, deployment("prod-us", "web").Key(), key.Public())
	g.Expect(err).To(MatchError(ErrNotRecorded))
	_, err = Find(note, d.Key(), attacker.Public())
	g.Expect(err).NotTo(HaveOccurred(), "the attacker's line verifies with the attacker's key only")

	// Our record re-signed replaces our line only: the forgery stays for the audit to see.
	replaced := d
	at := d.AppliedAt.Add(time.Hour)
	replaced.ReplacedAt = &at
	note, err = Merge(note, sign(t, key, replaced), key.Public())
	g.Expect(err).NotTo(HaveOccurred())
	entries, err := Verify(note, key.Public())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(entries).To(HaveLen(2))
	g.Expect(entries[0].Err).To(HaveOccurred(), "the forgery, kept")
	g.Expect(entries[1].Err).NotTo(HaveOccurred())
	g.Expect(entries[1].Statement.Predicate.ReplacedAt).NotTo(BeNil())
}

func TestHostileNotes(t *testing.T) {
	key := newEd25519(t)
	line := sign(t, key, deployment("prod-eu", "web"))
	cases := map[string][]byte{
		"huge":           bytes.Repeat([]byte("x"), MaxNoteBytes+1),
		"too many lines": bytes.Repeat([]byte("{}\n"), MaxLines+1),
	}
	for name, note := range cases {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := Verify(note, key.Public())
			g.Expect(err).To(MatchError(ErrNoteTooLarge))
			_, err = Merge(note, line, key.Public())
			g.Expect(err).To(MatchError(ErrNoteTooLarge))
			_, err = Find(note, "k", key.Public())
			g.Expect(err).To(MatchError(ErrNoteTooLarge))
		})
	}

	t.Run("garbage between records", func(t *testing.T) {
		g := NewWithT(t)
		note := []byte("\x00\xff\xfe garbage\n\n   \n" + string(line) + "\n{\"payloadType\":\"application/vnd.in-toto+json\",\"payload\":\"!!!\"}\n" + string(line[:len(line)/2]) + "\n")
		entries, err := Verify(note, key.Public())
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(entries).To(HaveLen(4), "blank lines are not entries")
		var ok int
		for _, e := range entries {
			if e.Err == nil {
				ok++
			}
		}
		g.Expect(ok).To(Equal(1))
	})

	t.Run("a note at the bound takes no more", func(t *testing.T) {
		g := NewWithT(t)
		filler := bytes.Repeat([]byte("y"), MaxNoteBytes-len(line)/2)
		_, err := Merge(filler, line, key.Public())
		g.Expect(err).To(MatchError(ErrNoteTooLarge))
	})
}

func FuzzVerify(f *testing.F) {
	key := newEd25519(f)
	st, _ := New(deployment("prod-eu", "web"))
	line, _ := key.Sign(st)
	f.Add(line)
	f.Add([]byte("{}"))
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"sig":"AA=="}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := Verify(data, key.Public())
		if err != nil {
			return
		}
		for _, e := range entries {
			// Nothing but our statement is signed by the key in this test: whatever
			// verifies must say exactly what it says.
			if e.Err == nil {
				a, _ := json.Marshal(e.Statement)
				b, _ := json.Marshal(st)
				if !bytes.Equal(a, b) {
					t.Fatalf("a statement verified that the key never signed: %s", a)
				}
			}
		}
		_, _ = Merge(data, line, key.Public())
	})
}
