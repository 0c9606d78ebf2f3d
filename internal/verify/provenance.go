package verify

import (
	"encoding/json"
	"strings"
)

// provenance is what a SLSA provenance predicate says about a build.
type provenance struct {
	builderID  string
	repository string
	commit     string
}

// slsaPredicate holds the fields of SLSA provenance v1 and v0.2 that name the builder and
// the source.
type slsaPredicate struct {
	// v1
	BuildDefinition struct {
		ExternalParameters struct {
			Workflow struct {
				Repository string `json:"repository"`
			} `json:"workflow"`
		} `json:"externalParameters"`
		ResolvedDependencies []dependency `json:"resolvedDependencies"`
	} `json:"buildDefinition"`
	RunDetails struct {
		Builder struct {
			ID string `json:"id"`
		} `json:"builder"`
	} `json:"runDetails"`
	// v0.2
	Builder struct {
		ID string `json:"id"`
	} `json:"builder"`
	Invocation struct {
		ConfigSource dependency `json:"configSource"`
	} `json:"invocation"`
	Materials []dependency `json:"materials"`
}

type dependency struct {
	URI    string            `json:"uri"`
	Digest map[string]string `json:"digest"`
}

// gitCommit is the commit a dependency names, if it is a Git source.
func (d dependency) gitCommit() string {
	if c := d.Digest["gitCommit"]; c != "" {
		return c
	}
	return d.Digest["sha1"]
}

// parseProvenance reads the builder and the source of a SLSA provenance predicate (v1's
// runDetails.builder.id and first resolved Git dependency, or v0.2's builder.id and
// configSource or first Git material). What it cannot read is empty, which a required
// builderID or sourceRepository does not match.
func parseProvenance(predicate json.RawMessage) provenance {
	var p slsaPredicate
	if err := json.Unmarshal(predicate, &p); err != nil {
		return provenance{}
	}
	out := provenance{builderID: p.RunDetails.Builder.ID}
	if out.builderID == "" {
		out.builderID = p.Builder.ID
	}
	sources := append([]dependency{}, p.BuildDefinition.ResolvedDependencies...)
	sources = append(sources, p.Invocation.ConfigSource)
	sources = append(sources, p.Materials...)
	for _, d := range sources {
		if d.URI != "" && d.gitCommit() != "" {
			out.repository, out.commit = repositoryOf(d.URI), d.gitCommit()
			break
		}
	}
	if out.repository == "" {
		out.repository = p.BuildDefinition.ExternalParameters.Workflow.Repository
	}
	return out
}

// repositoryOf is the repository of a SLSA source URI: git+https://github.com/acme/shop@refs/heads/main
// is https://github.com/acme/shop.
func repositoryOf(uri string) string {
	uri = strings.TrimPrefix(uri, "git+")
	if scheme, rest, ok := strings.Cut(uri, "://"); ok {
		if i := strings.LastIndex(rest, "@"); i >= 0 {
			rest = rest[:i]
		}
		uri = scheme + "://" + rest
	}
	return strings.TrimSuffix(uri, ".git")
}
