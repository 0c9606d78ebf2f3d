package manifest

import (
	"fmt"
	"strings"
)

// Reasons an Error carries. They match the condition reasons of the API (api/v1alpha1), so
// the controller can put them on the object as they are.
const (
	ReasonInvalidPath     = "InvalidPath"
	ReasonPathNotFound    = "PathNotFound"
	ReasonInvalidManifest = "InvalidManifest"
	ReasonImageNotPinned  = "ImageNotPinned"
	// ReasonRemoteResourceRefused: a kustomization names a remote URL or Git repository while
	// Limits.AllowRemoteBases is off. Only the platform admin can allow them.
	ReasonRemoteResourceRefused = "RemoteResourceRefused"
	// ReasonDecryptionFailed: a SOPS-encrypted file does not decrypt with the release's keys,
	// or the release has none.
	ReasonDecryptionFailed = "DecryptionFailed"
)

// Problem is one thing wrong with the manifests, located as precisely as the input allows.
type Problem struct {
	// File is relative to the repository root; empty when the problem is not in one file.
	File string `json:"file,omitempty"`
	// Line is 1-based; 0 when unknown (for example in kustomize output).
	Line int `json:"line,omitempty"`
	// Object is Kind/namespace/name or Kind/name.
	Object string `json:"object,omitempty"`
	// Container is the container whose image is at fault.
	Container string `json:"container,omitempty"`
	// Message says what is wrong and what to do.
	Message string `json:"message"`
}

// String formats the problem as file:line: object container: message.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			fmt.Fprintf(&b, ":%d", p.Line)
		}
		b.WriteString(": ")
	}
	if p.Object != "" {
		b.WriteString(p.Object)
		if p.Container != "" {
			b.WriteString(" container " + p.Container)
		}
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Error is what Build returns when the manifests cannot be applied. Nothing of a revision
// with an Error may be applied: retrying cannot fix it, only a new commit or a new spec can.
type Error struct {
	Reason   string
	Problems []Problem
}

// maxProblemsInMessage keeps condition messages readable; the count says how many are left out.
const maxProblemsInMessage = 10

func (e *Error) Error() string {
	var summary string
	switch e.Reason {
	case ReasonImageNotPinned:
		summary = "images must be pinned by sha256 digest"
	case ReasonInvalidPath:
		summary = "invalid path"
	case ReasonPathNotFound:
		summary = "path not found"
	case ReasonRemoteResourceRefused:
		summary = "remote resources refused"
	case ReasonDecryptionFailed:
		summary = "decryption failed, nothing was applied"
	default:
		summary = "invalid manifests"
	}
	lines := make([]string, 0, len(e.Problems))
	for i, p := range e.Problems {
		if i == maxProblemsInMessage {
			lines = append(lines, fmt.Sprintf("and %d more", len(e.Problems)-i))
			break
		}
		lines = append(lines, p.String())
	}
	return summary + ": " + strings.Join(lines, "; ")
}

func newError(reason string, p ...Problem) *Error {
	return &Error{Reason: reason, Problems: p}
}
