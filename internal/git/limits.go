package git

import (
	"errors"
	"fmt"
	"time"
)

// Limits bound what one repository can make the operator do: a repository is written by
// tenants, and a server can answer anything, for as long as it likes.
type Limits struct {
	// CheckoutBytes caps the bytes of one checkout (file contents and link targets).
	CheckoutBytes int64
	// CheckoutFiles caps the files, folders and links of one checkout.
	CheckoutFiles int64
	// FetchBytes caps the bytes read from a server for one remote operation (a listing, a
	// fetch, a push), over HTTP(S) and SSH. file:// URLs, for local development only, are
	// not counted.
	FetchBytes int64
	// Timeout bounds one remote operation when the caller's context has no earlier
	// deadline: a server that accepts and never answers must not hold a reconcile.
	Timeout time.Duration
}

// DefaultLimits are the limits of a new Cache: room for a large repository of manifests,
// not for a repository of binaries. The timeout is Flux's.
var DefaultLimits = Limits{
	CheckoutBytes: 256 << 20,
	CheckoutFiles: 50_000,
	FetchBytes:    1 << 30,
	Timeout:       60 * time.Second,
}

// ErrTooLarge marks a repository, or a server's answer, over one of the Limits. Retrying
// does not help; the repository must get smaller or the limit larger.
var ErrTooLarge = errors.New("over the size limit")

// orDefault fills the limits left at zero with the defaults.
func (l Limits) orDefault() Limits {
	if l.CheckoutBytes <= 0 {
		l.CheckoutBytes = DefaultLimits.CheckoutBytes
	}
	if l.CheckoutFiles <= 0 {
		l.CheckoutFiles = DefaultLimits.CheckoutFiles
	}
	if l.FetchBytes <= 0 {
		l.FetchBytes = DefaultLimits.FetchBytes
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultLimits.Timeout
	}
	return l
}

// usage is what a checkout holds, counted as Limits count it.
type usage struct {
	bytes, files int64
}

// check says which limit u is over, if any; p is the entry that took it over.
func (l Limits) check(u usage, p string) error {
	switch {
	case u.files > l.CheckoutFiles:
		return fmt.Errorf("%w: at %q the checkout holds more than %d files, folders and links (the limit of one checkout): keep fewer files in the repository", ErrTooLarge, p, l.CheckoutFiles)
	case u.bytes > l.CheckoutBytes:
		return fmt.Errorf("%w: at %q the checkout holds more than %s (the limit of one checkout): keep large files out of the repository", ErrTooLarge, p, formatBytes(l.CheckoutBytes))
	}
	return nil
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
