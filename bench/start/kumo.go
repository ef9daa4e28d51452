package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

const (
	// bootTimeout bounds one VM's way from create to its guest's marker under TCG.
	bootTimeout = 3 * time.Minute
	// goneTimeout bounds a deleted VM's QEMU shutdown (Kumo allows the guest 30s for ACPI).
	goneTimeout = 2 * time.Minute
	// consolePoll is the pause between reads of the serial log through the API.
	consolePoll = 200 * time.Millisecond

	instanceType    = "s1.small"
	instanceProfile = "debian"
	guestImage      = "kumo-tiny"
	marker          = "KUMO-GUEST-READY"
)

// kumoSample is one VM's timings, each from just before its create request was sent.
type kumoSample struct {
	exec    time.Duration // a qemu-system process for the VM appeared in /proc
	running time.Duration // the watch delivered status.phase Running (Kumo waited for QMP)
	marker  time.Duration // the guest's marker line was in the serial log the API serves
}

// kumoBench creates, measures and deletes VMs through the API.
type kumoBench struct {
	c       *client.Client
	ns      string
	dataDir string
	procs   *procPoller
	phases  *phaseWatch
	slots   chan struct{} // one per VM alive (measured or being deleted)
	wg      sync.WaitGroup

	mu     sync.Mutex
	delErr error
}

// measure runs VM name through its life: disk, create, QEMU, Running, marker; then deletes it in
// the background. onExec, when set, is called as soon as the VM's QEMU is seen.
func (b *kumoBench) measure(ctx context.Context, name string, onExec func(q *qemuProc, runDir string) error) (kumoSample, error) {
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		return kumoSample{}, ctx.Err()
	}
	b.mu.Lock()
	delErr := b.delErr
	b.mu.Unlock()
	if delErr != nil {
		<-b.slots
		return kumoSample{}, delErr
	}
	disk := "d-" + name // never reused: Kumo keeps a deleted local disk's file (see report)
	var s kumoSample
	uid, err := b.boot(ctx, name, disk, &s, onExec)
	b.wg.Add(1)
	go b.remove(ctx, name, disk, uid)
	return s, err
}

func (b *kumoBench) boot(ctx context.Context, name, disk string, s *kumoSample, onExec func(*qemuProc, string) error) (string, error) {
	size := resource.MustParse("1Gi")
	d := &apps.VMDisk{
		ObjectMeta: metav1.ObjectMeta{Name: disk},
		Spec: apps.VMDiskSpec{Source: apps.VMDiskSource{Image: &apps.ImageSource{Name: guestImage}},
			Storage: &size, StorageClass: apps.StorageLocal},
	}
	if err := b.c.Apps.Post().Namespace(b.ns).Resource("vmdisks").Body(d).Do(ctx).Error(); err != nil {
		return "", fmt.Errorf("create VMDisk %s: %w", disk, err)
	}
	vm := &apps.VMInstance{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: apps.VMInstanceSpec{InstanceType: instanceType, InstanceProfile: instanceProfile,
			Disks: []apps.VMDiskRef{{Name: disk}}},
	}
	created := &apps.VMInstance{}
	t0 := time.Now()
	if err := b.c.Apps.Post().Namespace(b.ns).Resource("vminstances").Body(vm).Do(ctx).Into(created); err != nil {
		return "", fmt.Errorf("create VMInstance %s: %w", name, err)
	}
	uid := string(created.UID)
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()

	// The agent's run directory is DATA/run/<first 13 characters of the UID>.
	runDir := filepath.Join(b.dataDir, "run", uid[:min(13, len(uid))])
	q, err := b.procs.waitStarted(ctx, runDir+"/")
	if err != nil {
		return uid, fmt.Errorf("VM %s: no QEMU process: %w", name, err)
	}
	s.exec = q.firstSeen.Sub(t0)
	if onExec != nil {
		if err := onExec(q, runDir); err != nil {
			return uid, err
		}
	}
	at, err := b.phases.waitRunning(ctx, name)
	if err != nil {
		return uid, err
	}
	s.running = at.Sub(t0)

	var lastErr error
	for {
		res := b.c.Apps.Get().Namespace(b.ns).Resource("vminstances").Name(name).
			SubResource("console").Param("showLog", "true").Do(ctx)
		if lastErr = res.Error(); lastErr == nil {
			raw, _ := res.Raw()
			if bytes.Contains(raw, []byte(marker)) {
				s.marker = time.Since(t0)
				return uid, nil
			}
		}
		select {
		case <-ctx.Done():
			return uid, fmt.Errorf("VM %s: no %s on the serial console (timeout %s): %w (last error: %v)", name, marker, bootTimeout, ctx.Err(), lastErr)
		case <-time.After(consolePoll):
		}
	}
}

// remove deletes the VM, waits for its QEMU to be gone, deletes the disk and frees the slot.
func (b *kumoBench) remove(ctx context.Context, name, disk, uid string) {
	defer b.wg.Done()
	defer func() { <-b.slots }()
	err := b.c.Apps.Delete().Namespace(b.ns).Resource("vminstances").Name(name).Do(ctx).Error()
	if err != nil && !apierrors.IsNotFound(err) {
		b.fail(fmt.Errorf("delete VMInstance %s: %w", name, err))
		return
	}
	if uid != "" {
		gctx, cancel := context.WithTimeout(ctx, goneTimeout)
		err := b.procs.waitGone(gctx, filepath.Join(b.dataDir, "run", uid[:min(13, len(uid))])+"/")
		cancel()
		if err != nil {
			b.fail(fmt.Errorf("QEMU of deleted VM %s still runs after %s: %w", name, goneTimeout, err))
			return
		}
	}
	// The VM object goes once its node reported the incarnation's end (finalizer
	// kumo.dev/incarnation); until then it holds the disk.
	for deadline := time.Now().Add(goneTimeout); ; {
		err = b.c.Apps.Get().Namespace(b.ns).Resource("vminstances").Name(name).Do(ctx).Error()
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			b.fail(fmt.Errorf("deleted VMInstance %s still present after %s (%v)", name, goneTimeout, err))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(consolePoll):
		}
	}
	err = b.c.Apps.Delete().Namespace(b.ns).Resource("vmdisks").Name(disk).Do(ctx).Error()
	if err != nil && !apierrors.IsNotFound(err) {
		b.fail(fmt.Errorf("delete VMDisk %s: %w", disk, err))
	}
}

func (b *kumoBench) fail(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	slog.Error("cleanup", "err", err)
	b.mu.Lock()
	if b.delErr == nil {
		b.delErr = err
	}
	b.mu.Unlock()
}

// wait waits for the background deletions and returns their first error.
func (b *kumoBench) wait() error {
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.delErr
}
