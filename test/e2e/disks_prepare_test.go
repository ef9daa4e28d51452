package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// dribbleServer serves /slow.qcow2 announcing 64 MiB and sending 1 KiB every 100 ms; it reports
// when a download starts and when the client closes its connection.
type dribbleServer struct {
	*httptest.Server
	started, closed chan struct{}
	requests        atomic.Int32
}

func newDribbleServer(t *testing.T, dir string) *dribbleServer {
	s := &dribbleServer{started: make(chan struct{}, 16), closed: make(chan struct{}, 16)}
	files := http.FileServer(http.Dir(dir))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow.qcow2" {
			files.ServeHTTP(w, r)
			return
		}
		s.requests.Add(1)
		s.started <- struct{}{}
		defer func() { s.closed <- struct{}{} }()
		w.Header().Set("Content-Length", fmt.Sprint(64<<20))
		w.WriteHeader(http.StatusOK)
		chunk := make([]byte, 1024)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}))
	// Close waits for open downloads: cut them first, or a download that was never cancelled
	// (the failure this server detects) would hold the test for the length of its 64 MiB.
	t.Cleanup(func() { s.CloseClientConnections(); s.Close() })
	return s
}

func httpDisk(name, url string) string {
	return fmt.Sprintf(`apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: %s
spec:
  source:
    http:
      url: %s
  storage: 1Gi
  storageClass: local
`, name, url)
}

func getDisk(t *testing.T, cl *client.Client, ns, name string) *apps.VMDisk {
	t.Helper()
	d := &apps.VMDisk{}
	if err := cl.Apps.Get().Namespace(ns).Resource("vmdisks").Name(name).Do(context.Background()).Into(d); err != nil {
		t.Fatalf("get disk %s: %v", name, err)
	}
	return d
}

func TestDisksArePreparedBeforeAnyVMNeedsThem(t *testing.T) {
	c := startAllInOne(t, "--cpus", "4")
	dir := t.TempDir()
	src := filepath.Join(imagesDir(), "kumo-tiny.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", src, filepath.Join(dir, "tiny.qcow2")).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	canary := filepath.Join(t.TempDir(), "canary")
	os.WriteFile(canary, []byte("do not read me"), 0o600)
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", canary, "-F", "raw", filepath.Join(dir, "hostile.qcow2")).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	srv := newDribbleServer(t, dir)
	kc := c.NewTenant(t, "early")
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace("early")
	ctx := context.Background()

	// A disk created alone is placed and imported with no VM asking for it.
	if r := Run(kc, httpDisk("alone", srv.URL+"/tiny.qcow2"), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	eventually(t, 3*time.Minute, "disk alone to become Ready with no VM", func() bool {
		return getDisk(t, cl, ns, "alone").Status.Phase == apps.DiskReady
	})
	if d := getDisk(t, cl, ns, "alone"); d.Status.Node != "aio" || d.Status.Progress != "100%" || d.Status.Size == nil {
		t.Errorf("ready disk: want node aio, 100%%, a size; got %+v", d.Status)
	}
	eventually(t, 30*time.Second, "the disk's Scheduled, Preparing and Ready events", func() bool {
		ev := c.MustKumo(t, kc, "get", "events")
		return strings.Contains(ev, "VMDisk/alone") && strings.Contains(ev, "Scheduled") && strings.Contains(ev, "Preparing") && strings.Contains(ev, "disk ready on node aio")
	})
	// Only the node the disk is placed on reads the key it was prepared with: not the tenant, not
	// the administrator, not another node.
	otherKC := filepath.Join(t.TempDir(), "other.kubeconfig")
	c.MustKumo(t, c.AdminKubeconfig(), "node", "kubeconfig", "other", "-o", otherKC)
	for who, kcPath := range map[string]string{"tenant": kc, "admin": c.AdminKubeconfig(), "node other": otherKC} {
		err := c.Client(t, kcPath).Apps.Get().Namespace(ns).Resource("vmdisks").Name("alone").SubResource("diskkey").Do(ctx).Error()
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s reading vmdisks/alone/diskkey: want 403, got %v", who, err)
		}
	}

	// An upload disk waits for its upload, then is prepared at once, still without a VM.
	up := strings.Replace(httpDisk("uploaded", "x"), "    http:\n      url: x\n", "    upload: {}\n", 1)
	if r := Run(kc, up, bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	eventually(t, time.Minute, "disk uploaded to say it waits for its upload", func() bool {
		d := getDisk(t, cl, ns, "uploaded")
		for _, cond := range d.Status.Conditions {
			if cond.Type == "Scheduled" && cond.Reason == "WaitingForUpload" {
				return d.Status.Node == "" && d.Status.Phase == apps.DiskPending
			}
		}
		return false
	})
	if r := c.Kumo(kc, "upload", "vmdisk", "uploaded", "--file", filepath.Join(dir, "tiny.qcow2")); r.Err != nil {
		t.Fatalf("upload: %s", r)
	}
	eventually(t, 2*time.Minute, "the uploaded disk to become Ready with no VM", func() bool {
		d := getDisk(t, cl, ns, "uploaded")
		return d.Status.Phase == apps.DiskReady && d.Status.Node == "aio"
	})
	// The node fetched the upload (decrypted by the server): once the disk holds it, it goes.
	if _, err := os.Stat(filepath.Join(c.Dir, "uploads", "vmdisks", ns, string(getDisk(t, cl, ns, "uploaded").UID)+".img")); !os.IsNotExist(err) {
		t.Errorf("the staged upload outlives its consumption by a Ready disk: %v", err)
	}

	// A VM created afterwards starts from the ready disk (no import in its start).
	vm := "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: later\nspec:\n  instanceType: s1.small\n  instanceProfile: debian\n  disks:\n  - alone\n"
	if r := Run(kc, vm, bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, cl, ns, "later", "Running", 4*time.Minute, running)
	eventually(t, bootTimeout, "later's guest marker", func() bool {
		return strings.Contains(c.MustKumo(t, kc, "console", "later", "--show-log"), "KUMO-GUEST-READY hostname=later")
	})

	// A hostile image is refused when the disk is created, without any VM.
	if r := Run(kc, httpDisk("hostile", srv.URL+"/hostile.qcow2"), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	eventually(t, 2*time.Minute, "disk hostile to fail with its reason", func() bool {
		d := getDisk(t, cl, ns, "hostile")
		for _, cond := range d.Status.Conditions {
			if d.Status.Phase == apps.DiskFailed && cond.Type == "Ready" && strings.Contains(cond.Message, "backing file") {
				return true
			}
		}
		return false
	})
	if m, _ := filepath.Glob(filepath.Join(c.Dir, "disks", ns, "hostile.*")); len(m) != 0 {
		t.Errorf("the refused import left a disk: %v", m)
	}
	// A VM naming the failed disk is unschedulable with the disk's error.
	bad := "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: onbad\nspec:\n  instanceType: s1.small\n  disks:\n  - hostile\n"
	if r := Run(kc, bad, bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, cl, ns, "onbad", "the failed disk's error", time.Minute, func(vm *apps.VMInstance) bool {
		for _, cond := range vm.Status.Conditions {
			if cond.Type == apps.ConditionScheduled && strings.Contains(cond.Message, "disk hostile failed") && strings.Contains(cond.Message, "backing file") {
				return vm.Status.Node == ""
			}
		}
		return false
	})

	// A slow download: a VM waiting for it says so; deleting the disk cancels the download.
	if r := Run(kc, httpDisk("slow", srv.URL+"/slow.qcow2"), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	select {
	case <-srv.started:
	case <-time.After(time.Minute):
		t.Fatalf("no download of disk slow started without a VM: %+v", getDisk(t, cl, ns, "slow").Status)
	}
	waiter := "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: waiter\nspec:\n  instanceType: s1.small\n  disks:\n  - slow\n"
	if r := Run(kc, waiter, bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, cl, ns, "waiter", "a reason naming the disk it waits for", time.Minute, func(vm *apps.VMInstance) bool {
		for _, cond := range vm.Status.Conditions {
			if cond.Type == apps.ConditionScheduled && cond.Reason == "WaitingForDisk" && strings.HasPrefix(cond.Message, "waiting for disk slow (") {
				return vm.Status.Node == ""
			}
		}
		return false
	})
	c.MustKumo(t, kc, "delete", "vm", "waiter")
	select {
	case <-srv.closed:
		t.Fatal("the download ended before the disk was deleted")
	default:
	}
	c.MustKumo(t, kc, "delete", "vmdisk", "slow")
	select {
	case <-srv.closed:
	case <-time.After(30 * time.Second):
		t.Fatal("deleting disk slow did not close its download within 30 s")
	}
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("disk slow was downloaded %d times, want once", n)
	}
}

// On several nodes, local disks created alone spread across datacenters, and the VMs created
// afterwards run where their disks are.
func TestLocalDisksSpreadAndTheirVMsFollowThem(t *testing.T) {
	needCluster(t)
	needImages(t)
	c := startServer(t, "kumo-2n-")
	for i, dc := range []string{"dc1", "dc2"} {
		c.StartAgent(t, fmt.Sprintf("n%d", i+1), dc, "--cpus", "2", "--memory", "9Gi", "--reserve-memory", "0")
	}
	admin := c.Admin(t)
	eventually(t, time.Minute, "two ready nodes", func() bool { return readyNodes(admin) == 2 })
	kc := c.NewTenant(t, "spreaddisks")
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace("spreaddisks")
	for _, d := range []string{"d1", "d2"} {
		m := fmt.Sprintf("apiVersion: apps.cozystack.io/v1alpha1\nkind: VMDisk\nmetadata:\n  name: %s\nspec:\n  storage: 1Gi\n  storageClass: local\n", d)
		if r := Run(kc, m, bins.kumo, "apply", "-f", "-"); r.Err != nil {
			t.Fatal(r)
		}
	}
	nodes := map[string]string{}
	eventually(t, 2*time.Minute, "both blank disks Ready", func() bool {
		for _, d := range []string{"d1", "d2"} {
			disk := getDisk(t, cl, ns, d)
			if disk.Status.Phase != apps.DiskReady {
				return false
			}
			nodes[d] = disk.Status.Node
		}
		return true
	})
	if nodes["d1"] == nodes["d2"] || nodes["d1"] == "" || nodes["d2"] == "" {
		t.Errorf("two local disks created alone on two idle nodes should spread: %v", nodes)
	}
	for _, d := range []string{"d1", "d2"} {
		m := fmt.Sprintf("apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: vm-%s\nspec:\n  instanceType: s1.small\n  disks:\n  - %s\n", d, d)
		if r := Run(kc, m, bins.kumo, "apply", "-f", "-"); r.Err != nil {
			t.Fatal(r)
		}
	}
	for _, d := range []string{"d1", "d2"} {
		vm := waitVM(t, cl, ns, "vm-"+d, "Running", 3*time.Minute, running)
		if vm.Status.Node != nodes[d] {
			t.Errorf("VM vm-%s runs on %s, its local disk %s is on %s", d, vm.Status.Node, d, nodes[d])
		}
	}
}
