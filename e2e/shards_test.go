//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/immutable-release/operator/internal/admission"
	"github.com/immutable-release/operator/internal/receiver"
	"github.com/immutable-release/operator/internal/shard"
	"github.com/immutable-release/operator/internal/testgit"
)

const (
	// shardKey is the label Flux shards by.
	shardKey = "sharding.fluxcd.io/key"
	// fleetLabel marks the story's releases and namespaces, to list and delete them.
	fleetLabel = "e2e.immutable.dev/story"
	// fleetSize releases over fleetNamespaces namespaces (five, so that each namespace holds
	// releases of all three shards) and three shards; every deploymentEvery-th release
	// runs a kwok Deployment beside its ConfigMap, the others a ConfigMap only.
	fleetSize       = 300
	fleetNamespaces = 5
	deploymentEvery = 7
)

// fleet is the story's world: one repository with a path per release, and three shards of
// two replicas each.
type fleet struct {
	t      *testing.T
	prefix string // of the namespaces
	repo   *testgit.Repo
	url    string
	shards []*shardSet
	// policy is the uid of the Prevent policy as first seen.
	policy string
}

// shardSet is one shard: its selector's lease and its two replicas.
type shardSet struct {
	key      string // the shardKey value, shard1..3
	lease    string
	replicas []*operator
}

func (f *fleet) name(i int) string { return fmt.Sprintf("r%03d", i) }
func (f *fleet) ns(i int) string   { return fmt.Sprintf("%s-%d", f.prefix, i%fleetNamespaces) }

// shardOf is the index in f.shards of release i's shard.
func (f *fleet) shardOf(i int) int { return i % 3 }

// deployed returns the n-th release (from 0) of shard s that runs a Deployment.
func (f *fleet) deployed(s, n int) int {
	for i := 0; i < fleetSize; i += deploymentEvery {
		if f.shardOf(i) == s {
			if n == 0 {
				return i
			}
			n--
		}
	}
	f.t.Fatalf("no Deployment number %d in shard %d", n, s)
	return 0
}

func (f *fleet) deploymentOf(i int) string { return "web-" + f.name(i) }

// specShards: three shards of two replicas each share 300 releases; each release is
// reconciled by its shard's leader only, the Prevent policy of one shard's release holds
// whatever the other shards do, a push reaching any replica reaches its release, a killed
// leader's standby takes over without applying anything again, and a relabelled release
// moves to its new shard and is forgotten by the old one.
func specShards(t *testing.T) {
	f := &fleet{t: t, prefix: fmt.Sprintf("e2e-%d-fleet", seq.Add(1))}
	// The stories' operator reconciles every release: it stands aside while the shards run.
	env.operator.kill()
	t.Cleanup(f.cleanUp)
	f.startShards()
	f.createReleases()

	f.checkOneShardEach()
	f.checkPreventPolicy(f.deployed(0, 0))

	// A push delivered to the leader of another shard, then one to a standby of its own.
	f.pushAndTime(f.deployed(1, 0), f.leader(0), "the leader of shard1")
	f.pushAndTime(f.deployed(2, 0), f.standby(2), "the standby of shard3")

	f.failOver(1)
	f.pushAndTime(f.deployed(1, 1), f.leader(1), "the new leader of shard2")

	f.relabel(f.deployed(0, 1), 0, 2)
	if u := policyUID(); u != f.policy {
		t.Errorf("the Prevent policy changed (uid %s, then %q) during the failover and the move", f.policy, u)
	}
}

func TestShards(t *testing.T) { specShards(t) }

// startShards starts two replicas for each of three shards, and checks that each shard
// elected one leader on a lease of its own.
func (f *fleet) startShards() {
	t := f.t
	for s := range 3 {
		key := fmt.Sprintf("shard%d", s+1)
		sel, err := shard.Parse(shardKey + "=" + key)
		if err != nil {
			t.Fatal(err)
		}
		set := &shardSet{key: key, lease: sel.LeaseName(leaseName)}
		for range 2 {
			o, err := startOperator("--watch-label-selector=" + shardKey + "=" + key)
			if err != nil {
				t.Fatal(err)
			}
			set.replicas = append(set.replicas, o)
		}
		f.shards = append(f.shards, set)
	}
	holders := map[string]string{}
	for s, set := range f.shards {
		waitFor(t, 30*time.Second, func() string {
			if h := leaseHolderOf(set.lease); h == "" {
				return "shard " + set.key + " has no lease holder on " + set.lease
			}
			if _, err := f.leaderOf(s); err != nil {
				return err.Error()
			}
			return ""
		})
		h := leaseHolderOf(set.lease)
		if other, taken := holders[h]; taken {
			t.Fatalf("%s holds the leases of %s and %s", h, other, set.key)
		}
		holders[h] = set.key
		t.Logf("%s: lease %s held by %s", set.key, set.lease, h)
	}
	if h := leaseHolderOf(leaseName); h != "" {
		// The whole fleet's lease belongs to the killed stories' operator: no shard takes it.
		t.Logf("the whole fleet's lease %s still names the stopped operator %s", leaseName, h)
	}
}

// createReleases pushes a path per release to one repository, creates the namespaces,
// their Git credentials and Receivers and the 300 releases with one kubectl apply, and
// waits until all are Ready.
func (f *fleet) createReleases() {
	t := f.t
	repo, err := env.git.CreateRepo(f.prefix+".git", "main")
	if err != nil {
		t.Fatal(err)
	}
	f.repo, f.url = repo, "http://"+env.gitProxy.addr+"/"+repo.Name
	files := map[string]string{}
	for i := range fleetSize {
		files[fmt.Sprintf("apps/%s/configmap.yaml", f.name(i))] = fmt.Sprintf(
			"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%s}\ndata: {release: %s}\n", f.name(i), f.name(i))
		if i%deploymentEvery == 0 {
			files[f.deploymentPath(i)] = f.deployment(i, digestV1)
		}
	}
	must(t, repo.Write(files))
	if _, err := repo.CommitAndPush("Release the fleet"); err != nil {
		t.Fatal(err)
	}

	var b strings.Builder
	for k := range fleetNamespaces {
		ns := f.ns(k)
		fmt.Fprintf(&b, `apiVersion: v1
kind: Namespace
metadata: {name: %[1]s, labels: {%[2]s: shards}}
---
apiVersion: v1
kind: Secret
metadata: {name: fleet-git, namespace: %[1]s}
stringData: {username: %[3]q, password: %[4]q}
---
apiVersion: v1
kind: Secret
metadata: {name: webhook, namespace: %[1]s}
stringData: {token: %[5]q}
---
apiVersion: release.immutable.dev/v1alpha1
kind: Receiver
metadata: {name: git, namespace: %[1]s}
spec: {type: github, secretRef: {name: webhook}}
---
`, ns, fleetLabel, env.git.Username, env.git.Password, webhookSecret)
	}
	for i := range fleetSize {
		drift := ""
		if i == f.deployed(0, 0) {
			drift = "  drift: {mode: Prevent}\n"
		}
		fmt.Fprintf(&b, `apiVersion: release.immutable.dev/v1alpha1
kind: ImmutableRelease
metadata:
  name: %s
  namespace: %s
  labels: {%s: %s, %s: shards}
spec:
  git: {url: %q, ref: {branch: main}, secretRef: {name: fleet-git}}
  path: ./apps/%s
  interval: 1h
  timeout: 2m
  prune: true
%s---
`, f.name(i), f.ns(i), shardKey, f.shards[f.shardOf(i)].key, fleetLabel, f.url, f.name(i), drift)
	}
	file := filepath.Join(t.TempDir(), "fleet.yaml")
	must(t, os.WriteFile(file, []byte(b.String()), 0o644))
	start := time.Now()
	if out, err := kubectl("apply", "-f", file); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	waitFor(t, 10*time.Minute, func() string {
		var notReady []string
		for _, r := range f.releases() {
			if !r.ready() {
				notReady = append(notReady, r.Metadata.Namespace+"/"+r.Metadata.Name+": "+r.readyMessage())
			}
		}
		if len(notReady) > 0 {
			return fmt.Sprintf("%d of %d releases are not Ready, such as %s", len(notReady), fleetSize, strings.Join(notReady[:min(3, len(notReady))], "; "))
		}
		return ""
	})
	t.Logf("all %d releases Ready %s after kubectl apply (3 shards, %d Deployments, %d ConfigMaps)",
		fleetSize, time.Since(start).Round(time.Millisecond), (fleetSize+deploymentEvery-1)/deploymentEvery, fleetSize)
	for k := range fleetNamespaces {
		if out, err := kubectl("-n", f.ns(k), "wait", "--for=condition=Ready", "receiver/git", "--timeout=1m"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
}

func (f *fleet) deploymentPath(i int) string {
	return fmt.Sprintf("apps/%s/deployment.yaml", f.name(i))
}

// deployment is release i's Deployment: one replica (kwok's), its container named web.
func (f *fleet) deployment(i int, digest string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      containers: [{name: web, image: "ghcr.io/acme/web@%[2]s"}]
`, f.deploymentOf(i), digest)
}

// checkOneShardEach: every release has reconcile series on its own shard's leader and on no
// other replica, and every object it applied carries its shard's label.
func (f *fleet) checkOneShardEach() {
	t := f.t
	for s, set := range f.shards {
		want := map[string]bool{}
		for i := range fleetSize {
			if f.shardOf(i) == s {
				want[f.ns(i)+"/"+f.name(i)] = true
			}
		}
		leader := f.leader(s)
		for _, o := range set.replicas {
			got := scrapeOf(t, o).reconciled(f.prefix)
			switch {
			case o == leader:
				if d := diffKeys(want, got); d != "" {
					t.Errorf("%s's leader: the releases it reconciled are not its shard's: %s", set.key, d)
				}
			case len(got) > 0:
				t.Errorf("%s's standby reconciled %d releases, such as %s", set.key, len(got), firstKey(got))
			}
		}
		t.Logf("%s: its leader has reconcile series for its %d releases, its standby none", set.key, len(want))
	}
	objects := f.objects("")
	if n := fleetSize + (fleetSize+deploymentEvery-1)/deploymentEvery; len(objects) != n {
		t.Errorf("%d applied objects, want %d", len(objects), n)
	}
	for _, o := range objects {
		i, _ := strconv.Atoi(strings.TrimPrefix(o.Metadata.Labels["release.immutable.dev/name"], "r"))
		if want := f.shards[f.shardOf(i)].key; o.Metadata.Labels[shardKey] != want {
			t.Errorf("%s %s/%s carries %s=%q, its release is in %s", o.Kind, o.Metadata.Namespace, o.Metadata.Name, shardKey, o.Metadata.Labels[shardKey], want)
		}
	}
}

// checkPreventPolicy: the one release in drift mode Prevent is shard1's. The policy is
// there, and stays the same object while time passes and releases of the other shards
// reconcile; its Deployment's image cannot be changed with kubectl.
func (f *fleet) checkPreventPolicy(i int) {
	t := f.t
	uid := policyUID
	first := uid()
	f.policy = first
	if first == "" {
		t.Fatalf("no policy %s with release %s/%s in drift mode Prevent", admission.PolicyName, f.ns(i), f.name(i))
	}
	time.Sleep(5 * time.Second)
	if u := uid(); u != first {
		t.Errorf("the policy changed (uid %s, then %q) within 5s", first, u)
	}
	for _, s := range []int{1, 2} {
		j := f.deployed(s, 1)
		if out, err := kubectlRelease("-n", f.ns(j), "reconcile", f.name(j), "--timeout", "1m"); err != nil {
			t.Fatalf("reconciling %s's release %s: %v: %s", f.shards[s].key, f.name(j), err, out)
		}
	}
	time.Sleep(2 * time.Second)
	if u := uid(); u != first {
		t.Errorf("the policy changed (uid %s, then %q) after releases of shard2 and shard3 reconciled", first, u)
	}
	out, err := kubectl("-n", f.ns(i), "set", "image", "deployment/"+f.deploymentOf(i), "web=ghcr.io/acme/web@"+digestV2)
	if err == nil {
		t.Errorf("kubectl set image on the Prevent release's Deployment was accepted: %s", out)
	} else if !strings.Contains(out, admission.PolicyName) {
		t.Errorf("kubectl set image was refused, but not by the policy: %s", out)
	} else {
		t.Logf("kubectl set image refused: %s", strings.TrimSpace(out))
	}
}

// policyUID is the uid of the Prevent policy, "" when there is none.
func policyUID() string {
	out, _ := kubectl("get", "validatingadmissionpolicy", admission.PolicyName, "--ignore-not-found", "-o", "jsonpath={.metadata.uid}")
	return out
}

// pushAndTime pushes a new digest to release i's path, delivers the webhook to replica o,
// and returns once the release's Deployment runs it.
func (f *fleet) pushAndTime(i int, o *operator, to string) {
	t := f.t
	must(t, f.repo.Write(map[string]string{f.deploymentPath(i): f.deployment(i, digestV2)}))
	if _, err := f.repo.CommitAndPush("Release web 2.0 of " + f.name(i)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, err := deliverPush(o.webhookURL+receiver.WebhookPath([]byte(webhookSecret), "git", f.ns(i)), f.url)
	if err != nil || code != http.StatusAccepted {
		t.Fatalf("the push to %s answered %d: %v", to, code, err)
	}
	waitFor(t, time.Minute, func() string {
		out, _ := kubectl("-n", f.ns(i), "get", "deployment", f.deploymentOf(i), "-o", "jsonpath={.spec.template.spec.containers[0].image}")
		if !strings.HasSuffix(out, digestV2) {
			return fmt.Sprintf("%s/%s still runs %s", f.ns(i), f.deploymentOf(i), out)
		}
		return ""
	})
	t.Logf("a push for %s's release %s delivered to %s: applied %s after the webhook call (interval 1h)",
		f.shards[f.shardOf(i)].key, f.name(i), to, time.Since(start).Round(time.Millisecond))
	if out, err := kubectl("-n", f.ns(i), "wait", "--for=condition=Ready", "immutablerelease/"+f.name(i), "--timeout=2m"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

// failOver kills shard s's leader with SIGKILL: its standby takes the lease within the
// lease duration, reconciles every release of the shard, and applies nothing again. The
// killed replica is started again, as a kubelet would, and stands by.
func (f *fleet) failOver(s int) {
	t := f.t
	set := f.shards[s]
	before := f.settledVersions(set.key)
	leader, standby := f.leader(s), f.standby(s)
	holder := leaseHolderOf(set.lease)
	leader.kill()
	killed := time.Now()
	// client-go counts the lease's 15s from when the standby last saw it renewed, and the
	// standby looks every 2s with a jitter of up to 1.2 times that: the takeover comes
	// within about 24s of the kill, not 15.
	waitFor(t, 30*time.Second, func() string {
		if h := leaseHolderOf(set.lease); h == holder {
			return "the lease " + set.lease + " still names the killed leader " + h
		}
		if l, err := f.leaderOf(s); err != nil || l != standby {
			return fmt.Sprintf("the standby does not lead %s: %v", set.key, err)
		}
		return ""
	})
	seen := time.Since(killed)
	acquired, err := time.Parse(time.RFC3339Nano, leaseField(set.lease, "acquireTime"))
	must(t, err)
	t.Logf("%s: the standby took the lease %s after its leader was killed (its acquireTime; seen here after %s); lease duration 15s, retry period 2s",
		set.key, acquired.Sub(killed).Round(time.Millisecond), seen.Round(time.Millisecond))

	// Every release of the shard reconciled by the new leader, up to the branch's head.
	head, err := f.repo.Head()
	must(t, err)
	waitFor(t, 5*time.Minute, func() string {
		got := scrapeOf(t, standby).reconciled(f.prefix)
		n := 0
		for _, r := range f.releases() {
			if r.Metadata.Labels[shardKey] != set.key {
				continue
			}
			n++
			if !got[r.Metadata.Namespace+"/"+r.Metadata.Name] {
				return fmt.Sprintf("the new leader has reconciled %d releases; not yet %s", len(got), r.Metadata.Name)
			}
			if !strings.HasSuffix(r.Status.LastAttemptedRevision, head) || !r.ready() {
				return fmt.Sprintf("%s attempted %s, Ready: %s", r.Metadata.Name, r.Status.LastAttemptedRevision, r.readyMessage())
			}
		}
		if n == 0 {
			return "no release in " + set.key
		}
		return ""
	})
	t.Logf("%s: the new leader reconciled all its releases at %s %s after the kill", set.key, head[:8], time.Since(killed).Round(time.Millisecond))
	after := f.versions(set.key)
	changed := 0
	for id, rv := range before {
		if after[id] != rv {
			changed++
			t.Errorf("%s was written by the failover: resourceVersion %s, now %q", id, rv, after[id])
		}
	}
	t.Logf("%s: %d of its %d applied objects unchanged after the failover", set.key, len(before)-changed, len(before))

	must(t, leader.start())
	time.Sleep(2 * time.Second)
	if l, err := f.leaderOf(s); err != nil || l != standby {
		t.Fatalf("the restarted replica took %s's lease: %v", set.key, err)
	}
}

// relabel moves release i from shard `from` to shard `to` with kubectl label: the new shard
// applies it (its objects carry the new label, quietly, without a DriftCorrected event) and
// the old one forgets it (its series leave the old leader's metrics).
func (f *fleet) relabel(i, from, to int) {
	t := f.t
	ns, name, key := f.ns(i), f.name(i), f.shards[to].key
	corrections := func() string {
		out, _ := kubectl("-n", ns, "get", "immutablerelease", name, "-o", "jsonpath={.status.driftCorrections}")
		return out
	}
	before := corrections()
	start := time.Now()
	if out, err := kubectl("-n", ns, "label", "--overwrite", "immutablerelease", name, shardKey+"="+key); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	waitFor(t, time.Minute, func() string {
		for _, o := range f.objects(name) {
			if o.Metadata.Labels[shardKey] != key {
				return fmt.Sprintf("%s %s carries %s=%s", o.Kind, o.Metadata.Name, shardKey, o.Metadata.Labels[shardKey])
			}
		}
		if !scrapeOf(t, f.leader(to)).reconciled(f.prefix)[ns+"/"+name] {
			return f.shards[to].key + "'s leader has not reconciled " + name
		}
		return ""
	})
	t.Logf("release %s moved from %s to %s: its objects relabelled %s after kubectl label", name, f.shards[from].key, key, time.Since(start).Round(time.Millisecond))
	waitFor(t, 30*time.Second, func() string {
		if scrapeOf(t, f.leader(from)).reconciled(f.prefix)[ns+"/"+name] {
			return f.shards[from].key + "'s leader still has series of " + name
		}
		return ""
	})
	if out, err := kubectl("-n", ns, "wait", "--for=condition=Ready", "immutablerelease/"+name, "--timeout=1m"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if after := corrections(); after != before {
		t.Errorf("moving %s counted drift corrections: %q, then %q", name, before, after)
	}
	events, err := kubectl("-n", ns, "get", "events", "--field-selector", "involvedObject.kind=ImmutableRelease,involvedObject.name="+name,
		"-o", `jsonpath={range .items[*]}{.reason}{" "}{end}`)
	if err != nil {
		t.Fatalf("%v: %s", err, events)
	}
	if strings.Contains(events, "DriftCorrected") {
		t.Errorf("moving %s emitted DriftCorrected events; its events: %s", name, events)
	}
	t.Logf("the events of %s: %s", name, events)
}

// cleanUp deletes the releases while their shards still run (they remove the finalizers),
// then the namespaces, stops the six replicas and starts the stories' operator again.
func (f *fleet) cleanUp() {
	t := f.t
	if out, err := kubectl("delete", "immutablerelease", "-A", "-l", fleetLabel+"=shards", "--timeout=5m"); err != nil {
		t.Errorf("deleting the fleet: %v: %s", err, out)
	}
	if out, err := kubectl("delete", "namespace", "-l", fleetLabel+"=shards", "--wait=false"); err != nil {
		t.Errorf("deleting the namespaces: %v: %s", err, out)
	}
	for _, set := range f.shards {
		for _, o := range set.replicas {
			o.stop()
		}
		_, _ = kubectl("-n", "immutable-release-system", "delete", "lease", set.lease, "--ignore-not-found")
	}
	// The whole fleet's lease still names the operator killed at the start, certainly dead:
	// free it, or the new process waits a lease duration (see specKilledInALoop).
	_, _ = kubectl("-n", "immutable-release-system", "delete", "lease", leaseName, "--ignore-not-found")
	if err := env.operator.start(); err != nil {
		t.Errorf("starting the stories' operator again: %v", err)
	}
}
