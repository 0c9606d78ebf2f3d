package verify

import (
	"fmt"
	"os"

	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/tuf"
)

// maxTrustedRootBytes bounds a trusted_root.json.
const maxTrustedRootBytes = 4 << 20

// LoadTrustedRoot reads a Sigstore trusted_root.json: the platform admin's, for a private
// Sigstore instance (and the tests').
func LoadTrustedRoot(path string) (*root.TrustedRoot, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading the Sigstore trusted root: %w", err)
	}
	if info.Size() > maxTrustedRootBytes {
		return nil, fmt.Errorf("the Sigstore trusted root %s is larger than %d bytes", path, maxTrustedRootBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the Sigstore trusted root: %w", err)
	}
	tr, err := root.NewTrustedRootFromJSON(data)
	if err != nil {
		return nil, fmt.Errorf("the Sigstore trusted root %s: %w", path, err)
	}
	return tr, nil
}

// PublicTrustedRoot is the public Sigstore instance's trust material, from its TUF
// repository (sigstore-go's embedded root, refreshed daily). It needs to reach
// tuf-repo-cdn.sigstore.dev once, and a writable cache directory.
func PublicTrustedRoot(cacheDir string) (root.TrustedMaterial, error) {
	opts := tuf.DefaultOptions()
	if cacheDir != "" {
		opts.CachePath = cacheDir
	}
	tr, err := root.NewLiveTrustedRoot(opts)
	if err != nil {
		return nil, fmt.Errorf("fetching the public Sigstore trusted root: %w", err)
	}
	return tr, nil
}
