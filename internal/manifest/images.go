package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Container is one container of an object that carries a pod spec.
type Container struct {
	// Name of the container.
	Name string
	// Image as written in the manifest.
	Image string
}

// podSpecPaths are where a pod spec lives in the kinds that carry one: every kind with a pod
// template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, and custom kinds that follow
// the convention); CronJob; and PodTemplate.
var podSpecPaths = [][]string{
	{"spec", "template", "spec"},
	{"spec", "jobTemplate", "spec", "template", "spec"},
	{"template", "spec"},
}

// ContainerFields are the lists of containers in a pod spec.
var ContainerFields = []string{"initContainers", "containers", "ephemeralContainers"}

// PodSpecPaths are the paths where an object of apiVersion and kind may carry a pod spec:
// spec for a Pod, the pod template's spec for the others.
func PodSpecPaths(apiVersion, kind string) [][]string {
	if kind == "Pod" && apiVersion == "v1" {
		return append([][]string{{"spec"}}, podSpecPaths...)
	}
	return podSpecPaths
}

// Containers returns every container, init container and ephemeral container of u.
func Containers(u *unstructured.Unstructured) []Container {
	var specs []map[string]any
	for _, path := range PodSpecPaths(u.GetAPIVersion(), u.GetKind()) {
		if spec, ok, _ := unstructured.NestedMap(u.Object, path...); ok {
			specs = append(specs, spec)
		}
	}
	var out []Container
	for _, spec := range specs {
		for _, field := range ContainerFields {
			list, _, _ := unstructured.NestedSlice(spec, field)
			for _, item := range list {
				c, ok := item.(map[string]any)
				if !ok {
					continue
				}
				name, _ := c["name"].(string)
				image, _ := c["image"].(string)
				out = append(out, Container{Name: name, Image: image})
			}
		}
	}
	return out
}

// CheckImages fails with ImageNotPinned, naming each object, container and image, when any
// container image is not pinned by a sha256 digest.
func CheckImages(objects []Object) error {
	var problems []Problem
	for _, o := range objects {
		for _, c := range Containers(o.Unstructured) {
			if _, err := PinnedImage(c.Image); err != nil {
				problems = append(problems, Problem{File: o.File, Line: o.Line, Object: ObjectName(o.Unstructured), Container: c.Name, Message: err.Error()})
			}
		}
	}
	if len(problems) > 0 {
		return newError(ReasonImageNotPinned, problems...)
	}
	return nil
}

// ImagesChecksum is sha256:<hex> over the sorted set of workload=container=image lines, so
// that two revisions running the same images have the same checksum.
func ImagesChecksum(lines []string) string {
	sorted := append([]string(nil), lines...)
	sort.Strings(sorted)
	sum := sha256.Sum256([]byte(strings.Join(sorted, "\n")))
	return "sha256:" + hex.EncodeToString(sum[:])
}
