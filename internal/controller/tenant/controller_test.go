package tenant

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// fakeAPI answers the few requests the tenant controller makes about one namespace: it holds
// VMs and disks by name and records the calls.
type fakeAPI struct {
	mu        sync.Mutex
	nsExists  bool
	vms       map[string]bool
	disks     map[string]bool
	calls     []string
	nsCreated bool
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	w.Header().Set("Content-Type", "application/json")
	notFound := func() {
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure", Reason: metav1.StatusReasonNotFound, Code: 404})
	}
	const appsNS = "/apis/apps.cozystack.io/v1alpha1/namespaces/tenant-x/"
	list := func(kind string, names map[string]bool) {
		items := []map[string]interface{}{}
		for n := range names {
			items = append(items, map[string]interface{}{"metadata": map[string]interface{}{"name": n, "namespace": "tenant-x", "uid": "uid-" + n}})
		}
		_ = json.NewEncoder(w).Encode(map[string]interface{}{"kind": kind, "apiVersion": "apps.cozystack.io/v1alpha1", "metadata": map[string]interface{}{}, "items": items})
	}
	del := func(names map[string]bool, name string) {
		if !names[name] {
			notFound()
			return
		}
		delete(names, name)
		_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Success"})
	}
	switch p := r.URL.Path; {
	case r.Method == http.MethodGet && p == "/api/v1/namespaces/tenant-x":
		if !f.nsExists {
			notFound()
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]interface{}{"kind": "Namespace", "apiVersion": "v1", "metadata": map[string]interface{}{"name": "tenant-x"}})
	case r.Method == http.MethodPost && p == "/api/v1/namespaces":
		f.nsExists, f.nsCreated = true, true
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]interface{}{"kind": "Namespace", "apiVersion": "v1", "metadata": map[string]interface{}{"name": "tenant-x"}})
	case r.Method == http.MethodGet && p == appsNS+"vminstances":
		list("VMInstanceList", f.vms)
	case r.Method == http.MethodGet && p == appsNS+"vmdisks":
		list("VMDiskList", f.disks)
	case r.Method == http.MethodDelete && strings.HasPrefix(p, appsNS+"vminstances/"):
		del(f.vms, strings.TrimPrefix(p, appsNS+"vminstances/"))
	case r.Method == http.MethodDelete && strings.HasPrefix(p, appsNS+"vmdisks/"):
		if len(f.vms) > 0 {
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure", Reason: metav1.StatusReasonConflict, Code: 409})
			return
		}
		del(f.disks, strings.TrimPrefix(p, appsNS+"vmdisks/"))
	default:
		w.WriteHeader(http.StatusNotImplemented)
	}
}

func newTestController(t *testing.T, f *fakeAPI) *Controller {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := client.New(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return &Controller{c: c, labelKey: "kumo.dev/tenant", recorder: record.NewFakeRecorder(10)}
}

func TestNewTenantNamespaceStartsEmptyEvenIfAnEarlierTenantLeftContent(t *testing.T) {
	f := &fakeAPI{vms: map[string]bool{"old-vm": true}, disks: map[string]bool{"old-disk": true}}
	ctl := newTestController(t, f)
	tn := &kumo.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "x", UID: "new-uid"}}
	ctx := context.Background()
	// Until the leftovers are gone the namespace is not created; each pass moves one step.
	for i := 0; i < 5 && !f.nsCreated; i++ {
		_ = ctl.createNamespace(ctx, tn, kumo.TenantNamespace("x"))
	}
	if !f.nsCreated {
		t.Fatalf("namespace never created; calls: %v", f.calls)
	}
	if len(f.vms)+len(f.disks) > 0 {
		t.Fatalf("the new tenant's namespace was created holding %v %v of the old one", f.vms, f.disks)
	}
}

func TestExistingNamespaceIsNeverSwept(t *testing.T) {
	f := &fakeAPI{nsExists: true, vms: map[string]bool{"live-vm": true}, disks: map[string]bool{}}
	ctl := newTestController(t, f)
	if err := ctl.createNamespace(context.Background(), &kumo.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, "tenant-x"); err != nil {
		t.Fatal(err)
	}
	if !f.vms["live-vm"] {
		t.Fatalf("a live namespace's VM was deleted; calls: %v", f.calls)
	}
}

func TestRemoveContentDeletesVMsBeforeDisks(t *testing.T) {
	f := &fakeAPI{nsExists: true, vms: map[string]bool{"v": true}, disks: map[string]bool{"d": true}}
	ctl := newTestController(t, f)
	err := ctl.removeContent(context.Background(), "tenant-x")
	if _, ok := err.(*contentRemaining); !ok {
		t.Fatalf("first pass: want content remaining (the disks wait for the VMs), got %v", err)
	}
	if len(f.vms) != 0 || !f.disks["d"] {
		t.Fatalf("first pass: VMs %v disks %v", f.vms, f.disks)
	}
	for _, c := range f.calls {
		if strings.HasPrefix(c, "DELETE") && strings.Contains(c, "vmdisks") {
			t.Errorf("a disk delete was tried while a VM remained: %s", c)
		}
	}
	if err := ctl.removeContent(context.Background(), "tenant-x"); err == nil {
		t.Fatal("second pass deleted the disk but said nothing remained")
	}
	if err := ctl.removeContent(context.Background(), "tenant-x"); err != nil || len(f.disks) != 0 {
		t.Fatalf("third pass: %v, disks %v", err, f.disks)
	}
}
