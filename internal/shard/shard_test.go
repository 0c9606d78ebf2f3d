package shard

import (
	"testing"

	. "github.com/onsi/gomega"
)

func TestShard(t *testing.T) {
	for _, tc := range []struct {
		name     string
		selector string
		release  map[string]string
		object   map[string]string
		selects  bool
		stamped  map[string]string
	}{
		{name: "whole fleet", release: map[string]string{"a": "1"}, object: map[string]string{"x": "y"}, selects: true, stamped: map[string]string{"x": "y"}},
		{name: "equality", selector: "shard=one", release: map[string]string{"shard": "one"}, object: map[string]string{"x": "y"},
			selects: true, stamped: map[string]string{"x": "y", "shard": "one"}},
		{name: "other shard", selector: "shard=one", release: map[string]string{"shard": "two"}, object: nil,
			selects: false, stamped: map[string]string{"shard": "two"}},
		{name: "Flux's main shard", selector: "!sharding.fluxcd.io/key", release: map[string]string{}, object: map[string]string{"sharding.fluxcd.io/key": "forged"},
			selects: true, stamped: map[string]string{}},
		{name: "set", selector: "shard in (a,b),tier", release: map[string]string{"shard": "b", "tier": "web"}, object: map[string]string{"tier": "db"},
			selects: true, stamped: map[string]string{"shard": "b", "tier": "web"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			s, err := Parse(tc.selector)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(s.Selects(tc.release)).To(Equal(tc.selects))
			stamped := s.Stamp(tc.release, tc.object)
			g.Expect(stamped).To(Equal(tc.stamped))
			// The stamped object is selected exactly when its release is.
			g.Expect(s.Selects(stamped)).To(Equal(tc.selects))
		})
	}
}

func TestLeaseName(t *testing.T) {
	g := NewWithT(t)
	whole, _ := Parse("")
	one, _ := Parse("shard=one")
	oneAgain, _ := Parse(" shard = one ")
	two, _ := Parse("shard=two")
	g.Expect(whole.LeaseName("base")).To(Equal("base"))
	g.Expect(one.LeaseName("base")).To(HavePrefix("base-"))
	g.Expect(one.LeaseName("base")).To(Equal(oneAgain.LeaseName("base")))
	g.Expect(one.LeaseName("base")).NotTo(Equal(two.LeaseName("base")))
	_, err := Parse("shard in (")
	g.Expect(err).To(HaveOccurred())
}
