// Package testgit runs a real Git server for tests, the demo and end-to-end stories: the git
// CLI's own upload-pack and receive-pack behind HTTP with basic auth and behind SSH
// (github.com/fluxcd/pkg/gittestserver), and working clones driven with the git CLI.
package testgit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fluxcd/pkg/gittestserver"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Server is a Git server on loopback.
type Server struct {
	*gittestserver.GitServer
	Username string
	Password string
	work     string
	keyDir   string
}

// NewServer starts a Git server over HTTP (basic auth with the returned Username and
// Password) and SSH (any client key is accepted; the host key is checked by clients).
func NewServer() (*Server, error) {
	// gitkit logs every request with the standard logger; that drowns test output.
	log.SetOutput(io.Discard)
	gs, err := gittestserver.NewTempGitServer()
	if err != nil {
		return nil, err
	}
	s := &Server{GitServer: gs, Username: "git-user", Password: "git-secret-password"}
	keyDir, err := os.MkdirTemp("", "testgit-keys-")
	if err != nil {
		return nil, err
	}
	gs.KeyDir(keyDir)
	gs.Auth(s.Username, s.Password)
	if err := gs.StartHTTP(); err != nil {
		return nil, fmt.Errorf("starting the HTTP Git server: %w", err)
	}
	if err := gs.ListenSSH(); err != nil {
		return nil, fmt.Errorf("starting the SSH Git server: %w", err)
	}
	go func() { _ = gs.StartSSH() }()
	s.keyDir = keyDir
	s.work, err = os.MkdirTemp("", "testgit-work-")
	return s, err
}

// Stop stops the server and removes its repositories.
func (s *Server) Stop() {
	s.StopHTTP()
	_ = s.StopSSH()
	_ = os.RemoveAll(s.Root())
	_ = os.RemoveAll(s.work)
	_ = os.RemoveAll(s.keyDir)
}

// KnownHosts returns a known_hosts line for the SSH server's host key, read from the server
// itself over a real SSH handshake.
func (s *Server) KnownHosts() ([]byte, error) {
	u, err := url.Parse(s.SSHAddress())
	if err != nil {
		return nil, err
	}
	var line string
	cfg := &ssh.ClientConfig{
		User: "git",
		Auth: []ssh.AuthMethod{ssh.Password("x")},
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			line = knownhosts.Line([]string{knownhosts.Normalize(u.Host)}, key)
			return nil
		},
	}
	if c, err := ssh.Dial("tcp", u.Host, cfg); err == nil {
		c.Close()
	}
	if line == "" {
		return nil, fmt.Errorf("reading the host key of %s", u.Host)
	}
	return []byte(line + "\n"), nil
}

// NewIdentity returns a new SSH private key in OpenSSH PEM form.
func NewIdentity() ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(block), nil
}

// Repo is a bare repository on the server and a working clone of it.
type Repo struct {
	// Name is the repository's path on the server, such as acme/shop.git.
	Name string
	// Dir is the working clone.
	Dir string

	url, pushURL, sshURL string
}

// CreateRepo creates an empty bare repository on the server and a working clone on branch.
func (s *Server) CreateRepo(name, branch string) (*Repo, error) {
	bare := filepath.Join(s.Root(), name)
	if err := run("", "git", "init", "--quiet", "--bare", "--initial-branch="+branch, bare); err != nil {
		return nil, err
	}
	if err := run(bare, "git", "config", "http.receivepack", "true"); err != nil {
		return nil, err
	}
	r := &Repo{Name: name, Dir: filepath.Join(s.work, name), url: s.HTTPAddress() + "/" + name,
		pushURL: s.HTTPAddressWithCredentials() + "/" + name, sshURL: s.SSHAddress() + "/" + name}
	return r, r.init(branch)
}

// NewClone makes a working clone in dir, on branch, of a repository served elsewhere (a
// forge such as testgitea): url is its address, pushURL the same with credentials.
func NewClone(dir, url, pushURL, branch string) (*Repo, error) {
	r := &Repo{Name: filepath.Base(url), Dir: dir, url: url, pushURL: pushURL}
	return r, r.init(branch)
}

func (r *Repo) init(branch string) error {
	if err := run("", "git", "init", "--quiet", "--initial-branch="+branch, r.Dir); err != nil {
		return err
	}
	return r.Git("remote", "add", "origin", r.PushURL())
}

// URL is the HTTP address of the repository, without credentials.
func (r *Repo) URL() string { return r.url }

// PushURL is the HTTP address with the push credentials.
func (r *Repo) PushURL() string { return r.pushURL }

// SSHURL is the SSH address of the repository, when its server serves SSH.
func (r *Repo) SSHURL() string { return r.sshURL }

// Write writes files (path relative to the clone -> content) into the working clone.
func (r *Repo) Write(files map[string]string) error {
	for name, content := range files {
		p := filepath.Join(r.Dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes paths from the working clone.
func (r *Repo) Remove(paths ...string) error {
	for _, p := range paths {
		if err := os.RemoveAll(filepath.Join(r.Dir, filepath.FromSlash(p))); err != nil {
			return err
		}
	}
	return nil
}

// CommitAndPush commits everything in the working clone and pushes the branch, returning the
// new commit's hash.
func (r *Repo) CommitAndPush(message string) (string, error) {
	if err := r.Git("add", "--all"); err != nil {
		return "", err
	}
	if err := r.Git("commit", "--quiet", "--allow-empty", "-m", message); err != nil {
		return "", err
	}
	if err := r.Git("push", "--quiet", "origin", "HEAD"); err != nil {
		return "", err
	}
	return r.Head()
}

// Head returns the hash of the working clone's HEAD.
func (r *Repo) Head() (string, error) {
	out, err := output(r.Dir, "git", "rev-parse", "HEAD")
	return strings.TrimSpace(out), err
}

// Git runs a git command in the working clone.
func (r *Repo) Git(args ...string) error { return run(r.Dir, "git", args...) }

// Output runs a git command in the working clone and returns what it printed.
func (r *Repo) Output(args ...string) (string, error) { return output(r.Dir, "git", args...) }

var gitEnv = []string{
	"GIT_AUTHOR_NAME=Ada Developer", "GIT_AUTHOR_EMAIL=ada@example.com",
	"GIT_COMMITTER_NAME=Ada Developer", "GIT_COMMITTER_EMAIL=ada@example.com",
	"GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
}

func run(dir, name string, args ...string) error {
	_, err := output(dir, name, args...)
	return err
}

func output(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), gitEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Tarpit listens on loopback as a Git server that accepts every connection and never
// answers a byte, until the test ends, and returns its HTTP address. Hostile-input tests
// point releases at it.
func Tarpit(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return "http://" + l.Addr().String()
}
