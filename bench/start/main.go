// Command start measures how long Kumo takes from an API create to a running QEMU and to a booted
// guest, against launching the same QEMU command line directly, in the same run.
//
// It starts `kumod all-in-one` (TCG) on loopback ports, creates a tenant, boots one warm-up VM
// whose QEMU command line and files become the baseline's template, then creates --vms VMs one
// after another (a local 1Gi kumo-tiny disk each, created beforehand) and times, from just before
// the VMInstance POST: the QEMU process appearing in /proc (polled every 5ms), status.phase
// Running arriving on a watch, and the guest's KUMO-GUEST-READY line in the serial log the API
// serves (polled every 200ms). Each VM is deleted after its measurement; at most --parallel are
// alive. Then kumod stops and the baseline starts the template's QEMU --vms times itself, timing
// exec, QMP answering, and the marker on the serial socket. With --interleave, each VM is followed
// by one baseline launch instead (kumod stays up), so that load drift hits both sides alike.
//
//	go run ./bench/start            # 50 VMs
//	go run ./bench/start --vms 5    # quick run
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"kumo.dev/kumo/bench/internal/kumoserver"
	kumov1 "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

type options struct {
	vms, parallel     int
	kumod, kumo       string
	imagesDir         string
	keep, interleave  bool
	overheadGoalMilli int
}

func main() {
	var o options
	flag.IntVar(&o.vms, "vms", 50, "VMs to create (and direct QEMU launches of the baseline)")
	flag.IntVar(&o.parallel, "parallel", 2, "VMs alive at once (one measured, the others being deleted)")
	flag.StringVar(&o.kumod, "kumod", "", "kumod binary (default: build ./cmd/kumod into the temp dir)")
	flag.StringVar(&o.kumo, "kumo", "", "kumo binary (default: build ./cmd/kumo into the temp dir)")
	flag.StringVar(&o.imagesDir, "images-dir", "", "golden images directory with kumo-tiny.qcow2 (default: _output/images of the module)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir (kumod data and log, baseline runs)")
	flag.BoolVar(&o.interleave, "interleave", false, "alternate Kumo VMs and baseline launches (kumod stays up) instead of two phases: robust to load drift")
	flag.Parse()
	o.overheadGoalMilli = 150
	if o.vms < 1 || o.parallel < 1 {
		fmt.Fprintln(os.Stderr, "bench/start: --vms and --parallel must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/start:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (err error) {
	tmp, err := os.MkdirTemp("", "kumo-bench-start-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer func() {
		if n := killQEMUsUnder(tmp); n > 0 {
			slog.Info("killed leftover QEMU processes", "count", n)
		}
		if o.keep {
			slog.Info("kept temp dir", "dir", tmp)
		} else {
			os.RemoveAll(tmp)
		}
	}()
	if err := resolvePaths(ctx, &o, tmp); errors.Is(err, kumoserver.ErrNoModule) {
		return fmt.Errorf("%w or pass --kumod, --kumo and --images-dir", err)
	} else if err != nil {
		return err
	}

	dataDir := filepath.Join(tmp, "data")
	// The node is large enough never to refuse a VM for capacity.
	srv, err := kumoserver.Start(o.kumod, dataDir, filepath.Join(tmp, "kumod.log"),
		"--accel", "tcg", "--images-dir", o.imagesDir,
		"--node", "aio", "--datacenter", "dc1", "--cpus", "64", "--memory", "256Gi")
	if err != nil {
		return err
	}
	defer func() {
		if serr := srv.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	if _, err := srv.WaitReady(ctx); err != nil {
		return err
	}
	const tenant = "bench"
	cfg, err := kumoserver.CreateTenant(ctx, o.kumo, srv.Kubeconfig(), tenant, tmp)
	if err != nil {
		return srv.Annotate(err)
	}
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ns := kumov1.TenantNamespace(tenant)
	phases, err := startPhaseWatch(pctx, c, ns)
	if err != nil {
		return srv.Annotate(err)
	}
	b := &kumoBench{c: c, ns: ns, dataDir: dataDir, procs: newProcPoller(pctx, tmp), phases: phases, slots: make(chan struct{}, o.parallel)}

	// Warm-up VM: not counted; its QEMU becomes the baseline's template.
	var tmpl *template
	capture := func(q *qemuProc, runDir string) (err error) {
		tmpl, err = captureTemplate(q, runDir, dataDir, filepath.Join(tmp, "template"))
		return err
	}
	if _, err := b.measure(ctx, "warmup", capture); err != nil {
		return srv.Annotate(fmt.Errorf("warm-up VM: %w", err))
	}
	slog.Info("warm-up VM booted; template captured", "argv", len(tmpl.argv), "files", len(tmpl.files))

	var base []baseSample
	baseline := func(i int) error {
		dir := filepath.Join(tmp, "base", fmt.Sprint(i))
		s, err := runBaseline(ctx, tmpl, dir, dataDir)
		if err != nil {
			return fmt.Errorf("baseline run %d: %w", i, err)
		}
		os.RemoveAll(dir)
		base = append(base, s)
		slog.Info("baseline QEMU", "i", i, "exec", ms(s.exec), "qmp", ms(s.qmp), "marker", ms(s.marker))
		return nil
	}

	kumoCPU := startCPU(os.Getpid(), srv.Pid())
	kumo := make([]kumoSample, 0, o.vms)
	for i := range o.vms {
		s, err := b.measure(ctx, fmt.Sprintf("vm-%d", i), nil)
		if err != nil {
			return srv.Annotate(err)
		}
		kumo = append(kumo, s)
		slog.Info("kumo VM", "i", i, "exec", ms(s.exec), "running", ms(s.running), "marker", ms(s.marker))
		if o.interleave {
			// The baseline QEMU runs alone: Kumo's VM is gone (kumod idles meanwhile).
			if err := b.wait(); err != nil {
				return srv.Annotate(err)
			}
			if err := baseline(i); err != nil {
				return err
			}
		}
	}
	if err := b.wait(); err != nil {
		return srv.Annotate(err)
	}
	load := kumoCPU.shares()
	if !o.interleave {
		cancel()
		// The baseline gets the machine to itself, as Kumo's VMs had it but for kumod.
		if err := srv.Stop(); err != nil {
			return err
		}
		killQEMUsUnder(dataDir)
		baseCPU := startCPU(os.Getpid())
		for i := range o.vms {
			if err := baseline(i); err != nil {
				return err
			}
		}
		load = append(load, baseCPU.shares()...)
	}
	printSummary(o, kumo, base, load)
	return nil
}

// resolvePaths builds missing binaries into tmp and finds the images directory.
func resolvePaths(ctx context.Context, o *options, tmp string) error {
	if o.kumod == "" || o.kumo == "" {
		bins, err := kumoserver.Build(ctx, filepath.Join(tmp, "bin"), "./cmd/kumod", "./cmd/kumo")
		if err != nil {
			return err
		}
		if o.kumod == "" {
			o.kumod = bins["kumod"]
		}
		if o.kumo == "" {
			o.kumo = bins["kumo"]
		}
	}
	if o.imagesDir == "" {
		root, err := kumoserver.ModuleRoot(ctx)
		if err != nil {
			return err
		}
		o.imagesDir = filepath.Join(root, "_output", "images")
	}
	abs, err := filepath.Abs(o.imagesDir)
	if err != nil {
		return err
	}
	o.imagesDir = abs
	if _, err := os.Stat(filepath.Join(abs, guestImage+".qcow2")); err != nil {
		return fmt.Errorf("guest image missing (run make images): %w", err)
	}
	return nil
}

// printSummary prints the table; load is the bench's and kumod's share of a core during the Kumo
// phase and the bench's during the baseline.
func printSummary(o options, kumo []kumoSample, base []baseSample, load []float64) {
	kExec := distOf(column(kumo, func(s kumoSample) time.Duration { return s.exec }))
	kRun := distOf(column(kumo, func(s kumoSample) time.Duration { return s.running }))
	kMark := distOf(column(kumo, func(s kumoSample) time.Duration { return s.marker }))
	bExec := distOf(column(base, func(s baseSample) time.Duration { return s.exec }))
	bQMP := distOf(column(base, func(s baseSample) time.Duration { return s.qmp }))
	bMark := distOf(column(base, func(s baseSample) time.Duration { return s.marker }))

	mode := "two phases"
	if o.interleave {
		mode = "interleaved"
	}
	fmt.Printf("\n== bench/start (%d VMs, parallel %d, %s, TCG, %s %s, image %s 1Gi local)\n", o.vms, o.parallel, mode, instanceType, instanceProfile, guestImage)
	fmt.Printf("%-34s %4s  %10s %10s %10s %10s\n", "measure", "n", "min", "p50", "p95", "max")
	fmt.Println(kExec.row("kumo  create → QEMU process"))
	fmt.Println(kRun.row("kumo  create → phase Running"))
	fmt.Println(kMark.row("kumo  create → guest marker"))
	fmt.Println(bExec.row("qemu  start → process (exec)"))
	fmt.Println(bQMP.row("qemu  start → QMP ready"))
	fmt.Println(bMark.row("qemu  start → guest marker"))

	runOver := kRun.p50 - bQMP.p50
	verdict := "MET"
	if runOver > time.Duration(o.overheadGoalMilli)*time.Millisecond {
		verdict = "MISSED"
	}
	fmt.Printf("overhead p50  running: create→Running − start→QMP ready = %s (goal ≤ %dms: %s); ratio %.2f×\n",
		signedMS(runOver), o.overheadGoalMilli, verdict, ratio(kRun.p50, bQMP.p50))
	fmt.Printf("overhead p50  exec:    create→QEMU process − start→exec = %s\n", signedMS(kExec.p50-bExec.p50))
	fmt.Printf("overhead p50  marker:  create→marker − start→marker = %s; ratio %.2f× (min %s, p95 %s)\n",
		signedMS(kMark.p50-bMark.p50), ratio(kMark.p50, bMark.p50), signedMS(kMark.min-bMark.min), signedMS(kMark.p95-bMark.p95))
	if len(load) == 3 {
		fmt.Printf("CPU besides QEMU (share of one core): kumo phase kumod %.0f%%, bench %.0f%%; baseline phase bench %.0f%%\n",
			100*load[1], 100*load[0], 100*load[2])
	} else {
		fmt.Printf("CPU besides QEMU (share of one core, interleaved run): kumod %.0f%%, bench %.0f%%\n", 100*load[1], 100*load[0])
	}
	fmt.Printf("README: | %d VMs, parallel %d | kumo create→Running p50 %s, p95 %s | qemu start→QMP p50 %s, p95 %s | overhead p50 %s (goal ≤ %dms: %s) | create→QEMU process p50 %s | marker p50 %s vs %s (%.2f×) |\n",
		o.vms, o.parallel, ms(kRun.p50), ms(kRun.p95), ms(bQMP.p50), ms(bQMP.p95), signedMS(runOver), o.overheadGoalMilli, verdict,
		ms(kExec.p50), ms(kMark.p50), ms(bMark.p50), ratio(kMark.p50, bMark.p50))
}
