package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"

	goyaml "go.yaml.in/yaml/v3"
	"sigs.k8s.io/kustomize/api/types"
)

// allowRemoteHint ends every refusal: the tenant cannot lift it, only the platform admin can.
const allowRemoteHint = "copy it into the repository, or ask the platform admin to allow remote bases with the manager flag --allow-remote-bases"

// schemePrefix is a URL scheme followed by //. kustomize clones http, https, ssh and file
// URLs and downloads http and https ones; any other scheme is refused too, so that a scheme
// a later kustomize learns is not fetched before this package knows of it.
var schemePrefix = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://`)

// scpUser is the user@ that kustomize's Git URL parser takes as the start of an scp-like
// address (git@github.com:org/repo), which it clones over ssh.
var scpUser = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]*@`)

// remoteEntry reports whether kustomize could fetch entry from the network rather than read
// it from the repository. kustomize decides this in internal packages (its loader's
// IsRemoteFile and its Git RepoSpec parser), so this is a copy that errs towards remote:
// FuzzRemoteEntry holds it to being a superset of kustomize's own parser.
func remoteEntry(entry string) bool {
	return downloadsURL(entry) || clonesRepo(entry)
}

// downloadsURL reports whether kustomize's loader would download entry over HTTP: it does for
// whatever url.Parse gives an http or https scheme, including the opaque form https:host/x.
func downloadsURL(entry string) bool {
	if u, err := url.Parse(entry); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		return true
	}
	return schemePrefix.MatchString(strings.TrimSpace(entry))
}

// clonesRepo reports whether kustomize could take entry for a Git repository to clone: a URL,
// an scp-like user@host:path, or github.com/org/repo, each maybe behind go-getter's git::.
func clonesRepo(entry string) bool {
	s := strings.TrimSpace(entry)
	for {
		rest, ok := cutPrefixFold(s, "git::")
		if !ok {
			break
		}
		s = rest
	}
	lower := strings.ToLower(s)
	return schemePrefix.MatchString(s) || scpUser.MatchString(s) ||
		strings.HasPrefix(lower, "github.com/") || strings.HasPrefix(lower, "github.com:")
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// hostLike reports whether entry starts with a host name, as in gitlab.com/org/repo. This
// kustomize reads such an entry as a local path (only github.com is implied), so it would fail
// as a missing folder; older kustomize cloned it, and "remote" is what its author meant. It is
// only asked about entries that do not exist in the repository.
func hostLike(entry string) bool {
	first, rest, ok := strings.Cut(strings.TrimSpace(entry), "/")
	if !ok || rest == "" {
		return false
	}
	first, _, _ = strings.Cut(first, ":")
	labels := strings.Split(first, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || strings.Trim(l, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			return false
		}
	}
	tld := labels[len(labels)-1]
	return len(tld) >= 2 && strings.Trim(tld, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") == ""
}

// entryKind says what kustomize does with an entry, which decides how far it is followed.
type entryKind int

const (
	// entryFile is only read (loaded) by kustomize: a patch, a CRD, an env file.
	entryFile entryKind = iota
	// entryBase may be a folder with a kustomization of its own: resources and components.
	entryBase
	// entryPlugin configures a generator, transformer or validator: a file, a folder whose
	// kustomize output is the configuration, or the configuration inline.
	entryPlugin
)

// pathEntry is a value of a kustomization that kustomize resolves to content.
type pathEntry struct {
	// field is where the value is, as written in the kustomization: patches[1].path.
	field string
	value string
	kind  entryKind
}

// kustomizationEntries lists every value of k that kustomize loads, clones or follows. The
// deprecated fields are listed too, as kustomize still honours them. Helm charts are left
// out: the Helm generator is disabled, so kustomize refuses helmCharts before loading anything.
func kustomizationEntries(k *types.Kustomization) []pathEntry {
	var out []pathEntry
	list := func(field string, kind entryKind, values []string) {
		for _, v := range values {
			out = append(out, pathEntry{field: field, value: v, kind: kind})
		}
	}
	list("resources", entryBase, k.Resources)
	list("bases", entryBase, k.Bases)
	list("components", entryBase, k.Components)
	list("crds", entryFile, k.Crds)
	list("configurations", entryFile, k.Configurations)
	list("generators", entryPlugin, k.Generators)
	list("transformers", entryPlugin, k.Transformers)
	list("validators", entryPlugin, k.Validators)
	for key, v := range k.OpenAPI {
		out = append(out, pathEntry{field: "openapi." + key, value: v})
	}
	for _, p := range k.PatchesStrategicMerge {
		out = append(out, pathEntry{field: "patchesStrategicMerge", value: string(p)})
	}
	for i, p := range k.Patches {
		out = append(out, pathEntry{field: fmt.Sprintf("patches[%d].path", i), value: p.Path})
	}
	for i, p := range k.PatchesJson6902 {
		out = append(out, pathEntry{field: fmt.Sprintf("patchesJson6902[%d].path", i), value: p.Path})
	}
	for i, r := range k.Replacements {
		out = append(out, pathEntry{field: fmt.Sprintf("replacements[%d].path", i), value: r.Path})
	}
	kv := func(field string, s types.KvPairSources) {
		for _, f := range s.FileSources {
			// A file source is key=path; the whole and the path are both checked, so that
			// neither the key nor its absence hides a URL.
			out = append(out, pathEntry{field: field + ".files", value: f})
			if _, p, ok := strings.Cut(f, "="); ok {
				out = append(out, pathEntry{field: field + ".files", value: p})
			}
		}
		list(field+".envs", entryFile, s.EnvSources)
		if s.EnvSource != "" {
			out = append(out, pathEntry{field: field + ".env", value: s.EnvSource})
		}
	}
	for i, g := range k.ConfigMapGenerator {
		kv(fmt.Sprintf("configMapGenerator[%d]", i), g.KvPairSources)
	}
	for i, g := range k.SecretGenerator {
		kv(fmt.Sprintf("secretGenerator[%d]", i), g.KvPairSources)
	}
	nonEmpty := out[:0]
	for _, e := range out {
		if e.value != "" {
			nonEmpty = append(nonEmpty, e)
		}
	}
	return nonEmpty
}

// pluginPathKeys are the fields of kustomize's builtin generators and transformers that name a
// file to load: PatchTransformer and PatchJson6902Transformer path, PatchStrategicMergeTransformer
// paths, ReplacementTransformer replacements[].path, ValueAddTransformer targetFilePath, the
// files, envs and env of ConfigMapGenerator and SecretGenerator, and the Helm values files.
// kustomize decodes these configurations through encoding/json, which matches keys in any case.
var pluginPathKeys = []string{"path", "paths", "targetFilePath", "files", "envs", "env", "valuesFile", "additionalValuesFiles"}

// pluginConfigEntries lists the values under pluginPathKeys anywhere in a generator or
// transformer configuration. Looking everywhere, not only where each builtin keeps its paths,
// costs a false alarm at worst (a label named path whose value is a URL).
func pluginConfigEntries(v any, field string) []pathEntry {
	var out []pathEntry
	switch v := v.(type) {
	case map[string]any:
		for key, child := range v {
			sub := field + "." + key
			if field == "" {
				sub = key
			}
			if isPluginPathKey(key) {
				switch c := child.(type) {
				case string:
					out = append(out, pathEntry{field: sub, value: c})
				case []any:
					for _, item := range c {
						if s, ok := item.(string); ok {
							out = append(out, pathEntry{field: sub, value: s})
						}
					}
				}
			}
			out = append(out, pluginConfigEntries(child, sub)...)
		}
	case []any:
		for i, child := range v {
			out = append(out, pluginConfigEntries(child, fmt.Sprintf("%s[%d]", field, i))...)
		}
	}
	return out
}

func isPluginPathKey(key string) bool {
	for _, k := range pluginPathKeys {
		if strings.EqualFold(key, k) {
			return true
		}
	}
	return false
}

// yamlDocuments decodes every document of data; documents that are not mappings are kept as
// they decode, so that the caller sees all of them.
func yamlDocuments(data []byte) ([]any, error) {
	var docs []any
	dec := goyaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// inlinePluginConfig returns the documents of a generators or transformers entry that is a
// configuration written inline rather than a path: kustomize tries it as objects first.
func inlinePluginConfig(entry string) ([]any, bool) {
	docs, err := yamlDocuments([]byte(entry))
	if err != nil || len(docs) == 0 {
		return nil, false
	}
	for _, d := range docs {
		m, ok := d.(map[string]any)
		if !ok || m["apiVersion"] == nil || m["kind"] == nil {
			return nil, false
		}
	}
	return docs, true
}

// remoteProblem explains one refused entry of the kustomization file.
func remoteProblem(file string, e pathEntry, hostOnly bool) Problem {
	what := "is a remote URL or Git repository: kustomize would fetch it from the manager's network, and its content is not in this repository for review"
	if hostOnly {
		what = "is not a path in the repository and names a host, as a remote Git repository does: remote bases are not fetched"
	}
	return Problem{File: file, Message: fmt.Sprintf("%s entry %q %s; %s", e.field, e.value, what, allowRemoteHint)}
}

// remoteEntries returns a problem for each entry of the kustomization in data that kustomize
// could fetch. A file kustomize cannot decode is left to kustomize, which uses the same decoder
// and so refuses it too. Inline generator and transformer configurations are looked into.
func remoteEntries(file string, data []byte) []Problem {
	var k types.Kustomization
	if err := k.Unmarshal(data); err != nil {
		return nil
	}
	var problems []Problem
	for _, e := range kustomizationEntries(&k) {
		if e.kind == entryPlugin {
			if docs, ok := inlinePluginConfig(e.value); ok {
				problems = append(problems, remoteConfigEntries(file, e.field, docs)...)
			}
		}
		if remoteEntry(e.value) {
			problems = append(problems, remoteProblem(file, e, false))
		}
	}
	return problems
}

// remoteConfigEntries returns a problem for each path in generator or transformer
// configurations (decoded documents) that kustomize could fetch. where says where the
// configurations are when that is not the whole file, such as "transformers (inline)".
func remoteConfigEntries(file, where string, docs []any) []Problem {
	var problems []Problem
	for i, d := range docs {
		for _, e := range pluginConfigEntries(d, "") {
			if !remoteEntry(e.value) {
				continue
			}
			var at []string
			if where != "" {
				at = append(at, where)
			}
			if len(docs) > 1 {
				at = append(at, fmt.Sprintf("document %d", i+1))
			}
			e.field = strings.Join(append(at, e.field), ", ")
			problems = append(problems, remoteProblem(file, e, false))
		}
	}
	return problems
}
