package git

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// Auth is how to authenticate to a remote, and an identity of the credentials so that
// cached answers are only shared between callers holding the same credentials.
type Auth struct {
	Method transport.AuthMethod
	// ID is a hash of the credentials; empty for anonymous access.
	ID string
}

// ErrInvalidCredentials marks errors in the credentials themselves (missing keys, a key that
// does not parse), as opposed to the remote refusing them.
var ErrInvalidCredentials = errors.New("invalid credentials")

// AuthFromSecret builds the authentication for repoURL from the data of a Secret with the keys
// of a Flux GitRepository Secret: username and password (or bearerToken) for HTTP(S);
// identity, known_hosts and optionally password for SSH. data may be nil for anonymous
// access over HTTP(S) and file://. SSH always needs known_hosts: host keys are never skipped.
// A URL CheckURL refuses is refused here too (ErrURLNotAllowed).
func AuthFromSecret(repoURL string, data map[string][]byte) (*Auth, error) {
	// file:// is refused or allowed by the Cache that reads it; everything else about the
	// URL is checked here, before a credential is built for it.
	if err := CheckURL(repoURL, true); err != nil {
		return nil, err
	}
	u, err := url.Parse(repoURL)
	if err != nil {
		return nil, err
	}
	auth := &Auth{ID: credentialsID(data)}
	switch u.Scheme {
	case "http", "https":
		switch {
		case len(data["bearerToken"]) > 0:
			auth.Method = &githttp.TokenAuth{Token: string(data["bearerToken"])}
		case len(data["username"]) > 0 || len(data["password"]) > 0:
			user := string(data["username"])
			if user == "" {
				// Forges accept a token as password with any non-empty user name.
				user = "git"
			}
			auth.Method = &githttp.BasicAuth{Username: user, Password: string(data["password"])}
		}
	case "ssh":
		if data == nil {
			return nil, fmt.Errorf("%w: an ssh:// URL needs a secretRef with identity and known_hosts", ErrInvalidCredentials)
		}
		if len(data["identity"]) == 0 {
			return nil, fmt.Errorf("%w: the Secret has no identity (the SSH private key)", ErrInvalidCredentials)
		}
		if len(data["known_hosts"]) == 0 {
			return nil, fmt.Errorf("%w: the Secret has no known_hosts; the host key of %s must be checked", ErrInvalidCredentials, u.Host)
		}
		user := u.User.Username()
		if user == "" {
			user = "git"
		}
		keys, err := gitssh.NewPublicKeys(user, data["identity"], string(data["password"]))
		if err != nil {
			return nil, fmt.Errorf("%w: identity: %v", ErrInvalidCredentials, err)
		}
		callback, err := knownHostsCallback(data["known_hosts"])
		if err != nil {
			return nil, fmt.Errorf("%w: known_hosts: %v", ErrInvalidCredentials, err)
		}
		keys.HostKeyCallback = callback
		auth.Method = keys
	case "file":
	default:
		return nil, fmt.Errorf("unsupported URL scheme %q: use http, https, ssh or file", u.Scheme)
	}
	return auth, nil
}

// knownHostsCallback checks host keys against the given known_hosts content. The parser of
// x/crypto reads files only, so the content goes through a short-lived file.
func knownHostsCallback(knownHosts []byte) (gossh.HostKeyCallback, error) {
	f, err := os.CreateTemp("", "known_hosts-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(knownHosts); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return gitssh.NewKnownHostsCallback(f.Name())
}

func credentialsID(data map[string][]byte) string {
	if len(data) == 0 {
		return ""
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%d:%s\n", k, len(data[k]), data[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Redact removes credentials from a URL for messages.
func Redact(repoURL string) string {
	u, err := url.Parse(repoURL)
	if err != nil || u.User == nil {
		return repoURL
	}
	u.User = nil
	return u.String()
}
