package git

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrURLNotAllowed marks a repository URL the operator refuses to use: it does not parse,
// has a scheme other than http, https or ssh (file only where allowed), carries
// credentials, or names no host. Retrying cannot help; the release's URL must change.
var ErrURLNotAllowed = errors.New("repository URL not allowed")

// ErrInvalidReference marks a branch, tag or commit that is not a valid Git name: it would
// otherwise be pasted into a refspec. Retrying cannot help; the release must change.
var ErrInvalidReference = errors.New("invalid Git reference")

// CheckURL says whether rawURL may be read (and written) by the operator. Credentials
// belong in the release's secretRef, where they are a Secret, never in the URL, which is
// printed in status and events: an http(s) URL with a user name or password is refused,
// and so is an ssh URL with a password (ssh://git@host is fine: that user is no secret).
// file:// reads the manager's own file system and is refused unless allowFile.
func CheckURL(rawURL string, allowFile bool) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's error repeats the URL, credentials and all.
		return fmt.Errorf("%w: the URL does not parse; use https://host/path, ssh://user@host/path or http://host/path", ErrURLNotAllowed)
	}
	if u.Opaque != "" {
		return fmt.Errorf("%w: %s has no // after its scheme; use https://host/path or ssh://user@host/path", ErrURLNotAllowed, Redact(rawURL))
	}
	switch u.Scheme {
	case "http", "https":
		if u.User != nil {
			return fmt.Errorf("%w: %s carries credentials in the URL; remove them and put username and password in the Secret named by secretRef", ErrURLNotAllowed, Redact(rawURL))
		}
	case "ssh":
		if _, ok := u.User.Password(); ok {
			return fmt.Errorf("%w: %s carries a password in the URL; remove it and put identity and known_hosts in the Secret named by secretRef", ErrURLNotAllowed, Redact(rawURL))
		}
	case "file":
		if !allowFile {
			return fmt.Errorf("%w: %s reads the manager's own file system; file:// URLs are for local development only: start the manager with --allow-file-urls to allow them", ErrURLNotAllowed, Redact(rawURL))
		}
		if u.User != nil || (u.Host != "" && u.Host != "localhost") {
			return fmt.Errorf("%w: %s names a host; a file:// URL is file:///path", ErrURLNotAllowed, Redact(rawURL))
		}
		if u.Path == "" {
			return fmt.Errorf("%w: %s names no path", ErrURLNotAllowed, Redact(rawURL))
		}
		return nil
	case "":
		return fmt.Errorf("%w: %s has no scheme; use https://host/path or ssh://user@host/path (scp-like user@host:path is not supported)", ErrURLNotAllowed, Redact(rawURL))
	default:
		return fmt.Errorf("%w: unsupported URL scheme %q: use http, https or ssh", ErrURLNotAllowed, u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%w: %s names no host", ErrURLNotAllowed, Redact(rawURL))
	}
	return nil
}

// ValidateBranch says whether name is a branch name Git accepts, by the rules of
// `git check-ref-format --branch`.
func ValidateBranch(name string) error {
	if strings.HasPrefix(name, "-") {
		return fmt.Errorf("%w: branch %q starts with -", ErrInvalidReference, name)
	}
	if name == "HEAD" || name == "@" {
		// git reads @ as HEAD; neither names a branch.
		return fmt.Errorf("%w: %s is not a branch name", ErrInvalidReference, name)
	}
	if why := refNameProblem(name); why != "" {
		return fmt.Errorf("%w: branch %q %s", ErrInvalidReference, name, why)
	}
	return nil
}

// ValidateTag says whether name is a tag name Git accepts, by the rules of
// `git check-ref-format refs/tags/<name>`.
func ValidateTag(name string) error {
	if why := refNameProblem(name); why != "" {
		return fmt.Errorf("%w: tag %q %s", ErrInvalidReference, name, why)
	}
	return nil
}

// refNameProblem says what makes name, below refs/heads/ or refs/tags/, an invalid
// reference name (the rules of git-check-ref-format), or "" when nothing does.
func refNameProblem(name string) string {
	switch {
	case name == "":
		return "is empty"
	case strings.HasPrefix(name, "/"), strings.HasSuffix(name, "/"):
		return "starts or ends with /"
	case strings.HasSuffix(name, "."):
		return "ends with ."
	case strings.Contains(name, ".."):
		return "holds .."
	case strings.Contains(name, "@{"):
		return "holds @{"
	case strings.Contains(name, "//"):
		return "holds //"
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return "holds a control character"
		}
		if strings.ContainsRune(" ~^:?*[\\", r) {
			return fmt.Sprintf("holds %q", r)
		}
	}
	for _, c := range strings.Split(name, "/") {
		if strings.HasPrefix(c, ".") {
			return "has a part that starts with ."
		}
		if strings.HasSuffix(c, ".lock") {
			return "has a part that ends with .lock"
		}
	}
	return ""
}

// Validate says whether every name the reference sets is a valid branch, tag or commit (a
// full hash), and that it sets one.
func (r Reference) Validate() error {
	if r.Branch == "" && r.Tag == "" && r.Commit == "" {
		return fmt.Errorf("%w: no branch, tag or commit", ErrInvalidReference)
	}
	if r.Branch != "" {
		if err := ValidateBranch(r.Branch); err != nil {
			return err
		}
	}
	if r.Tag != "" {
		if err := ValidateTag(r.Tag); err != nil {
			return err
		}
	}
	if r.Commit != "" && !isHash(r.Commit) {
		return fmt.Errorf("%w: commit %q is not a full hash (40 hexadecimal digits)", ErrInvalidReference, r.Commit)
	}
	return nil
}

func isHash(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
