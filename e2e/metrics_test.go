//go:build e2e

package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// specMetricsNeedCredentials: a replica started as config/manager starts it (metrics
// secure, the default) serves /metrics over HTTPS only to a caller the API server
// authenticates and authorizes: nothing without a token, 403 for an account without the
// metrics-reader role, the metrics for one bound to it.
func specMetricsNeedCredentials(t *testing.T) {
	ns := fmt.Sprintf("e2e-metrics-%d", seq.Add(1))
	for _, args := range [][]string{
		{"create", "namespace", ns},
		{"-n", ns, "create", "serviceaccount", "prometheus"},
		{"-n", ns, "create", "serviceaccount", "nosy"},
		{"create", "clusterrolebinding", ns + "-prometheus", "--clusterrole=immutable-release-metrics-reader", "--serviceaccount=" + ns + ":prometheus"},
	} {
		if out, err := kubectl(args...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	t.Cleanup(func() { _, _ = kubectl("delete", "clusterrolebinding", ns+"-prometheus") })
	// A standby: it serves metrics while it waits for the lease. The later flag wins.
	standby, err := startOperator("--metrics-secure=true")
	if err != nil {
		t.Fatal(err)
	}
	defer standby.stop()

	get := func(scheme, token string) (int, string) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		req, err := http.NewRequest(http.MethodGet, scheme+"://"+standby.metrics+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(body)
	}
	token := func(sa string) string {
		out, err := kubectl("-n", ns, "create", "token", sa, "--duration=10m")
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return strings.TrimSpace(out)
	}
	// The secure server makes its certificate as it starts: wait for its first answer.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		code, body := get("https", "")
		if code != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the metrics endpoint never answered over HTTPS: %s", body)
		}
	}
	if code, body := get("http", ""); code == http.StatusOK {
		t.Errorf("plain HTTP served the metrics: %.200s", body)
	}
	if code, _ := get("https", ""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	if code, _ := get("https", token("nosy")); code != http.StatusForbidden {
		t.Errorf("an account without metrics-reader: %d, want 403", code)
	}
	code, body := get("https", token("prometheus"))
	if code != http.StatusOK || !strings.Contains(body, "controller_runtime_") {
		t.Errorf("the metrics-reader account: %d: %.200s", code, body)
	}
}

func TestMetricsNeedCredentials(t *testing.T) { specMetricsNeedCredentials(t) }
