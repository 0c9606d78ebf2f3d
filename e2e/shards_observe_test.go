//go:build e2e

package e2e

// What the shards story (shards_test.go) reads of the cluster and of the replicas: which
// replica leads a shard (its metrics), the releases and their applied objects (kubectl get
// -o json), and the release series on a replica's /metrics.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// leader and standby are shard s's replicas as their metrics say now.
func (f *fleet) leader(s int) *operator {
	o, err := f.leaderOf(s)
	if err != nil {
		f.t.Fatal(err)
	}
	return o
}

func (f *fleet) standby(s int) *operator {
	leader := f.leader(s)
	for _, o := range f.shards[s].replicas {
		if o != leader {
			return o
		}
	}
	return nil
}

// leaderOf is the one live replica of shard s whose leader_election_master_status is 1 for
// the shard's lease.
func (f *fleet) leaderOf(s int) (*operator, error) {
	set := f.shards[s]
	var leaders []*operator
	for _, o := range set.replicas {
		if !o.alive() {
			continue
		}
		if sc, err := scrape(o); err == nil && sc.leading[set.lease] {
			leaders = append(leaders, o)
		}
	}
	if len(leaders) != 1 {
		return nil, fmt.Errorf("%s has %d leaders", set.key, len(leaders))
	}
	return leaders[0], nil
}

func leaseHolderOf(name string) string { return leaseField(name, "holderIdentity") }

func leaseField(name, field string) string {
	out, _ := kubectl("-n", "immutable-release-system", "get", "lease", name, "--ignore-not-found", "-o", "jsonpath={.spec."+field+"}")
	return out
}

// release is what the story reads of an ImmutableRelease.
type release struct {
	Metadata struct {
		Name, Namespace string
		Labels          map[string]string
	}
	Status struct {
		LastAttemptedRevision string
		Conditions            []struct{ Type, Status, Reason, Message string }
	}
}

func (r release) ready() bool { return r.condition().Status == "True" }

func (r release) readyMessage() string {
	c := r.condition()
	return c.Status + " " + c.Reason + ": " + c.Message
}

func (r release) condition() (c struct{ Type, Status, Reason, Message string }) {
	for _, c := range r.Status.Conditions {
		if c.Type == "Ready" {
			return c
		}
	}
	return c
}

// releases lists the story's releases.
func (f *fleet) releases() []release {
	var list struct{ Items []release }
	f.getJSON(&list, "immutablerelease", "-A", "-l", fleetLabel+"=shards")
	return list.Items
}

// appliedObject is what the story reads of an applied ConfigMap or Deployment.
type appliedObject struct {
	Kind     string
	Metadata struct {
		Name, Namespace, ResourceVersion string
		Labels                           map[string]string
	}
}

// objects lists the ConfigMaps and Deployments the story's releases applied; only those of
// release name when it is not empty.
func (f *fleet) objects(name string) []appliedObject {
	var nss []string
	for k := range fleetNamespaces {
		nss = append(nss, f.ns(k))
	}
	sel := "release.immutable.dev/namespace in (" + strings.Join(nss, ",") + ")"
	if name != "" {
		sel += ",release.immutable.dev/name=" + name
	}
	var list struct{ Items []appliedObject }
	f.getJSON(&list, "configmaps,deployments", "-A", "-l", sel)
	return list.Items
}

// versions are the resourceVersions of the objects that carry shard key's label.
func (f *fleet) versions(key string) map[string]string {
	v := map[string]string{}
	for _, o := range f.objects("") {
		if o.Metadata.Labels[shardKey] == key {
			v[o.Kind+" "+o.Metadata.Namespace+"/"+o.Metadata.Name] = o.Metadata.ResourceVersion
		}
	}
	return v
}

// settledVersions waits until the shard's objects' resourceVersions stay the same for two
// seconds (a rollout's last status updates come after its release is Ready).
func (f *fleet) settledVersions(key string) map[string]string {
	prev := f.versions(key)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		time.Sleep(2 * time.Second)
		next := f.versions(key)
		if maps.Equal(prev, next) {
			return next
		}
		prev = next
	}
	f.t.Fatalf("the objects of %s kept changing for a minute", key)
	return nil
}

func (f *fleet) getJSON(into any, args ...string) {
	f.t.Helper()
	out, err := kubectl(append([]string{"get", "-o", "json"}, args...)...)
	if err != nil {
		f.t.Fatalf("%v: %s", err, out)
	}
	if err := json.Unmarshal([]byte(out), into); err != nil {
		f.t.Fatalf("reading kubectl get %v: %v", args, err)
	}
}

// metricsScrape is what the story reads of a replica's /metrics.
type metricsScrape struct {
	// reconciles holds namespace/name of each immutable_release_reconcile_total and
	// immutable_release_ready series.
	reconciles map[string]bool
	// leading holds the leases whose leader_election_master_status is 1.
	leading map[string]bool
}

var metricLabel = regexp.MustCompile(`(\w+)="([^"]*)"`)

func scrape(o *operator) (metricsScrape, error) {
	sc := metricsScrape{reconciles: map[string]bool{}, leading: map[string]bool{}}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + o.metrics + "/metrics")
	if err != nil {
		return sc, err
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(nil, 1<<20)
	for lines.Scan() {
		line := lines.Text()
		name, rest, ok := strings.Cut(line, "{")
		if !ok {
			continue
		}
		labels := map[string]string{}
		for _, m := range metricLabel.FindAllStringSubmatch(rest[:strings.LastIndex(rest, "}")+1], -1) {
			labels[m[1]] = m[2]
		}
		switch name {
		case "immutable_release_reconcile_total", "immutable_release_ready":
			sc.reconciles[labels["namespace"]+"/"+labels["name"]] = true
		case "leader_election_master_status":
			sc.leading[labels["name"]] = strings.HasSuffix(line, " 1")
		}
	}
	return sc, lines.Err()
}

func scrapeOf(t *testing.T, o *operator) metricsScrape {
	t.Helper()
	sc, err := scrape(o)
	if err != nil {
		t.Fatalf("reading the metrics of the replica logging to %s: %v", o.log, err)
	}
	return sc
}

// reconciled is the set of the story's releases (namespaces starting with prefix) with
// reconcile or ready series.
func (sc metricsScrape) reconciled(prefix string) map[string]bool {
	got := map[string]bool{}
	for k := range sc.reconciles {
		if strings.HasPrefix(k, prefix+"-") {
			got[k] = true
		}
	}
	return got
}

// diffKeys names what one set has that the other has not.
func diffKeys(want, got map[string]bool) string {
	var missing, extra []string
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(extra) == 0 {
		return ""
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return fmt.Sprintf("%d missing (%s), %d extra (%s)", len(missing), strings.Join(missing[:min(3, len(missing))], " "),
		len(extra), strings.Join(extra[:min(3, len(extra))], " "))
}

func firstKey(m map[string]bool) string {
	for k := range m {
		return k
	}
	return ""
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
