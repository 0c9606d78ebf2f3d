package controllers

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// oneObjectCache is a watch cache holding one typed object.
type oneObjectCache struct {
	cache.Cache
	obj client.Object
}

func (c oneObjectCache) Get(_ context.Context, key client.ObjectKey, out client.Object, _ ...client.GetOption) error {
	if key != client.ObjectKeyFromObject(c.obj) {
		return apierrors.NewNotFound(appsv1.Resource("deployments"), key.Name)
	}
	c.obj.(*appsv1.Deployment).DeepCopyInto(out.(*appsv1.Deployment))
	return nil
}

// GetInformer answers for an informer that has synced.
func (c oneObjectCache) GetInformer(context.Context, client.Object, ...cache.InformerGetOption) (cache.Informer, error) {
	return syncedInformer{}, nil
}

type syncedInformer struct{ cache.Informer }

func (syncedInformer) HasSynced() bool { return true }

// apiServer stands for the API server: it answers every read with a marker.
type apiServer struct{ client.Reader }

func (apiServer) Get(_ context.Context, _ client.ObjectKey, out client.Object, _ ...client.GetOption) error {
	out.(*unstructured.Unstructured).SetAnnotations(map[string]string{"read-from": "api-server"})
	return nil
}

// The health check takes a workload from the watch cache only when the cache holds the
// object the release applied, at least as new as that apply: an older copy would show the
// previous rollout as done.
func TestWatchedReadsOnlyFreshCopies(t *testing.T) {
	g := NewWithT(t)
	scheme := runtime.NewScheme()
	g.Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	deployments := appsv1.SchemeGroupVersion.WithKind("Deployment")
	key := client.ObjectKey{Namespace: "apps", Name: "web"}
	id := idOf(deployments.GroupKind(), key.Namespace, key.Name)

	read := func(cached *appsv1.Deployment, applied liveMeta) *unstructured.Unstructured {
		w := &watcher{cache: oneObjectCache{obj: cached}, scheme: scheme, watched: map[schema.GroupVersionKind]bool{deployments: true}}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(deployments)
		reader := watched{Reader: apiServer{}, watches: w, applied: map[string]liveMeta{id: applied}}
		g.Expect(reader.Get(context.Background(), key, u)).To(Succeed())
		return u
	}
	cached := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, UID: "uid-1", Generation: 2},
		Status:     appsv1.DeploymentStatus{ObservedGeneration: 2, AvailableReplicas: 1},
	}

	u := read(cached, liveMeta{uid: "uid-1", generation: 2})
	g.Expect(u.GetAnnotations()).To(BeEmpty(), "the cached copy is the applied generation")
	g.Expect(u.GroupVersionKind()).To(Equal(deployments))
	observed, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	g.Expect(observed).To(Equal(int64(2)), "with its status")

	g.Expect(read(cached, liveMeta{uid: "uid-1", generation: 3}).GetAnnotations()).To(HaveKeyWithValue("read-from", "api-server"),
		"the cache has not seen the last apply yet")
	g.Expect(read(cached, liveMeta{uid: "uid-0", generation: 1}).GetAnnotations()).To(HaveKeyWithValue("read-from", "api-server"),
		"the cached object is another one of the same name")

	w := &watcher{cache: oneObjectCache{obj: cached}, scheme: scheme, watched: map[schema.GroupVersionKind]bool{}}
	u = &unstructured.Unstructured{}
	u.SetGroupVersionKind(deployments)
	g.Expect(watched{Reader: apiServer{}, watches: w, applied: map[string]liveMeta{id: {uid: "uid-1", generation: 2}}}.Get(context.Background(), key, u)).To(Succeed())
	g.Expect(u.GetAnnotations()).To(HaveKeyWithValue("read-from", "api-server"), "the kind is not watched yet")
}
