package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/immutable-release/operator/api/v1alpha1"
	"github.com/immutable-release/operator/internal/admission"
	"github.com/immutable-release/operator/internal/apply"
	"github.com/immutable-release/operator/internal/drift"
	"github.com/immutable-release/operator/internal/git"
	"github.com/immutable-release/operator/internal/manifest"
)

// What applying would do to an object.
const (
	actionCreated    = "created"
	actionConfigured = "configured"
	actionUnchanged  = "unchanged"
	actionDeleted    = "deleted"
)

// objectChange is what applying a release's objects would do to one object.
type objectChange struct {
	Object string `json:"object"`
	Action string `json:"action"`
	// Fields are the paths that change, for configured objects.
	Fields []string `json:"fields,omitempty"`
	// Diff is a unified diff of the object's YAML, Secret values hidden (drift.Redact).
	Diff string `json:"diff,omitempty"`
}

// diffResult is the JSON form of `diff -o json`.
type diffResult struct {
	Release  string         `json:"release"`
	Revision string         `json:"revision"`
	Changed  bool           `json:"changed"`
	Objects  []objectChange `json:"objects"`
}

func (o *options) diffCommand() *cobra.Command {
	var output, ageKeyFile string
	cmd := &cobra.Command{
		Use:   "diff NAME",
		Short: "What applying Git's head would change in the cluster now (server-side dry run)",
		Long: "diff fetches the release's Git reference as the operator does (with the credentials of its\n" +
			"secretRef, read with your kubeconfig), builds and validates the manifests, and dry-runs a\n" +
			"server-side apply of every object as you (add --as to act as the release's service account);\n" +
			"a release of another cluster (spec.kubeConfig) is dry-run there, as its kubeconfig's user.\n" +
			"Exit code 0: nothing would change; 6: something would; other codes: see kubectl release --help.\n\n" +
			"SOPS-encrypted files are decrypted in memory with --age-key-file (or $SOPS_AGE_KEY_FILE, $SOPS_AGE_KEY);\n" +
			"the key Secret of spec.decryption is not read. Secret values are shown masked.",
		Args: exactlyOne,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return usageError{fmt.Errorf("unknown output %q: use text or json", output)}
			}
			dec, err := ageDecryptor(ageKeyFile)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			c, rel, err := o.getRelease(ctx, args[0])
			if err != nil {
				return err
			}
			dir, revision, cleanup, err := fetchHead(ctx, c, rel)
			if err != nil {
				return err
			}
			defer cleanup()
			objects, err := manifest.BuildDecrypted(dir, rel.Spec.Path, manifest.DefaultLimits, dec)
			var merr *manifest.Error
			if errors.As(err, &merr) {
				for _, p := range merr.Problems {
					fmt.Fprintln(o.out, p.String())
				}
				return &exitError{code: ExitFailed, err: fmt.Errorf("revision %s cannot be applied: %d problems (%s)", revision, len(merr.Problems), merr.Reason)}
			}
			if err != nil {
				return err
			}
			target, err := targetClient(ctx, c, rel)
			if err != nil {
				return err
			}
			changes, err := plan(ctx, target, rel, manifest.Unstructured(objects), revision)
			if err != nil {
				return err
			}
			res := diffResult{Release: rel.Namespace + "/" + rel.Name, Revision: revision, Changed: changed(changes), Objects: changes}
			if output == "json" {
				b, err := json.MarshalIndent(res, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(o.out, string(b))
			} else {
				o.printChanges(changes)
				fmt.Fprintf(o.out, "%s: %s\n", revision, summary(changes))
			}
			if res.Changed {
				return &exitError{code: ExitDiffers, err: fmt.Errorf("%s/%s differs from %s", rel.Namespace, rel.Name, revision), quiet: true}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "Output format: text or json.")
	addAgeKeyFlag(cmd, &ageKeyFile)
	return cmd
}

// fetchHead checks out the commit the release's reference points at now, with the
// operator's own Git code, into a temporary folder that cleanup removes.
func fetchHead(ctx context.Context, c client.Client, rel *v1alpha1.ImmutableRelease) (dir, revision string, cleanup func(), err error) {
	auth, err := releaseGitAuth(ctx, c, rel)
	if err != nil {
		return "", "", nil, err
	}
	tmp, err := os.MkdirTemp("", "kubectl-release-")
	if err != nil {
		return "", "", nil, err
	}
	removeTmp := func() { _ = os.RemoveAll(tmp) }
	cache := git.NewCache(tmp)
	// The plugin reads with its user's own rights on its user's own machine: a file:// URL
	// (a release of a manager run with --allow-file-urls) reads that user's disk.
	cache.AllowFileURLs = true
	ref := git.Reference{Branch: rel.Spec.Git.Ref.Branch, Tag: rel.Spec.Git.Ref.Tag, Commit: rel.Spec.Git.Ref.Commit}
	hash, err := cache.Resolve(ctx, rel.Spec.Git.URL, ref, auth, true)
	if err != nil {
		removeTmp()
		return "", "", nil, err
	}
	dir, _, release, err := cache.Checkout(ctx, rel.Spec.Git.URL, ref, hash, auth)
	if err != nil {
		removeTmp()
		return "", "", nil, err
	}
	return dir, git.Revision(ref, hash), func() { release(); removeTmp() }, nil
}

// releaseGitAuth reads the release's Git secret, as the operator does, with the user's
// own rights.
func releaseGitAuth(ctx context.Context, c client.Client, rel *v1alpha1.ImmutableRelease) (*git.Auth, error) {
	var data map[string][]byte
	if ref := rel.Spec.Git.SecretRef; ref != nil {
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: rel.Namespace, Name: ref.Name}, secret); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("the release's Git secret %q is not in namespace %q", ref.Name, rel.Namespace)
			}
			return nil, fmt.Errorf("reading the release's Git secret %q (your kubeconfig needs get on secrets in %s): %w", ref.Name, rel.Namespace, err)
		}
		data = secret.Data
	}
	return git.AuthFromSecret(rel.Spec.Git.URL, data)
}

// plan dry-runs a server-side apply of objects as the objects of rel (its namespaces, owner
// labels and prune inventory) and says what applying them would change. source names where
// the objects come from, for the diff headers.
func plan(ctx context.Context, c client.Client, rel *v1alpha1.ImmutableRelease, objects []*unstructured.Unstructured, source string) ([]objectChange, error) {
	applier := apply.NewApplier(c, client.ObjectKeyFromObject(rel))
	if err := applier.Prepare(objects, rel.Spec.TargetNamespace, rel.Namespace); err != nil {
		return nil, err
	}
	if rel.GetDriftMode() == v1alpha1.DriftPrevent {
		for _, obj := range objects {
			labels := obj.GetLabels()
			labels[admission.PreventLabel] = "true"
			obj.SetLabels(labels)
		}
	}
	changes := make([]objectChange, len(objects))
	// Objects in a namespace, or of a kind, that the release itself creates cannot be dry-run
	// before it exists: namespaces and CRDs go first, and such objects are shown as created
	// without the API server's defaults.
	newNamespaces, newKinds := map[string]bool{}, map[schema.GroupKind]bool{}
	for _, first := range []bool{true, false} {
		for i, obj := range objects {
			kind, isCRD := crdKind(obj)
			isNamespace := obj.GetKind() == "Namespace" && obj.GetAPIVersion() == "v1"
			if (isCRD || isNamespace) != first {
				continue
			}
			name := manifest.ObjectName(obj)
			if newNamespaces[obj.GetNamespace()] || newKinds[obj.GroupVersionKind().GroupKind()] {
				changes[i] = compare(name, nil, obj, source)
				continue
			}
			live, merged, err := applier.DryRun(ctx, obj)
			if err != nil {
				return nil, fmt.Errorf("dry-run apply of %s: %w", name, err)
			}
			if live == nil && isNamespace {
				newNamespaces[obj.GetName()] = true
			}
			if live == nil && isCRD {
				newKinds[kind] = true
			}
			changes[i] = compare(name, live, merged, source)
		}
	}
	if !rel.Spec.Prune {
		return changes, nil
	}
	stale, err := apply.Diff(rel.Status.Inventory, apply.Inventory(objects))
	if err != nil {
		return nil, err
	}
	owner := apply.OwnerLabels(client.ObjectKeyFromObject(rel))
	for _, obj := range stale {
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("reading %s: %w", manifest.ObjectName(obj), err)
		}
		labels := obj.GetLabels()
		if labels[apply.NameLabel] != owner[apply.NameLabel] || labels[apply.NamespaceLabel] != owner[apply.NamespaceLabel] {
			continue // taken over by someone else: prune leaves it alone
		}
		changes = append(changes, compare(manifest.ObjectName(obj), obj, nil, source))
	}
	return changes, nil
}

func crdKind(obj *unstructured.Unstructured) (schema.GroupKind, bool) {
	if obj.GetKind() != "CustomResourceDefinition" || !strings.HasPrefix(obj.GetAPIVersion(), "apiextensions.k8s.io/") {
		return schema.GroupKind{}, false
	}
	group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
	kind, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "kind")
	return schema.GroupKind{Group: group, Kind: kind}, true
}

// compare says what turning live into merged is; either may be nil (created, deleted).
func compare(name string, live, merged *unstructured.Unstructured, source string) objectChange {
	// Secret values are hidden, as kubectl diff hides them: a diff lands in CI logs.
	live, merged = drift.Redact(withoutServerFields(live), withoutServerFields(merged))
	before, after := toYAML(live), toYAML(merged)
	change := objectChange{Object: name}
	switch {
	case live == nil:
		change.Action = actionCreated
	case merged == nil:
		change.Action = actionDeleted
	case before == after:
		change.Action = actionUnchanged
		return change
	default:
		change.Action = actionConfigured
		seen := map[string]bool{}
		for _, c := range append(drift.Compare(merged, live), drift.Compare(live, merged)...) {
			if !seen[c.Path] {
				seen[c.Path] = true
				change.Fields = append(change.Fields, c.Path)
			}
		}
		sort.Strings(change.Fields)
	}
	from, to := "live "+name, source+" "+name
	if live == nil {
		from = "/dev/null"
	}
	if merged == nil {
		to = "/dev/null"
	}
	change.Diff, _ = difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: lines(before), B: lines(after), FromFile: from, ToFile: to, Context: 3,
	})
	return change
}

// withoutServerFields is a copy of u without the fields that the API server writes on every change
// or that an apply never sets.
func withoutServerFields(u *unstructured.Unstructured) *unstructured.Unstructured {
	if u == nil {
		return nil
	}
	u = u.DeepCopy()
	for _, f := range []string{"managedFields", "resourceVersion", "generation", "uid", "creationTimestamp"} {
		unstructured.RemoveNestedField(u.Object, "metadata", f)
	}
	unstructured.RemoveNestedField(u.Object, "status")
	return u
}

// lines splits text into lines for difflib, none for no text.
func lines(text string) []string {
	if text == "" {
		return nil
	}
	return difflib.SplitLines(strings.TrimSuffix(text, "\n"))
}

func toYAML(u *unstructured.Unstructured) string {
	if u == nil {
		return ""
	}
	b, err := yaml.Marshal(u.Object)
	if err != nil {
		return fmt.Sprintf("# cannot show the object: %v\n", err)
	}
	return string(b)
}

func changed(changes []objectChange) bool {
	for _, c := range changes {
		if c.Action != actionUnchanged {
			return true
		}
	}
	return false
}

func summary(changes []objectChange) string {
	count := map[string]int{}
	for _, c := range changes {
		count[c.Action]++
	}
	if !changed(changes) {
		return fmt.Sprintf("no changes (%d objects unchanged)", count[actionUnchanged])
	}
	return fmt.Sprintf("%d created, %d configured, %d deleted, %d unchanged",
		count[actionCreated], count[actionConfigured], count[actionDeleted], count[actionUnchanged])
}

// printChanges prints one line per object and, for objects that change, their diff.
func (o *options) printChanges(changes []objectChange) {
	for _, c := range changes {
		line := c.Object + " " + c.Action
		if len(c.Fields) > 0 {
			line += ": " + strings.Join(c.Fields, ", ")
		}
		switch c.Action {
		case actionCreated:
			line = o.paint(green, line)
		case actionDeleted:
			line = o.paint(red, line)
		}
		fmt.Fprintln(o.out, line)
		for _, l := range strings.SplitAfter(c.Diff, "\n") {
			switch {
			case l == "":
			case strings.HasPrefix(l, "+") && !strings.HasPrefix(l, "+++"):
				fmt.Fprint(o.out, o.paint(green, strings.TrimSuffix(l, "\n"))+"\n")
			case strings.HasPrefix(l, "-") && !strings.HasPrefix(l, "---"):
				fmt.Fprint(o.out, o.paint(red, strings.TrimSuffix(l, "\n"))+"\n")
			default:
				fmt.Fprint(o.out, l)
			}
		}
	}
}
