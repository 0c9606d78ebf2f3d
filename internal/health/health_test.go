package health

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// rolledOut is a Deployment kstatus calls Current, with selector.
func rolledOut(selector *metav1.LabelSelector) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Generation: 1},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: selector,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", "track": "stable"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "web:1.0"}}},
			},
		},
		Status: appsv1.DeploymentStatus{
			ObservedGeneration: 1, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1,
			Conditions: []appsv1.DeploymentCondition{
				{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue},
				{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable"},
			},
		},
	}
}

func pod(name, digest string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: labels},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{
			{Name: "app", ImageID: "registry.example.com/web@" + digest},
		}},
	}
}

// TestCheckReadsThePodsTheWholeSelectorSelects: the digests a workload runs come from the
// pods its whole selector selects. A canary Deployment's pods share the stable one's app
// label and differ only in a label the stable one selects with matchExpressions: counting
// them would report the canary's image as running in the stable workload.
func TestCheckReadsThePodsTheWholeSelectorSelects(t *testing.T) {
	const stable, canary = "sha256:aaaa", "sha256:cccc"
	pods := []client.Object{
		pod("web-stable", stable, map[string]string{"app": "web", "track": "stable"}),
		pod("web-canary", canary, map[string]string{"app": "web", "track": "canary"}),
		pod("other", "sha256:eeee", map[string]string{"app": "other", "track": "stable"}),
	}
	stableTrack := metav1.LabelSelectorRequirement{Key: "track", Operator: metav1.LabelSelectorOpIn, Values: []string{"stable"}}
	notCanary := metav1.LabelSelectorRequirement{Key: "track", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"canary"}}
	tests := []struct {
		name     string
		selector *metav1.LabelSelector
		want     map[string][]string
	}{
		{
			name:     "matchLabels only",
			selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			want:     map[string][]string{"app": {stable, canary}},
		},
		{
			name:     "matchLabels and matchExpressions",
			selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}, MatchExpressions: []metav1.LabelSelectorRequirement{stableTrack}},
			want:     map[string][]string{"app": {stable}},
		},
		{
			name:     "NotIn",
			selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}, MatchExpressions: []metav1.LabelSelectorRequirement{notCanary}},
			want:     map[string][]string{"app": {stable}},
		},
		{
			name: "matchExpressions only",
			selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"web"}}, stableTrack}},
			want: map[string][]string{"app": {stable}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			scheme := runtime.NewScheme()
			g.Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
			c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(append([]client.Object{rolledOut(tt.selector)}, pods...)...).Build()
			applied := &unstructured.Unstructured{}
			applied.SetAPIVersion("apps/v1")
			applied.SetKind("Deployment")
			applied.SetNamespace("shop")
			applied.SetName("web")

			res, err := Check(context.Background(), c, []*unstructured.Unstructured{applied}, nil)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res.Verdict).To(Equal(Healthy), res.Message())
			g.Expect(res.Running).To(Equal(map[string]map[string][]string{"Deployment/shop/web": tt.want}))
		})
	}
}
