package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/immutable-release/operator/internal/decrypt"
)

// The environment variables the sops CLI reads age keys from.
const (
	sopsAgeKeyFileEnv = "SOPS_AGE_KEY_FILE"
	sopsAgeKeyEnv     = "SOPS_AGE_KEY"
)

// addAgeKeyFlag adds --age-key-file to cmd.
func addAgeKeyFlag(cmd *cobra.Command, file *string) {
	cmd.Flags().StringVar(file, "age-key-file", "", "Decrypt SOPS-encrypted files with the age private keys in this file "+
		"(default: $"+sopsAgeKeyFileEnv+", then $"+sopsAgeKeyEnv+", as sops reads them). Decrypted values stay in memory and are never printed.")
}

// ageDecryptor reads the age keys from file, or else from the environment as sops does; nil
// without any, so that an encrypted file is reported as such. The error names where the keys
// were looked for, never what they hold.
func ageDecryptor(file string) (*decrypt.Decryptor, error) {
	from := "--age-key-file"
	if file == "" {
		file, from = os.Getenv(sopsAgeKeyFileEnv), "$"+sopsAgeKeyFileEnv
	}
	var keys []byte
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, usageError{fmt.Errorf("reading the age keys of %s: %w", from, err)}
		}
		keys = b
	case os.Getenv(sopsAgeKeyEnv) != "":
		keys, from = []byte(os.Getenv(sopsAgeKeyEnv)), "$"+sopsAgeKeyEnv
	default:
		return nil, nil
	}
	d, err := decrypt.New(keys)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", from, err)}
	}
	return d, nil
}
