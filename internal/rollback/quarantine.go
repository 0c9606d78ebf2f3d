package rollback

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/immutable-release/operator/api/v1alpha1"
)

// QuarantineFailed, once the revert of a failed revision is applied (the applied commit is
// the last rollback's revert commit), quarantines the digests that the failed revision
// brought and the revert took away.
func QuarantineFailed(obj *v1alpha1.ImmutableRelease, commit string, images []v1alpha1.WorkloadImage) {
	if lr := obj.Status.LastRollback; lr != nil && lr.RevertCommit == commit {
		Quarantine(obj, images)
	}
}

// Quarantine quarantines the failed images of the last rollback that images, the
// containers of the revision that brought the revert, no longer run.
func Quarantine(obj *v1alpha1.ImmutableRelease, images []v1alpha1.WorkloadImage) {
	lr := obj.Status.LastRollback
	if lr == nil || !obj.QuarantineEnabled() {
		return
	}
	kept := map[string]bool{}
	for _, im := range images {
		kept[im.Workload+"/"+im.Container+"@"+digestOf(im.Image)] = true
	}
	for _, im := range lr.FailedImages {
		d := digestOf(im.Image)
		if d == "" || kept[im.Workload+"/"+im.Container+"@"+d] || quarantined(obj, im.Workload, im.Container, d) {
			continue
		}
		obj.Status.Quarantine = append(obj.Status.Quarantine, v1alpha1.QuarantinedDigest{
			Workload: im.Workload, Container: im.Container, Digest: d, FailedRevision: lr.FailedRevision, Time: metav1.Now()})
	}
}

func quarantined(obj *v1alpha1.ImmutableRelease, workload, container, digest string) bool {
	for _, q := range obj.Status.Quarantine {
		if q.Workload == workload && q.Container == container && q.Digest == digest {
			return true
		}
	}
	return false
}

// CheckQuarantine refuses a revision whose images bring back a quarantined digest for the
// same container; the error names each, and how to lift it.
func CheckQuarantine(obj *v1alpha1.ImmutableRelease, revision string, images []v1alpha1.WorkloadImage) error {
	var found []string
	for _, im := range images {
		for _, q := range obj.Status.Quarantine {
			if q.Workload == im.Workload && q.Container == im.Container && q.Digest == digestOf(im.Image) {
				found = append(found, fmt.Sprintf("%s container %s: %s failed in revision %s", im.Workload, im.Container, q.Digest, q.FailedRevision))
			}
		}
	}
	if len(found) == 0 {
		return nil
	}
	return fmt.Errorf("revision %s brings back quarantined digests: %s; if it is fixed, lift the quarantine with kubectl annotate immutablerelease %s %s=<digest>",
		revision, strings.Join(found, "; "), obj.Name, v1alpha1.UnquarantineAnnotation)
}

// Unquarantine acts on the unquarantine annotation, once per value: its value is the
// digest, optionally followed by @<token> so that the same digest can be named anew. It
// records the value as handled and returns the digest it lifted, or "" when it lifted
// nothing. A digest quarantined again later stays quarantined while the annotation keeps
// the value it had.
func Unquarantine(obj *v1alpha1.ImmutableRelease) string {
	value := obj.GetAnnotations()[v1alpha1.UnquarantineAnnotation]
	if value == "" || value == obj.Status.LastHandledUnquarantine {
		return ""
	}
	obj.Status.LastHandledUnquarantine = value
	digest, _, _ := strings.Cut(value, "@")
	kept := obj.Status.Quarantine[:0:0]
	for _, q := range obj.Status.Quarantine {
		if q.Digest != digest {
			kept = append(kept, q)
		}
	}
	if len(kept) == len(obj.Status.Quarantine) {
		return ""
	}
	obj.Status.Quarantine = kept
	return digest
}

func digestOf(image string) string {
	_, d, _ := strings.Cut(image, "@")
	return d
}
