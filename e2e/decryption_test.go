//go:build e2e

package e2e

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/immutable-release/operator/internal/testsops"
)

const (
	sopsPassword = "s3cr3t-from-git"
	livePassword = "hunter2-set-live"
)

// specSOPSSecret: a Secret pushed encrypted with SOPS is applied decrypted with the key of
// the release's sops-age Secret, made as a user makes it (age key file, kubectl create
// secret); a kubectl patch of it is reported by field name, its value nowhere in the
// release, its events or the plugin's output.
func specSOPSSecret(t *testing.T) {
	s := createStory(t, "1m", "drift: {mode: Report}", "decryption: {provider: sops, secretRef: {name: sops-age}}")
	key := testsops.NewKey(t)
	keyFile := filepath.Join(t.TempDir(), "age.agekey")
	s.must(os.WriteFile(keyFile, key.Private, 0o600))
	s.kubectl("-n", s.ns, "create", "secret", "generic", "sops-age", "--from-file=age.agekey="+keyFile)
	secret := "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: " + sopsPassword + "}\n"
	s.push("Database password", map[string]string{"deploy/prod/db.yaml": string(testsops.Encrypt(t, "db.yaml", []byte(secret), key.Recipient))})
	s.webhook()
	s.eventually(time.Minute, func() string {
		got, _ := kubectl("-n", s.ns, "get", "secret", "db", "-o", "jsonpath={.data.password}")
		if got != base64.StdEncoding.EncodeToString([]byte(sopsPassword)) {
			return "the Secret is not applied decrypted"
		}
		return ""
	})
	s.kubectl("-n", s.ns, "patch", "secret", "db", "--type=merge", "-p", `{"stringData":{"password":"`+livePassword+`"}}`)
	s.eventually(30*time.Second, func() string {
		if st, r := s.condition("Drifted", "status"), s.condition("Drifted", "reason"); st != "True" || r != "SpecDrift" {
			return "Drifted is " + st + " " + r
		}
		return ""
	})
	if msg := s.condition("Drifted", "message"); !strings.Contains(msg, "Secret/"+s.ns+"/db: data[password] differs from Git (value hidden)") {
		t.Errorf("the Drifted message does not name the field: %q", msg)
	}
	release := s.kubectl("-n", s.ns, "get", "immutablerelease", "shop", "-o", "yaml")
	events := s.kubectl("-n", s.ns, "get", "events", "-o", "yaml")
	status, _ := kubectlRelease("-n", s.ns, "status", "shop")
	diff, _ := kubectlRelease("-n", s.ns, "diff", "shop", "--age-key-file", keyFile)
	log, err := os.ReadFile(env.operator.log)
	s.must(err)
	if !strings.Contains(diff, "data[password]") {
		t.Errorf("kubectl release diff does not name the field: %s", diff)
	}
	for where, text := range map[string]string{"the release": release, "the events": events, "kubectl release status": status, "kubectl release diff": diff, "the operator's log": string(log)} {
		for _, v := range []string{sopsPassword, livePassword, base64.StdEncoding.EncodeToString([]byte(sopsPassword)), base64.StdEncoding.EncodeToString([]byte(livePassword)), "AGE-SECRET-KEY"} {
			if strings.Contains(text, v) {
				t.Errorf("%s holds a secret value or key", where)
			}
		}
	}
}

func TestSOPSSecret(t *testing.T) { specSOPSSecret(t) }
