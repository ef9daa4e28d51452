package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// readyNodes counts the Nodes whose agent reports Ready (kumo node kubeconfig registers a Node
// that is not Ready until its agent reports).
func readyNodes(cl *client.Client) int {
	l := &kumo.NodeList{}
	if cl.Kumo.Get().Resource("nodes").Do(context.Background()).Into(l) != nil {
		return -1
	}
	n := 0
	for _, node := range l.Items {
		if meta.IsStatusConditionTrue(node.Status.Conditions, kumo.NodeConditionReady) {
			n++
		}
	}
	return n
}

// TestStolenNodeCredentialReachesNothingElse is issue 9's reproduction with the kubeconfig of a
// node that runs nothing: it may not place a tenant's disk on itself, read another tenant's disk
// (nor its upload), decide a golden image's fate, write events into a tenant, and once its Node is
// deleted the credential is dead, also after a Node of the same name is registered again.
func TestStolenNodeCredentialReachesNothingElse(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	admin := c.Admin(t)
	tenant := uniqueName("alpha")
	c.NewTenant(t, tenant)
	ns := kumo.TenantNamespace(tenant)
	size := resource.MustParse("1Gi")
	d := &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Name: "adisk"}, Spec: apps.VMDiskSpec{Storage: &size, StorageClass: apps.StorageLocal}}
	if err := admin.Apps.Post().Namespace(ns).Resource("vmdisks").Body(d).Do(ctx).Into(d); err != nil {
		t.Fatal(err)
	}
	node := uniqueName("n")
	kc := filepath.Join(t.TempDir(), "node.kubeconfig")
	c.MustKumo(t, c.AdminKubeconfig(), "node", "kubeconfig", node, "-o", kc)
	n2 := c.Client(t, kc)
	registered := &kumo.Node{}
	if err := n2.Kumo.Get().Resource("nodes").Name(node).Do(ctx).Into(registered); err != nil {
		t.Errorf("the node credential reading its own Node (registered by kumo node kubeconfig): %v", err)
	}

	patch := []byte(`{"status":{"node":"` + node + `"}}`)
	forbidden := map[string]error{
		"place a tenant's disk on itself": n2.Apps.Patch(types.MergePatchType).Namespace(ns).Resource("vmdisks").Name("adisk").SubResource("status").Body(patch).Do(ctx).Error(),
		"read a tenant's disk":            n2.Apps.Get().Namespace(ns).Resource("vmdisks").Name("adisk").Do(ctx).Error(),
		"read a tenant's disk upload":     n2.Apps.Get().Namespace(ns).Resource("vmdisks").Name("adisk").SubResource("upload").Do(ctx).Error(),
		"read a tenant's disk key":        n2.Apps.Get().Namespace(ns).Resource("vmdisks").Name("adisk").SubResource("diskkey").Do(ctx).Error(),
	}
	image := &kumo.GoldenImage{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("img")}, Spec: kumo.GoldenImageSpec{Source: kumo.GoldenImageSource{Upload: &kumo.GoldenImageUpload{}}}}
	if err := admin.Kumo.Post().Resource("goldenimages").Body(image).Do(ctx).Into(image); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.Kumo.Delete().Resource("goldenimages").Name(image.Name).Do(context.Background()).Error()
	})
	forbidden["mark a golden image Failed"] = n2.Kumo.Patch(types.MergePatchType).Resource("goldenimages").Name(image.Name).SubResource("status").
		Body([]byte(`{"status":{"phase":"Failed"}}`)).Do(ctx).Error()
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "adisk.forged", Namespace: ns}, Type: corev1.EventTypeWarning, Reason: "DiskCorrupt",
		Message: "your disk is corrupt: send your password to help@evil", InvolvedObject: corev1.ObjectReference{
			APIVersion: apps.SchemeGroupVersion.String(), Kind: "VMDisk", Namespace: ns, Name: "adisk", UID: d.UID}}
	_, forbidden["write an event into a tenant"] = n2.Core.CoreV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{})
	for what, err := range forbidden {
		if !apierrors.IsForbidden(err) {
			t.Errorf("node %s with no VMs: %s: want 403, got %v", node, what, err)
		}
	}
	if got := getDisk(t, admin, ns, "adisk"); got.Status.Node != "" {
		t.Errorf("the disk was placed on %q by a node's say-so", got.Status.Node)
	}

	// Deleting the Node revokes its credential, also once a Node of that name exists again.
	c.MustKumo(t, c.AdminKubeconfig(), "delete", "node", node)
	again := &kumo.Node{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: kumo.NodeSpec{Datacenter: "dc1"}}
	revoked := map[string]error{
		"re-register the deleted node": n2.Kumo.Post().Resource("nodes").Body(again).Do(ctx).Error(),
	}
	c.MustKumo(t, c.AdminKubeconfig(), "node", "kubeconfig", node, "-o", filepath.Join(t.TempDir(), "new.kubeconfig"))
	revoked["read the node registered again"] = n2.Kumo.Get().Resource("nodes").Name(node).Do(ctx).Error()
	for what, err := range revoked {
		if !apierrors.IsUnauthorized(err) {
			t.Errorf("deleted node %s's old credential: %s: want 401, got %v", node, what, err)
		}
	}
	t.Cleanup(func() { _ = admin.Kumo.Delete().Resource("nodes").Name(node).Do(context.Background()).Error() })
}

// TestAgentRenewsItsNodeTokenAndLosesItWithItsNode: an agent renews its node token as it starts
// (into its kubeconfig, so a restart keeps it) and keeps reporting; deleting its Node revokes
// the renewed token as well.
func TestAgentRenewsItsNodeTokenAndLosesItWithItsNode(t *testing.T) {
	needCluster(t)
	c := startServer(t, "kumo-renew-")
	a := c.StartAgent(t, "r1", "dc1", "--cpus", "2", "--memory", "4Gi", "--reserve-memory", "0")
	kc := filepath.Join(a.Dir, "node.kubeconfig")
	issued, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	admin := c.Admin(t)
	eventually(t, time.Minute, "the agent to renew its token", func() bool { return strings.Contains(a.Log(), "node token renewed") })
	renewed, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.BearerToken == "" || renewed.BearerToken == issued.BearerToken {
		t.Fatalf("the kubeconfig should hold the renewed token")
	}
	eventually(t, time.Minute, "node r1 Ready with its renewed token", func() bool { return readyNodes(admin) == 1 })
	c.MustKumo(t, c.AdminKubeconfig(), "delete", "node", "r1")
	for what, path := range map[string]string{"issued": kc + ".issued", "renewed": kc} {
		if what == "issued" {
			data, _ := clientcmd.Write(*mustLoadKubeconfig(t, kc, issued.BearerToken))
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		err := c.Client(t, path).Kumo.Get().Resource("nodes").Name("r1").Do(context.Background()).Error()
		if !apierrors.IsUnauthorized(err) {
			t.Errorf("the %s token of deleted node r1: want 401, got %v", what, err)
		}
	}
}

// mustLoadKubeconfig loads a kubeconfig and sets its current user's token.
func mustLoadKubeconfig(t *testing.T, path, token string) *clientcmdapi.Config {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AuthInfos[cfg.Contexts[cfg.CurrentContext].AuthInfo].Token = token
	return cfg
}
