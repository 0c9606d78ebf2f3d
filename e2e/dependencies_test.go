//go:build e2e

package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// gadgetCRD is the CustomResourceDefinition the platform's release installs, and gadget a
// custom resource of it in the app's release.
const gadgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.e2e.example.com}
spec:
  group: e2e.example.com
  names: {kind: Gadget, plural: gadgets, singular: gadget, listKind: GadgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`

const gadget = "apiVersion: e2e.example.com/v1\nkind: Gadget\nmetadata: {name: blue}\nspec: {color: blue}\n"

// specCRDsFirst: a platform team's release installs a CRD (acting as a ServiceAccount bound
// to cluster-admin); the app's release uses a custom resource of it and depends on the
// platform's. The app, applied first, waits and says for what; once the platform's release
// is Ready the app applies the pushed revision, its custom resource with it.
func specCRDsFirst(t *testing.T) {
	s := createStory(t, "1m", "dependsOn: [{name: platform}]")
	s.eventually(time.Minute, func() string {
		if r := s.condition("Ready", "reason"); r != "DependencyNotReady" {
			return "the app's release is " + r + ", not waiting for its dependency"
		}
		return ""
	})
	t.Logf("the app waits: %s", s.condition("Ready", "message"))

	s.push("The platform: the Gadget CRD; the app: a Gadget", map[string]string{
		"deploy/platform/crd.yaml": gadgetCRD,
		"deploy/prod/gadget.yaml":  gadget,
	})
	if code := s.webhook(); code != http.StatusAccepted {
		t.Fatalf("the push's webhook answered %d", code)
	}
	s.kubectl("-n", s.ns, "create", "serviceaccount", "platform")
	s.kubectl("create", "clusterrolebinding", s.ns+"-platform", "--clusterrole=cluster-admin", "--serviceaccount="+s.ns+":platform")
	t.Cleanup(func() { _, _ = kubectl("delete", "clusterrolebinding", s.ns+"-platform", "--ignore-not-found") })
	start := time.Now()
	s.apply(s.releaseYAML("platform", "./deploy/platform", "serviceAccountName: platform"))

	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/platform", "--timeout=1m")
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=1m")
	t.Logf("the platform and then the app Ready %s after the platform's release was applied", time.Since(start).Round(time.Millisecond))
	if out := s.kubectl("-n", s.ns, "get", "gadgets.e2e.example.com", "blue", "-o", "jsonpath={.spec.color}"); out != "blue" {
		t.Fatalf("the app's Gadget: %q", out)
	}
	s.kubectl("-n", s.ns, "wait", "--for=condition=Available", "deployment/web", "--timeout=1m")
	// The app goes first: the platform's prune would take the CRD, and the Gadget with it.
	s.kubectl("-n", s.ns, "delete", "immutablerelease", "shop", "--wait=true", "--timeout=1m")
	s.kubectl("-n", s.ns, "delete", "immutablerelease", "platform", "--wait=true", "--timeout=1m")
	if out, _ := kubectl("get", "crd", "gadgets.e2e.example.com", "--ignore-not-found"); strings.TrimSpace(out) != "" {
		t.Errorf("the platform's release, deleted, left its CRD: %s", out)
	}
}

func TestCRDsFirst(t *testing.T) { specCRDsFirst(t) }

// specDependencyCycle: two releases that depend on each other, applied with kubectl, are
// refused, each naming the cycle, and neither applies anything; removing one dependency
// lets both go on, in order.
func specDependencyCycle(t *testing.T) {
	s := createStory(t, "1m", "dependsOn: [{name: other}]")
	s.push("Settings of the other release", map[string]string{
		"deploy/other/settings.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {greeting: hello}\n",
	})
	s.webhook()
	s.apply(s.releaseYAML("other", "./deploy/other", "dependsOn: [{name: shop}]"))
	for _, name := range []string{"shop", "other"} {
		s.kubectl("-n", s.ns, "wait", "--for=condition=Stalled", "immutablerelease/"+name, "--timeout=1m")
		reason := s.kubectl("-n", s.ns, "get", "immutablerelease", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].reason}`)
		msg := s.kubectl("-n", s.ns, "get", "immutablerelease", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].message}`)
		if reason != "DependencyCycle" || !strings.Contains(msg, "shop") || !strings.Contains(msg, "other") {
			t.Fatalf("%s: Ready %s: %s", name, reason, msg)
		}
		t.Logf("%s refused: %s", name, msg)
	}
	for _, o := range []string{"deployment/web", "configmap/settings"} {
		if out, _ := kubectl("-n", s.ns, "get", o, "--ignore-not-found"); strings.TrimSpace(out) != "" {
			t.Fatalf("a release of the cycle applied %s: %s", o, out)
		}
	}
	// other no longer waits for shop: other applies first, then shop.
	s.kubectl("-n", s.ns, "patch", "immutablerelease", "other", "--type=json", "-p", `[{"op":"remove","path":"/spec/dependsOn"}]`)
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/other", "--timeout=1m")
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=1m")
}

func TestDependencyCycle(t *testing.T) { specDependencyCycle(t) }
