// Package pin turns image tags into digests in manifest files: it finds every container
// image (and kustomize images entry) not pinned by digest, asks the registry for the digest
// of its tag, and rewrites the exact bytes of the image value, so that comments and
// formatting stay as they were.
package pin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"unicode/utf8"

	goyaml "go.yaml.in/yaml/v3"

	"github.com/immutable-release/operator/internal/manifest"
)

// Site is one image in a file that is not pinned by digest.
type Site struct {
	// File is the file's path as given to Scan.
	File string
	// Line is 1-based.
	Line int
	// Object is Kind/name of the object, or the kustomization images entry.
	Object string
	// Container is the container's name; empty for a kustomization images entry.
	Container string
	// Image is the reference whose digest is asked for: name:tag.
	Image string
	// Written is the value as written in the file.
	Written string

	// The edit: replace the bytes [start, end) with the pinned reference or, for a
	// kustomization images entry, insert a digest field at insert.
	start, end int
	kustomize  bool
	insert     int
	prefix     string
}

// Pinned is the value the site gets with digest: name:tag@digest (:latest written out when
// the image named no tag), or, for a kustomization images entry, the digest field.
func (s Site) Pinned(digest string) string {
	if s.kustomize {
		return "digest: " + digest
	}
	if !strings.Contains(s.Written[strings.LastIndex(s.Written, "/")+1:], ":") {
		return s.Written + ":latest@" + digest
	}
	return s.Written + "@" + digest
}

// Scan finds the images of one YAML file that are not pinned by a sha256 digest: the
// containers of every object that carries a pod spec (where the operator checks them), and
// the images entries of a kustomization with a newTag and no digest. Images that pinning
// cannot fix (not a valid reference, a malformed digest, a value written so that its bytes
// cannot be edited in place) are problems.
func Scan(file string, data []byte) ([]Site, []manifest.Problem) {
	s := &scanner{file: file, data: data, lineStarts: lineStarts(data)}
	dec := goyaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc goyaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.problem(0, "", "", "YAML error: "+strings.TrimPrefix(err.Error(), "yaml: "))
			break
		}
		if len(doc.Content) == 1 {
			s.document(doc.Content[0])
		}
	}
	return s.sites, s.problems
}

type scanner struct {
	file       string
	data       []byte
	lineStarts []int
	sites      []Site
	problems   []manifest.Problem
}

func (s *scanner) problem(line int, object, container, msg string) {
	s.problems = append(s.problems, manifest.Problem{File: s.file, Line: line, Object: object, Container: container, Message: msg})
}

func (s *scanner) document(root *goyaml.Node) {
	if root.Kind != goyaml.MappingNode {
		return
	}
	apiVersion, kind := scalar(lookup(root, "apiVersion")), scalar(lookup(root, "kind"))
	base := path.Base(s.file)
	if kind == "Kustomization" || (kind == "" && (base == "kustomization.yaml" || base == "kustomization.yml" || base == "Kustomization")) {
		s.kustomization(lookup(root, "images"))
		return
	}
	if kind == "List" && apiVersion == "v1" {
		if items := lookup(root, "items"); items != nil && items.Kind == goyaml.SequenceNode {
			for _, item := range items.Content {
				s.document(item)
			}
		}
		return
	}
	object := kind + "/" + scalar(lookup(lookup(root, "metadata"), "name"))
	for _, p := range manifest.PodSpecPaths(apiVersion, kind) {
		spec := root
		for _, key := range p {
			spec = lookup(spec, key)
		}
		for _, field := range manifest.ContainerFields {
			list := lookup(spec, field)
			if list == nil || list.Kind != goyaml.SequenceNode {
				continue
			}
			for _, c := range list.Content {
				if image := lookup(c, "image"); image != nil {
					s.image(image, object, scalar(lookup(c, "name")))
				}
			}
		}
	}
}

// image records a container image that is not pinned.
func (s *scanner) image(n *goyaml.Node, object, container string) {
	if n.Kind == goyaml.AliasNode {
		s.problem(n.Line, object, container, "the image is a YAML alias: pin the anchored value, or write the image here")
		return
	}
	if n.Kind != goyaml.ScalarNode {
		s.problem(n.Line, object, container, "the image is not a string")
		return
	}
	if _, err := manifest.PinnedImage(n.Value); err == nil {
		return
	}
	ref, err := manifest.ParseImageReference(n.Value)
	if err != nil {
		s.problem(n.Line, object, container, err.Error())
		return
	}
	if ref.Digest != "" {
		_, err := manifest.PinnedImage(n.Value)
		s.problem(n.Line, object, container, err.Error()+"; pin does not replace digests: correct it by hand")
		return
	}
	start, end, ok := s.valueBytes(n)
	if !ok {
		s.problem(n.Line, object, container, "the image is written in a form pin cannot edit in place: write it as a plain or quoted string on one line")
		return
	}
	s.sites = append(s.sites, Site{File: s.file, Line: n.Line, Object: object, Container: container,
		Image: ref.Name + ":" + orLatest(ref.Tag), Written: n.Value, start: start, end: end})
}

// kustomization records the images entries that set a tag and no digest: kustomize turns
// them into name:tag, unpinned.
func (s *scanner) kustomization(images *goyaml.Node) {
	if images == nil || images.Kind != goyaml.SequenceNode {
		return
	}
	for _, entry := range images.Content {
		if entry.Kind != goyaml.MappingNode {
			continue
		}
		object := "kustomization images entry " + scalar(lookup(entry, "name"))
		newTag := lookup(entry, "newTag")
		if newTag == nil || scalar(lookup(entry, "digest")) != "" || strings.Contains(newTag.Value, "@") {
			continue
		}
		name := scalar(lookup(entry, "newName"))
		if name == "" {
			name = scalar(lookup(entry, "name"))
		}
		ref, err := manifest.ParseImageReference(name + ":" + newTag.Value)
		if err != nil || ref.Digest != "" {
			s.problem(newTag.Line, object, "", fmt.Sprintf("name %q with newTag %q is not a valid image reference", name, newTag.Value))
			continue
		}
		start, end, ok := s.valueBytes(newTag)
		if !ok {
			s.problem(newTag.Line, object, "", "newTag is written in a form pin cannot edit in place: write it as a plain or quoted string on one line")
			continue
		}
		if isQuote(s.data, start-1) {
			end++ // past the closing quote
		}
		site := Site{File: s.file, Line: newTag.Line, Object: object, Image: ref.Name + ":" + ref.Tag, Written: newTag.Value, kustomize: true}
		if entry.Style&goyaml.FlowStyle != 0 {
			site.insert, site.prefix = end, ", digest: "
		} else {
			// A new line below newTag's, indented as its key, after any comment on that line.
			key := keyNode(entry, "newTag")
			lineEnd, nl := len(s.data), "\n"
			if i := bytes.IndexByte(s.data[end:], '\n'); i >= 0 {
				lineEnd = end + i
				if lineEnd > 0 && s.data[lineEnd-1] == '\r' {
					lineEnd, nl = lineEnd-1, "\r\n"
				}
			}
			keyStart, ok := s.offset(key.Line, key.Column)
			if !ok {
				continue
			}
			indent := strings.Repeat(" ", keyStart-s.lineStarts[key.Line-1])
			site.insert, site.prefix = lineEnd, nl+indent+"digest: "
		}
		s.sites = append(s.sites, site)
	}
}

// valueBytes finds the bytes of a one-line plain or quoted scalar, without its quotes, and
// checks that they are the value: the file is edited only where it says what was parsed.
func (s *scanner) valueBytes(n *goyaml.Node) (start, end int, ok bool) {
	off, ok := s.offset(n.Line, n.Column)
	if !ok {
		return 0, 0, false
	}
	switch n.Style {
	case 0: // plain
	case goyaml.DoubleQuotedStyle, goyaml.SingleQuotedStyle:
		if !isQuote(s.data, off) {
			return 0, 0, false
		}
		quote := s.data[off]
		off++
		if off+len(n.Value) >= len(s.data) || s.data[off+len(n.Value)] != quote {
			return 0, 0, false
		}
	default:
		return 0, 0, false
	}
	end = off + len(n.Value)
	if end > len(s.data) || string(s.data[off:end]) != n.Value || strings.ContainsAny(n.Value, "\r\n\"'") {
		return 0, 0, false
	}
	return off, end, true
}

// offset turns a 1-based line and column (in characters) into a byte offset.
func (s *scanner) offset(line, column int) (int, bool) {
	if line < 1 || line > len(s.lineStarts) || column < 1 {
		return 0, false
	}
	p := s.lineStarts[line-1]
	for i := 1; i < column; i++ {
		if p >= len(s.data) || s.data[p] == '\n' {
			return 0, false
		}
		_, size := utf8.DecodeRune(s.data[p:])
		p += size
	}
	return p, true
}

// Rewrite returns data with every site pinned to digests[site.Image]. Sites without a
// digest are left as they are. The sites must come from Scan of the same data.
func Rewrite(data []byte, sites []Site, digests map[string]string) []byte {
	sorted := append([]Site(nil), sites...)
	at := func(s Site) int {
		if s.kustomize {
			return s.insert
		}
		return s.start
	}
	sort.Slice(sorted, func(i, j int) bool { return at(sorted[i]) > at(sorted[j]) })
	out := append([]byte(nil), data...)
	for _, s := range sorted {
		digest, ok := digests[s.Image]
		if !ok {
			continue
		}
		if s.kustomize {
			out = splice(out, s.insert, s.insert, s.prefix+digest)
		} else {
			out = splice(out, s.start, s.end, s.Pinned(digest))
		}
	}
	return out
}

func splice(data []byte, start, end int, text string) []byte {
	out := make([]byte, 0, len(data)-(end-start)+len(text))
	out = append(out, data[:start]...)
	out = append(out, text...)
	return append(out, data[end:]...)
}

func lineStarts(data []byte) []int {
	starts := []int{0}
	for i, b := range data {
		if b == '\n' {
			starts = append(starts, i+1)
		}
	}
	return starts
}

func isQuote(data []byte, i int) bool {
	return i >= 0 && i < len(data) && (data[i] == '"' || data[i] == '\'')
}

// lookup returns the value of key in a mapping node, or nil.
func lookup(n *goyaml.Node, key string) *goyaml.Node {
	if k := keyNode(n, key); k != nil {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i] == k {
				return n.Content[i+1]
			}
		}
	}
	return nil
}

func keyNode(n *goyaml.Node, key string) *goyaml.Node {
	if n == nil || n.Kind != goyaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Kind == goyaml.ScalarNode && n.Content[i].Value == key {
			return n.Content[i]
		}
	}
	return nil
}

func scalar(n *goyaml.Node) string {
	if n == nil || n.Kind != goyaml.ScalarNode {
		return ""
	}
	return n.Value
}

func orLatest(tag string) string {
	if tag == "" {
		return "latest"
	}
	return tag
}
