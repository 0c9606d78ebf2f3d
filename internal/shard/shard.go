// Package shard says which releases one manager reconciles when a fleet is split across
// several (--watch-label-selector, as Flux's controllers shard), and what follows from it:
// the lease its replicas elect a leader on, and the labels its releases' objects carry so
// that each manager watches only its own releases' objects. Kubernetes does the rest: one
// lease per shard, and label selectors on every watch.
package shard

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"k8s.io/apimachinery/pkg/labels"
)

// Shard is the part of the fleet one manager reconciles. The zero value is the whole fleet.
type Shard struct {
	selector labels.Selector
	keys     []string
}

// Parse reads a label selector (kubectl's syntax); "" selects every release.
func Parse(selector string) (Shard, error) {
	if selector == "" {
		return Shard{}, nil
	}
	sel, err := labels.Parse(selector)
	if err != nil {
		return Shard{}, fmt.Errorf("parsing the label selector %q: %w", selector, err)
	}
	reqs, _ := sel.Requirements()
	var keys []string
	seen := map[string]bool{}
	for _, r := range reqs {
		if !seen[r.Key()] {
			seen[r.Key()] = true
			keys = append(keys, r.Key())
		}
	}
	return Shard{selector: sel, keys: keys}, nil
}

// Selector selects the shard's releases, and, since they carry the same labels (Stamp),
// the objects those releases applied.
func (s Shard) Selector() labels.Selector {
	if s.selector == nil {
		return labels.Everything()
	}
	return s.selector
}

// Selects says whether the release with these labels is the shard's.
func (s Shard) Selects(releaseLabels map[string]string) bool {
	return s.Selector().Matches(labels.Set(releaseLabels))
}

// Keys are the label keys the selector names: Stamp sets or removes them.
func (s Shard) Keys() []string { return s.keys }

// LeaseName is the leader election lease of the shard's replicas: base for the whole
// fleet, and base with a digest of the selector for a shard, so that every shard elects
// its own leader and the replicas of one shard share one lease (as Flux derives it). The
// digest is of the selector as labels.Parse writes it back, so that two spellings of one
// selector share a lease.
func (s Shard) LeaseName(base string) string {
	if s.selector == nil || s.selector.Empty() {
		return base
	}
	sum := sha256.Sum256([]byte(s.selector.String()))
	return base + "-" + hex.EncodeToString(sum[:])[:10]
}

// Stamp gives an object the release's values of the labels the selector names, and takes
// away those the release does not have: the object is then selected by exactly the shards
// that select its release, so a shard's watches hold its own releases' objects and no
// other shard's. A release relabelled into another shard takes its objects along at its
// next apply there. objectLabels is changed in place and returned (allocated when nil).
func (s Shard) Stamp(releaseLabels, objectLabels map[string]string) map[string]string {
	if len(s.keys) == 0 {
		return objectLabels
	}
	if objectLabels == nil {
		objectLabels = map[string]string{}
	}
	for _, k := range s.keys {
		if v, ok := releaseLabels[k]; ok {
			objectLabels[k] = v
		} else {
			delete(objectLabels, k)
		}
	}
	return objectLabels
}
