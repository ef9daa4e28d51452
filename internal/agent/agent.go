// Package agent is the node agent: it registers its Node and renews a heartbeat about every
// second, watches the VMInstances bound to its node and runs each incarnation as a detached QEMU
// process (re-attaching after its own restart), reports their status, and serves their serial
// console and VNC to the API server. Everything it writes lives under its data directory.
package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"kumo.dev/kumo/internal/controller/events"
	"kumo.dev/kumo/internal/failover"
	"kumo.dev/kumo/internal/hypervisor/qemu"
	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/ceph"
	"kumo.dev/kumo/internal/storage/golden"
	"kumo.dev/kumo/internal/storage/importer"
	"kumo.dev/kumo/internal/storage/local"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

const (
	// HeartbeatPeriod is how often the agent renews its node's heartbeat.
	HeartbeatPeriod = time.Second
	// resyncPeriod re-examines every VM of the node (QEMU state is also pushed by events).
	resyncPeriod = 5 * time.Second
	// stopGrace is how long a guest gets to power off on ACPI before QEMU is quit.
	stopGrace = 30 * time.Second
	// syncWorkers is how many VMs the agent moves at once.
	syncWorkers = 4
)

// Options configure an agent.
type Options struct {
	// Node and Datacenter name this node.
	Node, Datacenter string
	// DataDir holds run directories, disks, logs and the agent's certificate.
	DataDir string
	// ImagesDir holds golden images (<name>.qcow2).
	ImagesDir string
	// Kubeconfig authenticates the agent as its node.
	Kubeconfig string
	// Servers, when set, replace the kubeconfig's API server URLs; the agent fails over between
	// them (internal/failover).
	Servers []string
	// Accel is "auto", "kvm" or "tcg".
	Accel string
	// QEMU is the qemu-system binary.
	QEMU string
	// CPUs and Memory override the detected capacity (0 = detect); Reserve* are kept for the host.
	CPUs, ReserveCPUs     int64
	Memory, ReserveMemory resource.Quantity
	// ListenAddress is where the stream server (console, VNC) listens, e.g. "127.0.0.1:0";
	// AdvertiseAddress is the address the API server dials (default: the listen host).
	ListenAddress, AdvertiseAddress string
	// CephConf, CephUser and CephPool give the node the replicated storage class (Ceph RBD).
	CephConf, CephUser, CephPool string
	// ImportAllowedNetworks are the internal networks (loopback, private, link-local, the
	// platform's own, ...) tenant disk imports may nonetheless reach; empty: none.
	ImportAllowedNetworks []netip.Prefix
	// ImageImportAllowedNetworks are the same for admin golden-image imports.
	ImageImportAllowedNetworks []netip.Prefix
}

// Agent is a running node agent.
type Agent struct {
	opts Options
	c    *client.Client
	// token is the node token requests carry, renewed by renewCredentials (nil with a certificate).
	token *bearer
	caPEM []byte
	accel string
	qemuV string
	// cpuModels are the CPU models the node's QEMU offers (reported in Node status).
	cpuModels []string
	// recorder records events on disks (import steps, failures, resizes); set by Run.
	recorder record.EventRecorder
	// golden is the node's golden images (see images.go).
	golden *golden.Catalog
	// imageNets are the addresses golden-image downloads may connect to.
	imageNets importer.Networks
	local     *local.Driver
	drives    storage.Drivers

	vms, types, profiles, images cache.SharedIndexInformer
	queue                        workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	running map[string]*runtimeVM // by namespace/name

	endpoint, certPEM string
}

// New checks the options and connects to the API.
func New(opts Options) (*Agent, error) {
	if opts.Node == "" || opts.Datacenter == "" || opts.DataDir == "" {
		return nil, fmt.Errorf("agent needs --node, --datacenter and --data-dir")
	}
	if opts.QEMU == "" {
		opts.QEMU = "qemu-system-x86_64"
	}
	if opts.ImagesDir == "" {
		opts.ImagesDir = filepath.Join(opts.DataDir, "images")
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, err
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: opts.Kubeconfig}
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := loader.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("node credentials %s: %w", opts.Kubeconfig, err)
	}
	serverURLs := opts.Servers
	if len(serverURLs) == 0 {
		if serverURLs, err = failover.KubeconfigServers(loader); err != nil {
			return nil, fmt.Errorf("node credentials %s: %w", opts.Kubeconfig, err)
		}
	}
	if len(serverURLs) == 0 {
		serverURLs = []string{cfg.Host}
	}
	servers, err := failover.NewServers(serverURLs)
	if err != nil {
		return nil, fmt.Errorf("API servers: %w", err)
	}
	failover.Configure(cfg, servers)
	slog.Info("API servers", "servers", servers.URLs())
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "kumo-agent/" + opts.Node
	token := useRenewableToken(cfg)
	c, err := client.New(cfg)
	if err != nil {
		return nil, err
	}
	caPEM := cfg.CAData
	if len(caPEM) == 0 && cfg.CAFile != "" {
		if caPEM, err = os.ReadFile(cfg.CAFile); err != nil {
			return nil, err
		}
	}
	if len(caPEM) == 0 {
		return nil, fmt.Errorf("node credentials carry no cluster CA: the agent could not authenticate the API server's streams")
	}
	var platform []netip.Prefix
	for _, u := range servers.URLs() {
		p, err := platformNetworks(u)
		if err != nil {
			return nil, err
		}
		platform = append(platform, p...)
	}
	cat := &golden.Catalog{Dir: filepath.Join(opts.DataDir, "golden"), ImagesDir: opts.ImagesDir}
	diskNets := importer.Networks{Allowed: opts.ImportAllowedNetworks, Platform: platform}
	loc := &local.Driver{Dir: filepath.Join(opts.DataDir, "disks"), Golden: cat, Networks: diskNets}
	uploads := func(ctx context.Context, ns, name, dst string, progress func(done, total int64)) error {
		return importer.Stream(func(ctx context.Context) (io.ReadCloser, int64, error) {
			rc, err := c.Apps.Get().Namespace(ns).Resource("vmdisks").Name(name).SubResource("upload").Stream(ctx)
			return rc, 0, err
		})(ctx, dst, progress)
	}
	loc.Uploads = uploads
	a := &Agent{token: token,
		opts: opts, c: c, caPEM: caPEM, local: loc, golden: cat,
		imageNets: importer.Networks{Allowed: opts.ImageImportAllowedNetworks, Platform: platform},
		drives:    storage.Drivers{apps.StorageLocal: loc},
		running:   map[string]*runtimeVM{},
		queue:     workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
	}
	if opts.CephConf != "" {
		a.drives[apps.StorageReplicated] = &ceph.Driver{Conf: opts.CephConf, User: opts.CephUser, Pool: opts.CephPool,
			Golden: cat, ScratchDir: filepath.Join(opts.DataDir, "scratch"), Uploads: uploads, Networks: diskNets}
	}
	a.vms = client.NewInformer(c.Apps, "vminstances", &apps.VMInstance{}, "status.node="+opts.Node, 0)
	a.types = client.NewInformer(c.Kumo, "instancetypes", &kumo.InstanceType{}, "", 0)
	a.profiles = client.NewInformer(c.Kumo, "instanceprofiles", &kumo.InstanceProfile{}, "", 0)
	a.images = client.NewInformer(c.Kumo, "goldenimages", &kumo.GoldenImage{}, "", 0)
	cat.Objects = a.goldenObjects
	return a, nil
}

// Config is the agent's REST configuration (its node identity).
func (a *Agent) Config() *rest.Config { return a.c.Config }

// Run runs the agent until ctx ends. VMs keep running when it returns.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.detect(ctx); err != nil {
		return err
	}
	a.recorder = events.NewRecorder(ctx, a.c, "kumo-agent/"+a.opts.Node)
	stream, err := a.startStreamServer(ctx)
	if err != nil {
		return err
	}
	defer stream.Close()
	if err := a.register(ctx); err != nil {
		return err
	}
	go a.heartbeat(ctx)
	go a.renewCredentials(ctx)
	for _, inf := range []cache.SharedIndexInformer{a.vms, a.types, a.profiles, a.images} {
		go inf.Run(ctx.Done())
	}
	enqueue := func(obj interface{}) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			a.queue.Add(key)
		}
	}
	a.vms.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o interface{}) { enqueue(o) }, DeleteFunc: enqueue})
	if !cache.WaitForCacheSync(ctx.Done(), a.vms.HasSynced, a.types.HasSynced, a.profiles.HasSynced, a.images.HasSynced) {
		return ctx.Err()
	}
	a.reattach()
	go a.resync(ctx)
	var diskQueue sync.WaitGroup
	diskQueue.Go(func() { a.runDiskQueue(ctx) })
	imagesChanged := make(chan struct{}, 1)
	poke := func(interface{}) {
		select {
		case imagesChanged <- struct{}{}:
		default:
		}
	}
	a.images.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, o interface{}) { poke(o) }, DeleteFunc: poke})
	go func() {
		for {
			a.cacheImages(ctx)
			select {
			case <-ctx.Done():
				return
			case <-imagesChanged:
			case <-time.After(gcPeriod):
			}
		}
	}()
	go wait.UntilWithContext(ctx, a.collectGarbage, gcPeriod)
	slog.Info("agent ready", "node", a.opts.Node, "datacenter", a.opts.Datacenter, "accel", a.accel, "qemu", a.qemuV)
	go wait.UntilWithContext(ctx, a.pruneLogs, logPrunePeriod)
	go func() { <-ctx.Done(); a.queue.ShutDown() }()
	// Several workers: a VM whose step is slow (a frozen QEMU, a long import) never holds the
	// others. The queue hands a key to one worker at a time, so each VM's steps stay ordered.
	var workers sync.WaitGroup
	for range syncWorkers {
		workers.Go(func() {
			for a.processNext(ctx) {
			}
		})
	}
	workers.Wait()
	diskQueue.Wait() // preparations cancelled by ctx undo what they made before the agent exits
	a.detachAll()
	return nil
}

// processNext syncs the next queued VM; false when the queue shut down.
func (a *Agent) processNext(ctx context.Context) bool {
	key, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(key)
	if err := a.sync(ctx, key); err != nil {
		slog.Warn("sync VM", "vm", key, "err", err)
		a.queue.AddRateLimited(key)
	} else {
		a.queue.Forget(key)
	}
	return true
}

// detect finds the accelerator and QEMU's version.
func (a *Agent) detect(ctx context.Context) error {
	v, err := qemu.Version(ctx, a.opts.QEMU)
	if err != nil {
		return fmt.Errorf("QEMU (%s): %w", a.opts.QEMU, err)
	}
	a.qemuV = v
	if a.cpuModels, err = qemu.CPUModels(ctx, a.opts.QEMU); err != nil {
		return fmt.Errorf("QEMU (%s): %w", a.opts.QEMU, err)
	}
	switch a.opts.Accel {
	case "kvm", "tcg":
		a.accel = a.opts.Accel
	case "", "auto":
		if a.accel, err = qemu.ProbeAccelerator(ctx, a.opts.QEMU); err != nil {
			return fmt.Errorf("probe accelerator: %w", err)
		}
	default:
		return fmt.Errorf("--accel %q: want auto, kvm or tcg", a.opts.Accel)
	}
	return nil
}

// resync queues every VM of the node and every VM with a local run directory.
func (a *Agent) resync(ctx context.Context) {
	t := time.NewTicker(resyncPeriod)
	defer t.Stop()
	for {
		for _, key := range a.vms.GetStore().ListKeys() {
			a.queue.Add(key)
		}
		a.mu.Lock()
		for key := range a.running {
			a.queue.Add(key)
		}
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// platformNetworks are the platform's own addresses imports must not reach unless allowed: those
// the API server's name resolves to (this host's own addresses are refused by the importer).
func platformNetworks(apiHost string) ([]netip.Prefix, error) {
	u, err := url.Parse(apiHost)
	if err != nil || u.Hostname() == "" {
		return nil, fmt.Errorf("API server URL %q: cannot tell its address", apiHost)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", u.Hostname())
	if err != nil {
		return nil, fmt.Errorf("resolve the API server %s (imports must not reach it): %w", u.Hostname(), err)
	}
	var out []netip.Prefix
	for _, ip := range ips {
		ip = ip.Unmap().WithZone("")
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out, nil
}
