//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	eventv1 "github.com/fluxcd/pkg/apis/event/v1"
)

// eventSink is what a Flux notification-controller's event server would be: it decodes each
// payload strictly into Flux's event type.
type eventSink struct {
	*httptest.Server
	mu     sync.Mutex
	events []eventv1.Event
	bad    []string
}

func newEventSink() *eventSink {
	s := &eventSink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		var e eventv1.Event
		err := dec.Decode(&e)
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			s.bad = append(s.bad, err.Error())
		} else {
			s.events = append(s.events, e)
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	return s
}

// find says "" when an event of reason about the release of namespace names revision with
// severity, and what it has otherwise.
func (s *eventSink) find(namespace, reason, severity, revision string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.bad) > 0 {
		return "payloads that are not Flux's event: " + strings.Join(s.bad, "; ")
	}
	var seen []string
	for _, e := range s.events {
		if e.InvolvedObject.Namespace != namespace || e.InvolvedObject.Kind != "ImmutableRelease" {
			continue
		}
		rev := e.Metadata["release.immutable.dev/"+eventv1.MetaRevisionKey]
		if e.Reason == reason && e.Severity == severity && rev == revision && e.ReportingController == "immutable-release-controller" {
			return ""
		}
		seen = append(seen, e.Reason+"/"+e.Severity+"@"+rev)
	}
	return fmt.Sprintf("no %s %s event for %s; got %v", severity, reason, revision, seen)
}

// specNotifications: a team that hears of every release in its chat (through Flux's
// notification-controller, here its event server's stand-in) and sees each rollout on its
// commits in Gitea. A good release is announced and gets pending then success; a broken one
// is announced as an error, gets failure linking its revert, and is reverted.
func specNotifications(t *testing.T) {
	gt := gitea(t)
	ctx := context.Background()
	s, name := giteaStory(t, gt)
	full := gt.User + "/" + name
	s.release("5s", gt.User, gt.Password, "commitStatus: {provider: gitea, secretRef: {name: forge-token}}")
	s.kubectl("-n", s.ns, "create", "secret", "generic", "forge-token", "--from-literal=token="+gt.Token)
	s.kubectl("-n", s.ns, "wait", "--for=condition=Ready", "immutablerelease/shop", "--timeout=2m")

	statuses := func(sha string) (states []string, last map[string]any) {
		var out []map[string]any
		if err := gt.API(ctx, http.MethodGet, "/repos/"+full+"/commits/"+sha+"/statuses?sort=oldest", nil, &out); err != nil {
			return []string{err.Error()}, nil
		}
		for _, st := range out {
			states = append(states, fmt.Sprint(st["status"]))
			last = st
		}
		return states, last
	}
	want := func(sha string, states ...string) func() string {
		return func() string {
			got, _ := statuses(sha)
			if fmt.Sprint(got) != fmt.Sprint(states) {
				return fmt.Sprintf("commit %s has statuses %v, want %v", sha[:7], got, states)
			}
			return ""
		}
	}
	first := "main@sha1:" + s.first
	s.eventually(30*time.Second, func() string { return env.events.find(s.ns, "Applied", eventv1.EventSeverityInfo, first) })
	s.eventually(30*time.Second, func() string { return env.events.find(s.ns, "Succeeded", eventv1.EventSeverityInfo, first) })
	// The token's Secret came a moment after the release: a post that found none is tried
	// again a minute later, whatever the interval (an hour); pending may be missed.
	s.eventually(90*time.Second, func() string {
		got, _ := statuses(s.first)
		if len(got) == 0 || got[len(got)-1] != "success" || strings.Count(fmt.Sprint(got), "success") != 1 {
			return fmt.Sprintf("commit %s has statuses %v, want one success, last", s.first[:7], got)
		}
		return ""
	})

	bad := s.push("Release a broken build", map[string]string{"deploy/prod/deployment.yaml": deployment("ghcr.io/acme/web@" + dead)})
	s.kubectl("-n", s.ns, "annotate", "--overwrite", "immutablerelease/shop", "reconcile.fluxcd.io/requestedAt="+time.Now().Format(time.RFC3339Nano))
	s.eventually(time.Minute, func() string {
		if r := s.condition("RolledBack", "reason"); r != "RevertPushed" {
			return "RolledBack reason is " + r
		}
		return ""
	})
	s.eventually(30*time.Second, func() string {
		return env.events.find(s.ns, "HealthCheckFailed", eventv1.EventSeverityError, "main@sha1:"+bad)
	})
	s.eventually(30*time.Second, func() string {
		return env.events.find(s.ns, "RolledBack", eventv1.EventSeverityError, "main@sha1:"+bad)
	})
	s.eventually(30*time.Second, want(bad, "pending", "failure"))
	revert := strings.TrimSpace(s.kubectl("-n", s.ns, "get", "immutablerelease", "shop", "-o", "jsonpath={.status.lastRollback.revertCommit}"))
	if _, last := statuses(bad); last["target_url"] != gt.URL+"/"+full+"/commit/"+revert {
		t.Fatalf("the failure links %v, not the revert commit %s", last["target_url"], revert)
	}
	s.eventually(time.Minute, want(revert, "pending", "success"))
}

func TestNotifications(t *testing.T) { specNotifications(t) }
