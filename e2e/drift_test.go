//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/immutable-release/operator/internal/admission"
)

// setImage changes the Deployment's image as a person would, with kubectl set image.
func (s *story) setImage(image string) (string, error) {
	return kubectl("-n", s.ns, "set", "image", "deployment/web", "web="+image)
}

// specDriftCorrected: in Correct mode (the default) an image changed with kubectl set image
// is put back from Git, without a push and long before the release's interval.
func specDriftCorrected(t *testing.T) {
	s := newStory(t, "1m")
	if _, err := s.setImage("ghcr.io/acme/web@" + digestV2); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.eventually(30*time.Second, func() string {
		if img := s.image(); img != "ghcr.io/acme/web@"+digestV1 {
			return "the Deployment still runs " + img
		}
		return ""
	})
	t.Logf("drift corrected %s after kubectl set image", time.Since(start).Round(time.Millisecond))
	s.eventually(10*time.Second, func() string {
		if n, _ := kubectl("-n", s.ns, "get", "immutablerelease", "shop", "-o", "jsonpath={.status.driftCorrections}"); n == "" || n == "0" {
			return "status.driftCorrections is not counted: " + n
		}
		return ""
	})
}

// specDriftReported: in Report mode the change stays, and the release says Drifted=True
// ImageDrift with the image it saw.
func specDriftReported(t *testing.T) {
	s := newStory(t, "1m", "drift: {mode: Report}")
	changed := "ghcr.io/acme/web@" + digestV2
	if _, err := s.setImage(changed); err != nil {
		t.Fatal(err)
	}
	s.eventually(30*time.Second, func() string {
		if st, r := s.condition("Drifted", "status"), s.condition("Drifted", "reason"); st != "True" || r != "ImageDrift" {
			return "Drifted is " + st + " " + r
		}
		return ""
	})
	if msg := s.condition("Drifted", "message"); !strings.Contains(msg, "web") {
		t.Errorf("the Drifted message does not name the workload: %q", msg)
	}
	// A reconcile asked for now still leaves the change alone. Once the pods run the changed
	// digest the release is not Ready either: DigestMismatch names both digests.
	out, err := kubectlRelease("-n", s.ns, "reconcile", "shop", "--timeout", "1m")
	if err != nil && (!strings.Contains(out, "DigestMismatch") || !strings.Contains(out, digestV2)) {
		t.Fatalf("reconcile in Report mode: %v %s", err, out)
	}
	t.Logf("reconcile in Report mode: %s", strings.TrimSpace(out))
	if img := s.image(); img != changed {
		t.Fatalf("Report mode changed the image back to %s", img)
	}
	if st := s.condition("Drifted", "status"); st != "True" {
		t.Fatalf("Drifted is %q after a reconcile", st)
	}
	// Drift is not a failed rollout: nothing is reverted in Git.
	if head, _ := s.repo.Output("ls-remote", "origin", "refs/heads/main"); !strings.HasPrefix(head, s.first) {
		t.Fatalf("the branch moved in Report mode: %s", head)
	}
}

// specDriftPrevented: in Prevent mode the API server itself refuses kubectl set image, with
// a message that names the policy and says where to change the image.
func specDriftPrevented(t *testing.T) {
	s := newStory(t, "1m", "drift: {mode: Prevent}")
	var out string
	// The API server loads a new policy within a second or so; until then a change may go
	// through, and the release corrects it.
	s.eventually(30*time.Second, func() string {
		var err error
		if out, err = s.setImage("ghcr.io/acme/web@" + digestV2); err == nil {
			return "kubectl set image was accepted: " + out
		}
		return ""
	})
	for _, want := range []string{admission.PolicyName, "drift mode Prevent", "change them in Git"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal does not say %q: %s", want, out)
		}
	}
	s.eventually(30*time.Second, func() string {
		if img := s.image(); img != "ghcr.io/acme/web@"+digestV1 {
			return "the Deployment runs " + img
		}
		return ""
	})
	// The operator itself may still change the image: a push is applied.
	s.push("Release web 2.0", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + digestV2)})
	s.webhook()
	s.eventually(30*time.Second, func() string {
		if img := s.image(); img != "ghcr.io/acme/web@"+digestV2 {
			return "the pushed image is not applied: " + img
		}
		return ""
	})
}

func TestDriftCorrected(t *testing.T) { specDriftCorrected(t) }
func TestDriftReported(t *testing.T)  { specDriftReported(t) }
func TestDriftPrevented(t *testing.T) { specDriftPrevented(t) }
