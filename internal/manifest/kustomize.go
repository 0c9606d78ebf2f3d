package manifest

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/openapi"
	"sigs.k8s.io/kustomize/kyaml/openapi/kubernetesapi"

	"github.com/immutable-release/operator/internal/decrypt"
)

// kustomizationFile returns the name of the kustomization file in dir, or "".
func kustomizationFile(dir string) string {
	for _, name := range konfig.RecognizedKustomizationFileNames() {
		if info, err := os.Stat(filepath.Join(dir, name)); err == nil && !info.IsDir() {
			return name
		}
	}
	return ""
}

// buildKustomization runs kustomize on dir. The file system is confined to the repository
// root: bases in sibling folders work, anything outside the repository (through .. or a
// symlink) does not. Plugins and Helm charts are off. Unless limits allow remote bases,
// nothing is fetched: every reachable kustomization is scanned first, and kustomize's file
// system checks again each file it reads. Input and output are held to the limits.
func buildKustomization(root, dir, file string, limits Limits, d *decrypt.Decryptor) ([]Object, error) {
	file = filepath.ToSlash(file)
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("resolving repository root: %w", err)
	}
	var configDirs []string
	if !limits.AllowRemoteBases {
		if configDirs, err = scanKustomizations(realRoot, dir, limits); err != nil {
			return nil, err
		}
	}
	fsys, err := newKustomizeFS(realRoot, limits)
	if err != nil {
		return nil, err
	}
	fsys.decryptor = d
	for _, d := range configDirs {
		if err := checkBuiltConfigs(fsys, d); err != nil {
			return nil, err
		}
	}
	resources, err := runKustomize(fsys, dir)
	if fsys.refused != nil {
		return nil, fsys.refused
	}
	if err != nil {
		return nil, newError(ReasonInvalidManifest, Problem{File: file, Message: "kustomize build failed: " + fsys.redact(err)})
	}
	return kustomizeOutput(resources, file, limits, len(fsys.decrypted) > 0)
}

// checkBuiltConfigs builds a folder that generators, transformers or validators name, and
// refuses the remote paths in the configurations it outputs: a patch in that folder can set a
// PatchTransformer's path to a URL that no file of the repository spells out.
func checkBuiltConfigs(fsys *kustomizeFS, dir string) error {
	file := filepath.Join(dir, kustomizationFile(dir))
	name := fsys.name(file)
	resources, err := runKustomize(fsys, dir)
	if fsys.refused != nil {
		return fsys.refused
	}
	if err != nil {
		return newError(ReasonInvalidManifest, Problem{File: name, Message: "kustomize build failed: " + fsys.redact(err)})
	}
	var docs []any
	for _, r := range resources.Resources() {
		m, err := r.Map()
		if err != nil {
			return newError(ReasonInvalidManifest, Problem{File: name, Message: "kustomize output: " + err.Error()})
		}
		docs = append(docs, m)
	}
	if problems := remoteConfigEntries(name, "configuration built from this kustomization", docs); len(problems) > 0 {
		return newError(ReasonRemoteResourceRefused, problems...)
	}
	return nil
}

// kustomizeMu serialises builds: kustomize keeps its OpenAPI schema in a global, which one
// release's openapi field would otherwise change under another's build, and concurrent builds
// race on its maps (kubernetes-sigs/kustomize#3659). fluxcd/pkg/kustomize does the same.
var kustomizeMu sync.Mutex

// runKustomize runs krusty on dir with plugins off and loading allowed anywhere fsys allows.
// A panic in kustomize, which hostile input has caused before, becomes an error.
func runKustomize(fsys *kustomizeFS, dir string) (m resmap.ResMap, err error) {
	kustomizeMu.Lock()
	defer kustomizeMu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kustomize panicked: %v", r)
		}
	}()
	restoreBuiltinSchema()
	defer restoreBuiltinSchema()
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsNone
	opts.PluginConfig = types.DisabledPluginConfig()
	return krusty.MakeKustomizer(opts).Run(fsys, dir)
}

// restoreBuiltinSchema puts kustomize's built-in OpenAPI schema back after a build changed it
// (with openapi.path or openapi.version): kustomize keeps the last one set for every build that
// sets none, so one release would decide how another's patches merge. It does nothing for the
// builds that change nothing, as loading the built-in schema again costs about 100 ms.
func restoreBuiltinSchema() {
	if openapi.GetSchemaVersion() == kubernetesapi.DefaultOpenAPI {
		return
	}
	openapi.ResetOpenAPI()
	// Loaded now, as fluxcd/pkg/kustomize does, so that the schema of a later openapi.path adds
	// to the built-in one as it always has in a long-running process.
	_ = openapi.Schema()
}

// kustomizeOutput turns kustomize's resources into objects, within the limits: a few small
// files can render to far more (many overlays of one base, a large label set on every object),
// and MaxTotalSize bounds what the release holds, not only what the repository holds.
// When the build read decrypted files, problems say where, not what: they could quote a value.
func kustomizeOutput(resources resmap.ResMap, file string, limits Limits, decrypted bool) ([]Object, error) {
	if n := resources.Size(); n > limits.MaxObjects {
		return nil, newError(ReasonInvalidManifest, Problem{File: file, Message: fmt.Sprintf("kustomize output holds %d objects, over the limit of %d", n, limits.MaxObjects)})
	}
	var (
		objects []Object
		total   int64
	)
	for _, r := range resources.Resources() {
		data, err := r.AsYAML()
		if err != nil {
			return nil, newError(ReasonInvalidManifest, Problem{File: file, Message: "kustomize output: " + err.Error()})
		}
		if int64(len(data)) > limits.MaxFileSize {
			return nil, newError(ReasonInvalidManifest, Problem{File: file, Object: resourceName(r.GetKind(), r.GetNamespace(), r.GetName()),
				Message: fmt.Sprintf("kustomize output object is %d bytes, over the limit of %d bytes", len(data), limits.MaxFileSize)})
		}
		total += int64(len(data))
		if total > limits.MaxTotalSize {
			return nil, newError(ReasonInvalidManifest, Problem{File: file, Message: fmt.Sprintf("kustomize output exceeds the limit of %d bytes in all", limits.MaxTotalSize)})
		}
		objs, problems := Parse(file, data)
		if decrypted {
			problems = withheld(problems)
		}
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

func resourceName(kind, namespace, name string) string {
	if namespace != "" {
		return kind + "/" + namespace + "/" + name
	}
	return kind + "/" + name
}
