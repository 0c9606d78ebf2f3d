package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/attest"
	"github.com/immutable-release/operator/internal/git"
)

// auditRecord is one deployment record of the release found in Git, and whether its
// signature verifies: the JSON form of `audit -o json`, one per record.
type auditRecord struct {
	Commit   string `json:"commit"`
	Verified bool   `json:"verified"`
	// KeyID is the key it verified with; Error why it verifies with none.
	KeyID string `json:"keyID,omitempty"`
	Error string `json:"error,omitempty"`
	// Statement is what the record says: to be believed only when Verified.
	Statement *attest.Statement `json:"statement,omitempty"`
}

// auditResult is the JSON form of `audit -o json`.
type auditResult struct {
	Release  string        `json:"release"`
	NotesRef string        `json:"notesRef"`
	Records  []auditRecord `json:"records"`
	// Unrecorded are revisions the release's history says became healthy but that no
	// verified record names.
	Unrecorded []string `json:"unrecorded,omitempty"`
	// Unreadable counts the lines of notes that are not deployment records at all.
	Unreadable int `json:"unreadable,omitempty"`
}

func (o *options) auditCommand() *cobra.Command {
	var output, since, keySecret string
	var keyFiles []string
	cmd := &cobra.Command{
		Use:   "audit NAME",
		Short: "What ran, from which commit, built by whom, from when to when: the signed records in Git",
		Long: "audit reads the deployment records the operator wrote for the release (spec.attest) as Git\n" +
			"notes on the applied commits, with the credentials of the release's Git secret, and\n" +
			"verifies the signature of every one with the operator's public key: given with\n" +
			"--public-key (a PEM file; repeat it for keys rotated out), or read from the operator's\n" +
			"key Secret with --key-secret NAMESPACE/NAME (its public.pem, else the public half of\n" +
			"private.pem). A record that does not verify is shown as FAILED and the command exits 1.\n\n" +
			"--since shows only what ran at some time since then: a duration (24h, 7d) or a time\n" +
			"(2026-01-31, or RFC 3339).",
		Args: exactlyOne,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if output != "table" && output != "json" {
				return usageError{fmt.Errorf("unknown output %q: use table or json", output)}
			}
			from, err := parseSince(since, time.Now())
			if err != nil {
				return usageError{err}
			}
			if len(keyFiles) == 0 && keySecret == "" {
				return usageError{errors.New("give the operator's public key with --public-key FILE, or its key Secret with --key-secret NAMESPACE/NAME")}
			}
			c, rel, err := o.getRelease(ctx, args[0])
			if err != nil {
				return err
			}
			keys, err := auditKeys(ctx, c, keyFiles, keySecret)
			if err != nil {
				return err
			}
			res, err := audit(ctx, c, rel, keys, from)
			if err != nil {
				return err
			}
			if output == "json" {
				b, err := json.MarshalIndent(res, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(o.out, string(b))
			} else if err := o.printAudit(res); err != nil {
				return err
			}
			for _, r := range res.Records {
				if !r.Verified {
					return &exitError{code: ExitFailed, quiet: output == "table", err: errors.New("some records do not verify with the key")}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "Output format: table or json.")
	cmd.Flags().StringVar(&since, "since", "", "Only what ran at some time since: a duration (24h, 7d) or a time (2026-01-31, RFC 3339).")
	cmd.Flags().StringArrayVar(&keyFiles, "public-key", nil, "A PEM file with the operator's public key; repeat it for keys rotated out.")
	cmd.Flags().StringVar(&keySecret, "key-secret", "", "The operator's attestation key Secret, NAMESPACE/NAME, to read the public key from (needs get on it).")
	return cmd
}

// parseSince reads --since: empty for everything, a duration before now (with d for days),
// or a date or RFC 3339 time.
func parseSince(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if days, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q is neither a duration (24h, 7d) nor a time (2026-01-31, RFC 3339)", v)
}

// auditKeys reads the public keys to verify with.
func auditKeys(ctx context.Context, c client.Client, files []string, secretName string) ([]*attest.PublicKey, error) {
	var keys []*attest.PublicKey
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		k, err := attest.ParsePublicKey(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		keys = append(keys, k)
	}
	if secretName != "" {
		ns, name, ok := strings.Cut(secretName, "/")
		if !ok || ns == "" || name == "" {
			return nil, usageError{fmt.Errorf("--key-secret %q is not NAMESPACE/NAME", secretName)}
		}
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, secret); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("no Secret %q in namespace %q", name, ns)
			}
			return nil, fmt.Errorf("reading the key Secret %s (your kubeconfig needs get on it): %w", secretName, err)
		}
		k, err := attest.PublicKeyFromSecret(secret.Data)
		if err != nil {
			return nil, fmt.Errorf("the key Secret %s: %w", secretName, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// audit reads every note under the release's notes reference and keeps the records that
// name the release, verified with keys, newest first; from drops what ended before it.
func audit(ctx context.Context, c client.Client, rel *v1alpha1.ImmutableRelease, keys []*attest.PublicKey, from time.Time) (*auditResult, error) {
	auth, err := releaseGitAuth(ctx, c, rel)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "kubectl-release-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	cache := git.NewCache(tmp)
	cache.AllowFileURLs = true
	res := &auditResult{Release: rel.Namespace + "/" + rel.Name, NotesRef: rel.GetNotesRef(), Records: []auditRecord{}}
	err = cache.EachNote(ctx, rel.Spec.Git.URL, auth, rel.GetNotesRef(), func(commit string, note []byte, err error) error {
		if err != nil {
			res.Records = append(res.Records, auditRecord{Commit: commit, Error: err.Error()})
			return nil
		}
		entries, err := attest.Verify(note, keys...)
		if err != nil {
			res.Records = append(res.Records, auditRecord{Commit: commit, Error: err.Error()})
			return nil
		}
		for _, e := range entries {
			st := e.Statement
			if st == nil {
				res.Unreadable++
				continue
			}
			d := st.Predicate
			if d.Release.Namespace != rel.Namespace || d.Release.Name != rel.Name {
				continue
			}
			r := auditRecord{Commit: commit, Statement: st, Verified: e.Err == nil, KeyID: e.KeyID}
			if e.Err != nil {
				r.Error = e.Err.Error()
			} else if d.Source.Commit != commit {
				// A record moved onto another commit than the one it names.
				r.Verified, r.KeyID, r.Error = false, "", fmt.Sprintf("signed for commit %s, found on %s", d.Source.Commit, commit)
			}
			if r.Verified && !from.IsZero() && d.ReplacedAt != nil && d.ReplacedAt.Before(from) {
				continue
			}
			res.Records = append(res.Records, r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(res.Records, func(i, j int) bool { return appliedAt(res.Records[i]).After(appliedAt(res.Records[j])) })
	res.Unrecorded = unrecorded(rel, res.Records, from)
	return res, nil
}

func appliedAt(r auditRecord) time.Time {
	if r.Statement == nil {
		return time.Time{}
	}
	return r.Statement.Predicate.AppliedAt
}

// unrecorded lists the revisions of the release's history that became healthy (since
// from) but that no verified record names.
func unrecorded(rel *v1alpha1.ImmutableRelease, records []auditRecord, from time.Time) []string {
	if rel.Spec.Attest == nil {
		return nil
	}
	seen := map[string]bool{}
	for _, r := range records {
		if r.Verified {
			seen[r.Statement.Predicate.Source.Revision+"\x00"+r.Statement.Predicate.AppliedAt.UTC().Format(time.RFC3339)] = true
		}
	}
	var out []string
	for i, h := range rel.Status.History {
		healthy := h.Result == v1alpha1.ReleaseHealthy || h.Attestation != nil && h.Attestation.State != ""
		if !healthy || (!from.IsZero() && i > 0 && rel.Status.History[i-1].AppliedAt.Time.Before(from)) {
			continue
		}
		if !seen[h.Revision+"\x00"+h.AppliedAt.UTC().Format(time.RFC3339)] {
			out = append(out, h.Revision)
		}
	}
	return out
}

func (o *options) printAudit(res *auditResult) error {
	w := tabwriter.NewWriter(o.out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "APPLIED\tHEALTHY\tUNTIL\tCOMMIT\tCLUSTER\tAUTHOR\tBUILT BY\tSIGNATURE")
	for _, r := range res.Records {
		if r.Statement == nil {
			fmt.Fprintf(w, "-\t-\t-\t%s\t-\t-\t-\t%s\n", shortHash(r.Commit), o.paint(red, "FAILED: "+r.Error))
			continue
		}
		d := r.Statement.Predicate
		sig := o.paint(green, "verified "+r.KeyID)
		if !r.Verified {
			sig = o.paint(red, "FAILED: "+r.Error)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", stamp(d.AppliedAt), stamp(d.HealthyAt), until(d), shortHash(d.Source.Commit),
			d.Cluster, orDefault(d.Source.Author, "-"), builtBy(d), sig)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, r := range res.Unrecorded {
		fmt.Fprintf(o.out, "not recorded: %s became healthy, but no verified record names it\n", r)
	}
	if res.Unreadable > 0 {
		fmt.Fprintf(o.out, "%d lines of notes under %s are not deployment records (not shown)\n", res.Unreadable, res.NotesRef)
	}
	if len(res.Records) == 0 {
		fmt.Fprintf(o.out, "no deployment records of %s under %s\n", res.Release, res.NotesRef)
	}
	return nil
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// until says when the deployment ended: replaced, rolled back, or running still.
func until(d attest.Deployment) string {
	switch {
	case d.RolledBackAt != nil:
		return stamp(*d.RolledBackAt) + " (rolled back)"
	case d.ReplacedAt != nil:
		return stamp(*d.ReplacedAt)
	}
	return "running"
}

// builtBy names the verified signers of the deployment's images.
func builtBy(d attest.Deployment) string {
	seen := map[string]bool{}
	var out []string
	for _, im := range d.Images {
		s := im.Signer
		if s == nil {
			continue
		}
		who := s.Subject
		if who == "" {
			who = s.KeyFingerprint
		}
		if who != "" && !seen[who] {
			seen[who] = true
			out = append(out, who)
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ", ")
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
