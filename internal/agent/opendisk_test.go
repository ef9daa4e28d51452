package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"kumo.dev/kumo/internal/storage"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// recordingDriver is a storage driver whose Open answers what the test says and which records
// whether anything was created.
type recordingDriver struct {
	// createBlocks makes Create wait for its context, then take undoTime to remove what it made.
	createBlocks bool
	undoTime     time.Duration
	undone       chan struct{}
	openErr      error
	// missingUntilCreated: Open says ErrNotFound until Create succeeded.
	missingUntilCreated bool
	// createErrs are the errors of the first calls to Create, one per call.
	createErrs    []error
	mu            sync.Mutex
	created       []string
	failedCreates int
	opened        int
}

func (d *recordingDriver) Info() storage.Info { return storage.Info{Name: "local"} }
func (d *recordingDriver) Open(context.Context, *apps.VMDisk, storage.Key) (storage.Volume, error) {
	d.mu.Lock()
	d.opened++
	missing := d.missingUntilCreated && len(d.created) <= d.failedCreates
	d.mu.Unlock()
	if missing {
		return storage.Volume{}, storage.ErrNotFound
	}
	if d.openErr != nil {
		return storage.Volume{}, d.openErr
	}
	return storage.Volume{Driver: "file", Path: "/nonexistent/disk.qcow2", Format: "qcow2", SizeBytes: 1 << 30}, nil
}
func (d *recordingDriver) Create(ctx context.Context, req storage.Request) (storage.Volume, error) {
	d.mu.Lock()
	d.created = append(d.created, req.Disk.Name)
	if len(d.createErrs) > 0 {
		err := d.createErrs[0]
		d.createErrs = d.createErrs[1:]
		d.failedCreates++
		d.mu.Unlock()
		return storage.Volume{}, err
	}
	d.mu.Unlock()
	if d.createBlocks {
		<-ctx.Done()
		time.Sleep(d.undoTime) // removing the half-made image
		close(d.undone)
		return storage.Volume{}, ctx.Err()
	}
	return storage.Volume{Driver: "file", Path: "/nonexistent/new.qcow2", Format: "qcow2", SizeBytes: 1 << 30}, nil
}
func (d *recordingDriver) Delete(context.Context, string, string) error { return nil }
func (d *recordingDriver) List(context.Context) (map[string][]string, error) {
	return nil, nil
}

// fakeDiskAPI serves one VMDisk and records the status it is sent.
type fakeDiskAPI struct {
	mu       sync.Mutex
	disk     *apps.VMDisk
	statuses []apps.VMDiskStatus
	// failPuts is how many status writes still fail (503).
	failPuts int
}

func (f *fakeDiskAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	path := "/apis/apps.cozystack.io/v1alpha1/namespaces/" + f.disk.Namespace + "/vmdisks/" + f.disk.Name
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/apis/apps.cozystack.io/v1alpha1/vmdisks" && r.URL.Query().Get("watch") == "true":
		// A watch that sends the disk (and, for a streamed list, the end of the initial events),
		// then nothing until the client goes.
		w.WriteHeader(http.StatusOK)
		if r.URL.Query().Get("sendInitialEvents") == "true" {
			enc := json.NewEncoder(w)
			enc.Encode(map[string]any{"type": "ADDED", "object": f.disk})
			enc.Encode(map[string]any{"type": "BOOKMARK", "object": &apps.VMDisk{TypeMeta: f.disk.TypeMeta,
				ObjectMeta: metav1.ObjectMeta{ResourceVersion: "10", Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}}})
		}
		w.(http.Flusher).Flush()
		f.mu.Unlock()
		<-r.Context().Done()
		f.mu.Lock()
	case r.Method == http.MethodGet && r.URL.Path == "/apis/apps.cozystack.io/v1alpha1/vmdisks":
		json.NewEncoder(w).Encode(&apps.VMDiskList{TypeMeta: metav1.TypeMeta{APIVersion: "apps.cozystack.io/v1alpha1", Kind: "VMDiskList"},
			ListMeta: metav1.ListMeta{ResourceVersion: "10"}, Items: []apps.VMDisk{*f.disk}})
	case r.Method == http.MethodGet && r.URL.Path == path+"/diskkey":
		json.NewEncoder(w).Encode(&kumo.TenantKey{TypeMeta: metav1.TypeMeta{APIVersion: "kumo.dev/v1alpha1", Kind: "TenantKey"}, Key: "0123456789abcdef"})
	case r.Method == http.MethodGet && r.URL.Path == path:
		json.NewEncoder(w).Encode(f.disk)
	case r.Method == http.MethodPut && r.URL.Path == path+"/status" && f.failPuts > 0:
		f.failPuts--
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonServiceUnavailable, Code: http.StatusServiceUnavailable})
	case r.Method == http.MethodPut && r.URL.Path == path+"/status":
		body, _ := io.ReadAll(r.Body)
		d := &apps.VMDisk{}
		if err := json.Unmarshal(body, d); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.statuses = append(f.statuses, d.Status)
		f.disk = d
		json.NewEncoder(w).Encode(d)
	default:
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: http.StatusNotFound})
	}
}

// startAgentWithDisk is an agent of node n1 whose API holds one Ready local disk "data" of
// tenant namespace t, used by VM "vm".
func startAgentWithDisk(t *testing.T, drv storage.Driver) (*Agent, *fakeDiskAPI, *apps.VMInstance) {
	t.Helper()
	size := resource.MustParse("1Gi")
	api := &fakeDiskAPI{disk: &apps.VMDisk{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps.cozystack.io/v1alpha1", Kind: "VMDisk"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: "data", UID: types.UID("11111111-2222"), ResourceVersion: "5"},
		Spec:       apps.VMDiskSpec{StorageClass: apps.StorageLocal, Storage: &size},
		Status:     apps.VMDiskStatus{Phase: apps.DiskReady, Node: "n1", Size: &size},
	}}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	c, err := client.New(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	instanceTypes := cache.NewStore(cache.MetaNamespaceKeyFunc)
	instanceTypes.Add(&kumo.InstanceType{ObjectMeta: metav1.ObjectMeta{Name: "s1.small"}, Spec: kumo.InstanceTypeSpec{CPUs: 1, Memory: resource.MustParse("256Mi")}})
	a := &Agent{opts: Options{Node: "n1", DataDir: t.TempDir()}, c: c, types: storeInformer{store: instanceTypes},
		drives: storage.Drivers{apps.StorageLocal: drv}}
	vm := &apps.VMInstance{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: "vm", UID: types.UID("0b6c7a3e-2a44-4d55-9d0e-8e2b1c3d4e5f")},
		Spec: apps.VMInstanceSpec{InstanceType: "s1.small", Disks: []apps.VMDiskRef{{Name: "data"}}}}
	return a, api, vm
}

// A VM start opens its Ready disks only: when the node does not find a Ready disk's data, the
// start fails and nothing is created in its place (a blank or freshly imported disk would hide
// the loss of the tenant's data).
func TestStartNeverCreatesAReadyDiskWhoseDataIsMissing(t *testing.T) {
	drv := &recordingDriver{openErr: storage.ErrNotFound}
	a, api, vm := startAgentWithDisk(t, drv)
	_, err := a.qemuConfig(context.Background(), vm, a.runDir(string(vm.UID)), storage.Key{File: "/nonexistent/key"})
	if len(drv.created) != 0 {
		t.Fatalf("the start created disks %v in place of a Ready disk's missing data (err = %v)", drv.created, err)
	}
	if err == nil || !strings.Contains(err.Error(), "data") || !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("start with a Ready disk whose data is missing: err = %v, want an error naming disk data that wraps ErrNotFound", err)
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if api.disk.Status.Phase != apps.DiskReady {
		t.Fatalf("disk phase after the failed start = %s, want Ready", api.disk.Status.Phase)
	}
}

// A transient failure to open a Ready disk at a VM start fails that start only: the disk stays
// Ready (Failed is for good: the scheduler would never place a VM with it again).
func TestStartFailureToOpenLeavesTheDiskReady(t *testing.T) {
	drv := &recordingDriver{openErr: errors.New("rbd: exit status 110 (connection timed out)")}
	a, api, vm := startAgentWithDisk(t, drv)
	_, err := a.qemuConfig(context.Background(), vm, a.runDir(string(vm.UID)), storage.Key{File: "/nonexistent/key"})
	if err == nil || !strings.Contains(err.Error(), "data") || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("start with a disk that cannot be opened: err = %v, want the cause naming disk data", err)
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	for _, st := range api.statuses {
		if st.Phase != apps.DiskReady {
			t.Fatalf("a failed start reported disk phase %s: the disk's data is intact, it must stay Ready", st.Phase)
		}
	}
	if len(drv.created) != 0 {
		t.Fatalf("the start created disks %v", drv.created)
	}
}

// The disk queue acts on the disk as the API has it, not as its watch last showed it: a disk its
// watch still shows Importing (the Ready update not delivered yet) but that is Ready, perhaps in
// use by a VM, is not prepared again, and a failure to look at it again never marks it Failed.
func TestDiskQueueLeavesADiskThatIsReadyAlone(t *testing.T) {
	drv := &recordingDriver{openErr: errors.New(`qemu-img resize: Failed to get "write" lock`)}
	a, api, _ := startAgentWithDisk(t, drv)
	stale := api.disk.DeepCopy()
	stale.Status.Phase, stale.Status.Progress = apps.DiskImporting, "95%"
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	store.Add(stale)
	q := &diskQueue{a: a, inf: storeInformer{store: store}, active: map[string]preparation{},
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())}
	defer q.queue.ShutDown()
	if err := q.prepare(context.Background(), "t/data"); err != nil {
		t.Fatal(err)
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if api.disk.Status.Phase != apps.DiskReady {
		t.Fatalf("a Ready disk the watch showed as importing ended %s: %+v", api.disk.Status.Phase, api.disk.Status.Conditions)
	}
	drv.mu.Lock()
	defer drv.mu.Unlock()
	if drv.opened != 0 || len(drv.created) != 0 {
		t.Fatalf("the disk queue opened (%d) or created (%v) a disk that is Ready", drv.opened, drv.created)
	}
}

// A tenant key written for a preparation that an agent crash interrupted does not stay on disk:
// the next run removes it before preparing anything.
func TestLeftoverPreparationKeysAreRemoved(t *testing.T) {
	a := &Agent{opts: Options{Node: "n1", DataDir: t.TempDir()}}
	dir := filepath.Join(a.opts.DataDir, "prepare", "11111111-2222")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "disk.key")
	if err := os.WriteFile(key, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.removeLeftoverKeys()
	if _, err := os.Stat(key); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("key %s left by an interrupted preparation: stat err = %v, want it removed", key, err)
	}
}

// A disk prepared while its Ready status could not be written is not left Importing for ever
// (no VM would ever be bound to it): the failed report fails the preparation, which the queue
// retries, and the retry finds the disk made and reports it Ready.
func TestAFailedReadyReportIsRetried(t *testing.T) {
	drv := &recordingDriver{missingUntilCreated: true}
	a, api, _ := startAgentWithDisk(t, drv)
	api.disk.Status = apps.VMDiskStatus{Phase: apps.DiskPending, Node: "n1"}
	api.failPuts = 1
	key := storage.Key{File: "/nonexistent/key"}
	if err := a.prepareDisk(context.Background(), "t", "data", key); err == nil {
		t.Fatal("prepareDisk succeeded although the disk's Ready status was never written")
	}
	if err := a.prepareDisk(context.Background(), "t", "data", key); err != nil {
		t.Fatal(err)
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if api.disk.Status.Phase != apps.DiskReady {
		t.Fatalf("disk phase after the retry = %s, want Ready", api.disk.Status.Phase)
	}
	if len(drv.created) != 1 {
		t.Fatalf("disk created %d times, want once", len(drv.created))
	}
}

// When the agent stops, the disk queue returns only once its preparations have ended: a
// cancelled preparation removes what it made (a half-filled RBD image lives under the disk's
// own name) before the agent exits; otherwise the next run would find the image and report the
// half-imported disk Ready.
func TestDiskQueueReturnsOnlyOnceItsPreparationsEnded(t *testing.T) {
	drv := &recordingDriver{missingUntilCreated: true, createBlocks: true, undoTime: 200 * time.Millisecond, undone: make(chan struct{})}
	a, api, _ := startAgentWithDisk(t, drv)
	api.disk.Status = apps.VMDiskStatus{Phase: apps.DiskPending, Node: "n1"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	returned := make(chan struct{})
	go func() { a.runDiskQueue(ctx); close(returned) }()
	// Wait for the preparation to be under way.
	for deadline := time.Now().Add(30 * time.Second); ; {
		drv.mu.Lock()
		n := len(drv.created)
		drv.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the disk queue did not start preparing the disk")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-returned:
	case <-time.After(30 * time.Second):
		t.Fatal("the disk queue did not return after its context ended")
	}
	select {
	case <-drv.undone:
	default:
		t.Fatal("the disk queue returned while a cancelled preparation was still removing what it made")
	}
}
