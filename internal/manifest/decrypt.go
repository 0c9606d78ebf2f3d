package manifest

import (
	"fmt"
	"strings"

	"github.com/immutable-release/operator/internal/decrypt"
)

// decryptFile decrypts data, read from file, when it is SOPS-encrypted, and says whether it
// was. The plaintext is held to MaxFileSize like the file.
func decryptFile(d *decrypt.Decryptor, file string, data []byte, limits Limits) ([]byte, bool, error) {
	if !decrypt.Encrypted(file, data) {
		return data, false, nil
	}
	plain, err := d.Decrypt(file, data)
	if err != nil {
		return nil, false, err
	}
	if int64(len(plain)) > limits.MaxFileSize {
		return nil, false, fmt.Errorf("the decrypted file is %d bytes, over the limit of %d bytes", len(plain), limits.MaxFileSize)
	}
	return plain, true, nil
}

// withheld keeps where each problem is and drops what it says: a problem in a decrypted
// file could quote a value (a YAML error quotes the text it stumbled on).
func withheld(problems []Problem) []Problem {
	out := make([]Problem, len(problems))
	for i, p := range problems {
		out[i] = Problem{File: p.File, Line: p.Line, Object: p.Object,
			Message: "the decrypted document is not a valid Kubernetes object (the details are withheld, as they could quote a decrypted value)"}
	}
	return out
}

// redact is err's message, unless the build read decrypted files: kustomize's errors can
// quote what it read.
func (k *kustomizeFS) redact(err error) string {
	if len(k.decrypted) == 0 {
		return err.Error()
	}
	return "the details are withheld, as they could quote a value decrypted from " + strings.Join(k.decrypted, ", ")
}

// checkDecrypted refuses an object that still carries SOPS metadata, whatever produced it:
// ciphertext is never applied.
func checkDecrypted(objects []Object) error {
	var problems []Problem
	for _, o := range objects {
		if m, ok := o.Object["sops"].(map[string]any); ok && m != nil {
			problems = append(problems, Problem{File: o.File, Line: o.Line, Object: ObjectName(o.Unstructured),
				Message: "the object is still SOPS-encrypted after the build: encrypt whole files (sops --encrypt --in-place), which the build decrypts as it reads them"})
		}
	}
	if len(problems) > 0 {
		return newError(ReasonDecryptionFailed, problems...)
	}
	return nil
}
