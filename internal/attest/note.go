package attest

import (
	"bytes"
	"errors"
	"fmt"
)

// Bounds of a note. A note is written by anyone who can push to the repository's notes
// reference: one that is huge, or holds endless lines, is refused rather than read.
const (
	// MaxNoteBytes bounds a note: room for a thousand releases' records on one commit.
	MaxNoteBytes = 4 << 20
	// MaxLineBytes bounds one envelope: room for hundreds of containers.
	MaxLineBytes = 256 << 10
	// MaxLines bounds the lines of a note, and so the signatures one audit checks.
	MaxLines = 4096
)

// ErrNoteTooLarge marks a note over one of the bounds.
var ErrNoteTooLarge = errors.New("note over its limit")

// ErrNotRecorded says a note holds no statement of the deployment asked for that
// verifies with the key.
var ErrNotRecorded = errors.New("no statement of this deployment signed by the key")

// Lines splits a note into its non-empty lines, refusing a note over the bounds.
func Lines(note []byte) ([][]byte, error) {
	if len(note) > MaxNoteBytes {
		return nil, fmt.Errorf("%w: the note holds more than %d bytes", ErrNoteTooLarge, MaxNoteBytes)
	}
	var out [][]byte
	for len(note) > 0 {
		line, rest, _ := bytes.Cut(note, []byte{'\n'})
		note = rest
		if line = bytes.TrimSpace(line); len(line) == 0 {
			continue
		}
		if len(out) == MaxLines {
			return nil, fmt.Errorf("%w: the note holds more than %d lines", ErrNoteTooLarge, MaxLines)
		}
		out = append(out, line)
	}
	return out, nil
}

// Merge returns note with line in it: every earlier line recording the same deployment
// (Deployment.Key) signed by pub, the signer's own key, is dropped, and line added last.
// The lines of other deployments, other releases and clusters, lines that are not ours to
// read, and lines that claim the deployment but are not signed by pub (forged, or signed
// by a key rotated out) are kept as they are: a record is never lost by another's write,
// and a forgery stays for the audit to show. The merged note must stay within the bounds.
func Merge(note, line []byte, pub *PublicKey) ([]byte, error) {
	if len(line) > MaxLineBytes || bytes.ContainsAny(line, "\n\r") {
		return nil, fmt.Errorf("%w: the envelope is over %d bytes or spans lines", ErrNoteTooLarge, MaxLineBytes)
	}
	st, err := Peek(line)
	if err != nil {
		return nil, fmt.Errorf("the line to write: %w", err)
	}
	key := st.Predicate.Key()
	lines, err := Lines(note)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	kept := 0
	for _, l := range lines {
		if other, err := Peek(l); err == nil && other.Predicate.Key() == key {
			if _, err := pub.Verify(l); err == nil {
				continue
			}
		}
		b.Write(l)
		b.WriteByte('\n')
		kept++
	}
	b.Write(line)
	b.WriteByte('\n')
	if b.Len() > MaxNoteBytes || kept+1 > MaxLines {
		return nil, fmt.Errorf("%w: with this record the note would hold more than %d bytes or %d lines", ErrNoteTooLarge, MaxNoteBytes, MaxLines)
	}
	return b.Bytes(), nil
}

// Find returns the statement in note that records the deployment of key and verifies
// with pub: the last such line, as Merge writes it last. A line that claims the key but
// does not verify is ignored: it is not ours, whatever it says.
func Find(note []byte, key string, pub *PublicKey) (*Statement, error) {
	lines, err := Lines(note)
	if err != nil {
		return nil, err
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if st, err := Peek(lines[i]); err != nil || st.Predicate.Key() != key {
			continue
		}
		if st, err := pub.Verify(lines[i]); err == nil {
			return st, nil
		}
	}
	return nil, ErrNotRecorded
}

// Entry is one line of a note and what checking it gave.
type Entry struct {
	// Statement is what the line says: verified when Err is nil, else only decoded (nil
	// when it does not even decode), never to be believed.
	Statement *Statement
	// KeyID is the key it verified with.
	KeyID string
	// Err says why it does not verify with any of the keys.
	Err error
}

// Verify checks every line of note with keys (the current key and those rotated out) and
// returns one entry per line, in order: a line that verifies with none, or is no envelope
// at all, is an entry with its error, so that an audit shows it. A note over the bounds
// is refused whole.
func Verify(note []byte, keys ...*PublicKey) ([]Entry, error) {
	if len(keys) == 0 {
		return nil, errors.New("no public key to verify with")
	}
	lines, err := Lines(note)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(lines))
	for _, l := range lines {
		e := Entry{}
		for _, k := range keys {
			st, err := k.Verify(l)
			if err == nil {
				e = Entry{Statement: st, KeyID: k.ID()}
				break
			}
			if e.Err == nil {
				e.Err = err
			}
		}
		if e.Statement == nil {
			e.Statement, _ = Peek(l)
		}
		out = append(out, e)
	}
	return out, nil
}
