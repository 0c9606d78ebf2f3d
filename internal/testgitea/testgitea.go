// Package testgitea runs a real Gitea for tests: a forge that serves Git over HTTP and the
// pull-request API, so that PullRequest rollbacks are tested against the real thing. The
// binary is built by hack/build-test-binaries.sh into bin/gitea, with the options and
// templates it reads at start-up in bin/gitea-assets.
package testgitea

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/immutable-release/operator/internal/controlplane"
)

// ErrMissingBinary says that bin/gitea (or its assets) is not built.
var ErrMissingBinary = errors.New("gitea is not built: run make gitea (WITH_GITEA=1 hack/build-test-binaries.sh)")

// Server is a Gitea on loopback with one administrator.
type Server struct {
	// URL is the root, such as http://127.0.0.1:40123.
	URL string
	// User and Password are the administrator's; Token is an API token of theirs with
	// every scope.
	User, Password, Token string
	// LogPath is where Gitea writes its output.
	LogPath string

	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// Options configure Start.
type Options struct {
	// BinDir holds gitea and gitea-assets. Defaults to <module root>/bin.
	BinDir string
}

// Start runs a new Gitea with its own data, on a port of its own: a Gitea of an earlier
// run that is still shutting down keeps answering on its old one.
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	if opts.BinDir == "" {
		root, err := controlplane.ModuleRoot()
		if err != nil {
			return nil, err
		}
		opts.BinDir = filepath.Join(root, "bin")
	}
	binary := filepath.Join(opts.BinDir, "gitea")
	assets := filepath.Join(opts.BinDir, "gitea-assets")
	for _, p := range []string{binary, filepath.Join(assets, "options"), filepath.Join(assets, "templates")} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%w: %s not found", ErrMissingBinary, p)
		}
	}
	dir, err := os.MkdirTemp("", "testgitea-")
	if err != nil {
		return nil, err
	}
	s := &Server{User: "imr-admin", Password: randomHex(12), dir: dir, LogPath: filepath.Join(dir, "gitea.log")}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s.URL = "http://127.0.0.1:" + strconv.Itoa(port)
	config := filepath.Join(dir, "custom", "conf", "app.ini")
	if err := os.MkdirAll(filepath.Dir(config), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(config, []byte(appINI(dir, assets, port)), 0o600); err != nil {
		return nil, err
	}

	global := []string{"--config", config, "--work-path", dir}
	if err := s.run(ctx, binary, append(global, "migrate")...); err != nil {
		return nil, err
	}
	if err := s.run(ctx, binary, append(global, "admin", "user", "create", "--username", s.User, "--password", s.Password,
		"--email", s.User+"@example.com", "--admin", "--must-change-password=false")...); err != nil {
		return nil, err
	}

	logFile, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(binary, append(global, "web")...)
	s.cmd.Dir = dir
	s.cmd.Env = s.env()
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting gitea web: %w", err)
	}
	s.exited = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	if err := s.waitReady(ctx, time.Minute); err != nil {
		return nil, err
	}
	var token struct {
		SHA1 string `json:"sha1"`
	}
	body := map[string]any{"name": "tests", "scopes": []string{"all"}}
	if err := s.call(ctx, http.MethodPost, "/users/"+s.User+"/tokens", body, &token, func(r *http.Request) {
		r.SetBasicAuth(s.User, s.Password)
	}); err != nil {
		return nil, fmt.Errorf("creating an API token: %w", err)
	}
	s.Token = token.SHA1
	return s, nil
}

func appINI(dir, assets string, port int) string {
	return fmt.Sprintf(`APP_NAME = testgitea
RUN_MODE = prod
WORK_PATH = %[1]s
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = %[3]d
ROOT_URL = http://127.0.0.1:%[3]d/
STATIC_ROOT_PATH = %[2]s
APP_DATA_PATH = %[1]s/data
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false

[database]
DB_TYPE = sqlite3
PATH = %[1]s/data/gitea.db

[repository]
ROOT = %[1]s/repositories
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = %[4]s
INTERNAL_TOKEN = %[5]s
PASSWORD_HASH_ALGO = pbkdf2_hi

[oauth2]
ENABLED = false

[service]
DISABLE_REGISTRATION = true

[mailer]
ENABLED = false

[actions]
ENABLED = false

[cron]
ENABLED = false

[webhook]
; Tests point webhooks at receivers on loopback, which Gitea refuses by default.
ALLOWED_HOST_LIST = loopback
DELIVER_TIMEOUT = 5

[indexer]
REPO_INDEXER_ENABLED = false

[log]
MODE = console
LEVEL = Warn
ROOT_PATH = %[1]s/log
`, dir, assets, port, randomHex(32), "imr"+randomHex(40))
}

// env gives Gitea and the git it runs a home of their own, away from the user's Git config.
func (s *Server) env() []string {
	home := filepath.Join(s.dir, "home")
	_ = os.MkdirAll(home, 0o755)
	return append(os.Environ(), "HOME="+home, "GITEA_WORK_DIR="+s.dir, "GIT_CONFIG_NOSYSTEM=1")
}

// run runs a gitea command to completion, with its output in the log.
func (s *Server) run(ctx context.Context, binary string, args ...string) error {
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = s.dir
	cmd.Env = s.env()
	out, err := cmd.CombinedOutput()
	_ = appendFile(s.LogPath, out)
	if err != nil {
		return fmt.Errorf("gitea %s: %w: %s", strings.Join(args[4:], " "), err, lastLines(string(out), 10))
	}
	return nil
}

func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := s.call(ctx, http.MethodGet, "/version", nil, nil, nil)
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(s.LogPath)
			return fmt.Errorf("gitea web exited: %s", lastLines(string(log), 20))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gitea did not answer on %s within %s: %w (log: %s)", s.URL, timeout, err, s.LogPath)
		}
	}
}

// Shared is one Gitea for a whole test binary: the first Get starts it, later ones return
// it (or the same error), and Stop stops it if it was started.
type Shared struct {
	Options Options
	once    sync.Once
	server  *Server
	err     error
}

// Get returns the shared Gitea, starting it the first time.
func (s *Shared) Get(ctx context.Context) (*Server, error) {
	s.once.Do(func() { s.server, s.err = Start(ctx, s.Options) })
	return s.server, s.err
}

// Stop stops the shared Gitea, if it was started.
func (s *Shared) Stop() {
	if s.server != nil {
		s.server.Stop()
	}
}

// Stop stops Gitea and removes its data.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		pgid := s.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.exited
		}
	}
	_ = os.RemoveAll(s.dir)
}

// CreateRepo creates an empty private repository of the administrator and returns its Git
// address (without credentials).
func (s *Server) CreateRepo(ctx context.Context, name string) (string, error) {
	body := map[string]any{"name": name, "private": true, "default_branch": "main"}
	if err := s.API(ctx, http.MethodPost, "/user/repos", body, nil); err != nil {
		return "", fmt.Errorf("creating repository %s: %w", name, err)
	}
	return s.URL + "/" + s.User + "/" + name + ".git", nil
}

// WaitForBranch waits until Gitea has processed a push of branch to the administrator's
// repository name: it records pushes in its database after the Git push has returned, and
// its API answers 404 for the pull requests of a repository it still takes for empty.
func (s *Server) WaitForBranch(ctx context.Context, name, branch string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var repo struct {
			Empty bool `json:"empty"`
		}
		err := s.API(ctx, http.MethodGet, "/repos/"+s.User+"/"+name+"/branches/"+url.PathEscape(branch), nil, nil)
		if err == nil {
			err = s.API(ctx, http.MethodGet, "/repos/"+s.User+"/"+name, nil, &repo)
		}
		if err == nil && !repo.Empty {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gitea did not show branch %s of %s within 30s: %v", branch, name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// PushURL is the Git address of the administrator's repository name, with credentials.
func (s *Server) PushURL(name string) string {
	u, _ := url.Parse(s.URL + "/" + s.User + "/" + name + ".git")
	u.User = url.UserPassword(s.User, s.Password)
	return u.String()
}

// API calls Gitea's API v1 (path without /api/v1) with the administrator's token, sending
// in as JSON and decoding the answer into out when not nil.
func (s *Server) API(ctx context.Context, method, path string, in, out any) error {
	return s.call(ctx, method, path, in, out, func(r *http.Request) { r.Header.Set("Authorization", "token "+s.Token) })
}

func (s *Server) call(ctx context.Context, method, path string, in, out any, auth func(*http.Request)) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+"/api/v1"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != nil {
		auth(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func appendFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(data)
	return err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
