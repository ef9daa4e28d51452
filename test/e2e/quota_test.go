package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// setQuota merges quota (JSON of spec.quota fields) into tenant's spec, as an administrator.
func setQuota(t *testing.T, admin *client.Client, tenant, quota string) {
	t.Helper()
	body := fmt.Sprintf(`{"spec":{"quota":%s}}`, quota)
	if err := admin.Kumo.Patch(types.MergePatchType).Resource("tenants").Name(tenant).Body([]byte(body)).Do(context.Background()).Error(); err != nil {
		t.Fatalf("set the quota of tenant %s: %v", tenant, err)
	}
}

func getTenant(t *testing.T, cl *client.Client, name string) *kumo.Tenant {
	t.Helper()
	tn := &kumo.Tenant{}
	if err := cl.Kumo.Get().Resource("tenants").Name(name).Do(context.Background()).Into(tn); err != nil {
		t.Fatal(err)
	}
	return tn
}

func TestVMPastTheTenantsQuotaGets403NamingQuotaAndUsage(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	admin := c.Admin(t)
	tenant := uniqueName("quota")
	ns := kumo.TenantNamespace(tenant)
	kc := c.NewTenant(t, tenant)
	cl := c.Client(t, kc)
	if tn := getTenant(t, cl, tenant); tn.Spec.Quota.VMs == nil || *tn.Spec.Quota.VMs != kumo.DefaultQuotaVMs {
		t.Fatalf("a new tenant shows its default quota (a tenant's user reads it): %+v", tn.Spec.Quota)
	}
	setQuota(t, admin, tenant, `{"vms":2,"cpus":3}`)
	for _, name := range []string{"a", "b"} {
		if err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM(name)).Do(ctx).Error(); err != nil {
			t.Fatalf("VM %s within the quota: %v", name, err)
		}
	}
	err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("c")).Do(ctx).Error()
	want := fmt.Sprintf("exceeded quota of tenant %s: requested: vms=1, used: vms=2, limited: vms=2", tenant)
	if statusCode(err) != http.StatusForbidden || !strings.Contains(err.Error(), want) {
		t.Fatalf("a third VM with vms: 2: want 403 %q, got %v", want, err)
	}
	// kumo apply (server-side apply creating the object) is refused the same way.
	r := Run(kc, "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: d\nspec:\n  instanceType: u1.medium\n", bins.kumo, "apply", "-f", "-")
	if r.Err == nil || !strings.Contains(r.Stderr, "exceeded quota") {
		t.Fatalf("kumo apply past the quota: want the 403, got %v", r)
	}
	// The usage is in the tenant's status.
	eventually(t, 30*time.Second, "status.usage counts 2 VMs and their 2 vCPU / 8Gi", func() bool {
		u := getTenant(t, admin, tenant).Status.Usage
		return u.VMs != nil && *u.VMs == 2 && u.CPUs != nil && *u.CPUs == 2 && u.Memory != nil && u.Memory.Cmp(resource.MustParse("8Gi")) == 0
	})
	// Deleting one frees its unit.
	if err := cl.Apps.Delete().Namespace(ns).Resource("vminstances").Name("a").Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "VM a gone", func() bool {
		return cl.Apps.Get().Namespace(ns).Resource("vminstances").Name("a").Do(ctx).Error() != nil
	})
	if err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("c")).Do(ctx).Error(); err != nil {
		t.Fatalf("a VM once another was deleted: %v", err)
	}
}

// Twenty clients create VMs at once in a tenant with room for five: exactly five pass.
func TestConcurrentCreatesNeverPassTheQuota(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	admin := c.Admin(t)
	tenant := uniqueName("quotarace")
	ns := kumo.TenantNamespace(tenant)
	cl := c.Client(t, c.NewTenant(t, tenant))
	setQuota(t, admin, tenant, `{"vms":5}`)
	var wg sync.WaitGroup
	var mu sync.Mutex
	created, refused := 0, 0
	start := make(chan struct{})
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM(fmt.Sprintf("vm%d", i))).Do(ctx).Error()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case statusCode(err) == http.StatusForbidden && strings.Contains(err.Error(), "exceeded quota"):
				refused++
			default:
				t.Errorf("create vm%d: %v", i, err)
			}
		}(i)
	}
	close(start)
	wg.Wait()
	var list apps.VMInstanceList
	if err := admin.Apps.Get().Namespace(ns).Resource("vminstances").Do(ctx).Into(&list); err != nil {
		t.Fatal(err)
	}
	if created != 5 || refused != 15 || len(list.Items) != 5 {
		t.Fatalf("20 concurrent creates with vms: 5: %d created, %d refused, %d stored", created, refused, len(list.Items))
	}
}

// The reproduction: a VM carrying 20,000 SSH keys (1.8 MB) got a 500 from etcd.
func TestOversizedVMIsRefusedWith413Or422NeverA500(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("big")
	ns := kumo.TenantNamespace(tenant)
	cl := c.Client(t, c.NewTenant(t, tenant))
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk1mBrN0MjaF2ZpPJnQyK2Aq3z6TTTd5LlE0ztDqZyB user@host-with-a-long-comment-to-reach-ninety"
	vm := newVM("keys")
	for i := 0; i < 20000; i++ {
		vm.Spec.SSHKeys = append(vm.Spec.SSHKeys, key)
	}
	err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(vm).Do(ctx).Error()
	if statusCode(err) != http.StatusRequestEntityTooLarge {
		t.Fatalf("a 1.8 MB VM: want 413, got %d %v", statusCode(err), err)
	}
	vm.Spec.SSHKeys = vm.Spec.SSHKeys[:1000] // ~100 KB: under the body limit, over the keys' limit
	err = cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(vm).Do(ctx).Error()
	if statusCode(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "spec.sshKeys") {
		t.Fatalf("1000 SSH keys: want 422 at spec.sshKeys, got %d %v", statusCode(err), err)
	}
}

// The reproduction: a 9.4 MB gzip upload expanded to 2 GiB on the control plane. Here a
// ~250 KB gzip of 256 MiB for a 16Mi disk stops at the disk's size with a 413.
func TestUploadedGzipBombStopsAtTheDisksSize(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("bomb")
	ns := kumo.TenantNamespace(tenant)
	cl := c.Client(t, c.NewTenant(t, tenant))
	d := &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Name: "up"}, Spec: apps.VMDiskSpec{
		Source: apps.VMDiskSource{Upload: &apps.UploadSource{}}, StorageClass: apps.StorageLocal}}
	q := resource.MustParse("16Mi")
	d.Spec.Storage = &q
	if err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Body(d).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	w, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for i := 0; i < 256; i++ {
		_, _ = w.Write(zeros)
	}
	_ = w.Close()
	start := time.Now()
	err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Name("up").SubResource("upload").Body(gz.Bytes()).Do(ctx).Error()
	if statusCode(err) != http.StatusRequestEntityTooLarge || !strings.Contains(err.Error(), "spec.storage 16Mi") {
		t.Fatalf("a %d-byte gzip of 256Mi for a 16Mi disk: want 413 naming spec.storage, got %v", gz.Len(), err)
	}
	t.Logf("gzip of %d bytes refused in %s", gz.Len(), time.Since(start))
	got := &apps.VMDisk{}
	if err := cl.Apps.Get().Namespace(ns).Resource("vmdisks").Name("up").Do(ctx).Into(got); err != nil {
		t.Fatal(err)
	}
	if meta.IsStatusConditionTrue(got.Status.Conditions, "Uploaded") {
		t.Error("a refused upload was recorded as received")
	}
}

// On an all-in-one with a 16Mi upload staging limit: the node reports its local storage, a local
// disk larger than that stays unplaced naming it, and a second 6Mi upload while the first waits
// for a node gets 507 (an upload holds its plaintext and its sealed copy at once while sealing).
func TestNodeLocalStorageAndUploadStagingLimit(t *testing.T) {
	c := startAllInOne(t, "--upload-staging-limit", "16Mi")
	ctx := context.Background()
	admin := c.Admin(t)
	var node kumo.Node
	eventually(t, 2*time.Minute, "node aio reports its local storage", func() bool {
		if err := admin.Kumo.Get().Resource("nodes").Name("aio").Do(ctx).Into(&node); err != nil {
			return false
		}
		_, ok := node.Status.Allocatable[kumo.ResourceLocalStorage]
		return ok
	})
	capacity, alloc := node.Status.Capacity[kumo.ResourceLocalStorage], node.Status.Allocatable[kumo.ResourceLocalStorage]
	if alloc.Sign() <= 0 || alloc.Cmp(capacity) >= 0 {
		t.Fatalf("local storage: capacity %s, allocatable %s (want 0 < allocatable < capacity)", capacity.String(), alloc.String())
	}

	tenant := uniqueName("space")
	ns := kumo.TenantNamespace(tenant)
	cl := c.Client(t, c.NewTenant(t, tenant))
	setQuota(t, admin, tenant, `{"storage":{"local":"20Ti"}}`)
	huge := newDisk("huge", "16Ti", apps.StorageLocal)
	huge.Spec.Source = apps.VMDiskSource{}
	if err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Body(huge).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the 16Ti local disk unplaced, naming the node's free local storage", func() bool {
		d := &apps.VMDisk{}
		if err := cl.Apps.Get().Namespace(ns).Resource("vmdisks").Name("huge").Do(ctx).Into(d); err != nil {
			return false
		}
		for _, cond := range d.Status.Conditions {
			if strings.Contains(cond.Message, "aio: ") && strings.Contains(cond.Message, "of local storage free, the disk needs 16Ti") {
				return d.Status.Node == ""
			}
		}
		return false
	})

	upload := func(name string) error {
		d := &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: apps.VMDiskSpec{
			// replicated: this node has no Ceph, so the staged upload waits for a node.
			Source: apps.VMDiskSource{Upload: &apps.UploadSource{}}, StorageClass: apps.StorageReplicated}}
		q := resource.MustParse("16Mi")
		d.Spec.Storage = &q
		if err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Body(d).Do(ctx).Error(); err != nil {
			t.Fatal(err)
		}
		return cl.Apps.Post().Namespace(ns).Resource("vmdisks").Name(name).SubResource("upload").Body(make([]byte, 6<<20)).Do(ctx).Error()
	}
	if err := upload("first"); err != nil {
		t.Fatalf("a 6Mi upload with a 16Mi staging limit: %v", err)
	}
	err := upload("second")
	if statusCode(err) != http.StatusInsufficientStorage || !strings.Contains(err.Error(), "--upload-staging-limit") {
		t.Fatalf("a second 6Mi upload while the first is staged: want 507 naming the limit, got %d %v", statusCode(err), err)
	}
	// Deleting the first disk removes its staged upload: the second goes through.
	if err := cl.Apps.Delete().Namespace(ns).Resource("vmdisks").Name("first").Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the second upload accepted once the first disk is gone", func() bool {
		return cl.Apps.Post().Namespace(ns).Resource("vmdisks").Name("second").SubResource("upload").Body(make([]byte, 6<<20)).Do(ctx).Error() == nil
	})
}
