package manifest

import (
	"os"
	"path/filepath"

	kfilesys "github.com/fluxcd/pkg/kustomize/filesys"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
)

// kustomizationFile returns the name of the kustomization file in dir, or "".
func kustomizationFile(dir string) string {
	for _, name := range []string{"kustomization.yaml", "kustomization.yml", "Kustomization"} {
		if info, err := os.Stat(filepath.Join(dir, name)); err == nil && !info.IsDir() {
			return name
		}
	}
	return ""
}

// buildKustomization runs kustomize on dir. The file system is confined to the repository
// root: bases in sibling folders work, anything outside the repository (through .. or a
// symlink) does not. Plugins and Helm charts are off.
func buildKustomization(root, dir, file string) ([]Object, error) {
	fsys, err := kfilesys.MakeFsOnDiskSecure(root)
	if err != nil {
		return nil, err
	}
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsNone
	opts.PluginConfig = types.DisabledPluginConfig()
	resources, err := krusty.MakeKustomizer(opts).Run(fsys, dir)
	if err != nil {
		return nil, newError(ReasonInvalidManifest, Problem{File: filepath.ToSlash(file), Message: "kustomize build failed: " + err.Error()})
	}
	var objects []Object
	for _, r := range resources.Resources() {
		data, err := r.AsYAML()
		if err != nil {
			return nil, newError(ReasonInvalidManifest, Problem{File: filepath.ToSlash(file), Message: "kustomize output: " + err.Error()})
		}
		objs, problems := Parse(filepath.ToSlash(file), data)
		if len(problems) > 0 {
			return nil, newError(ReasonInvalidManifest, problems...)
		}
		for i := range objs {
			objs[i].Line = 0
		}
		objects = append(objects, objs...)
	}
	return objects, nil
}
