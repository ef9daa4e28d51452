package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// readyTimeout bounds one disk's preparation.
const readyTimeout = 15 * time.Minute

// kumoDisks creates disks through the API the way a tenant does and times them.
type kumoDisks struct {
	c  *client.Client
	ns string
}

// create makes a VMDisk (from url, or from a golden image) and a VM using it, and returns the
// time from the VM's creation to the disk being Ready (disks are prepared when a VM first needs
// them). The VM and the disk are deleted afterwards.
func (k *kumoDisks) create(ctx context.Context, name, class, url, image string) (time.Duration, error) {
	size := resource.MustParse("4Gi")
	d := &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: apps.VMDiskSpec{Storage: &size, StorageClass: apps.StorageClass(class)}}
	if url != "" {
		d.Spec.Source.HTTP = &apps.HTTPSource{URL: url}
	} else {
		d.Spec.Source.Image = &apps.ImageSource{Name: image}
	}
	if err := k.c.Apps.Post().Namespace(k.ns).Resource("vmdisks").Body(d).Do(ctx).Error(); err != nil {
		return 0, fmt.Errorf("create VMDisk %s: %w", name, err)
	}
	vm := &apps.VMInstance{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: apps.VMInstanceSpec{InstanceType: "s1.small", InstanceProfile: "debian", Disks: []apps.VMDiskRef{{Name: name}}}}
	t0 := time.Now()
	if err := k.c.Apps.Post().Namespace(k.ns).Resource("vminstances").Body(vm).Do(ctx).Error(); err != nil {
		return 0, fmt.Errorf("create VMInstance %s: %w", name, err)
	}
	took, err := k.waitReady(ctx, name, t0)
	if derr := k.remove(ctx, name); err == nil {
		err = derr
	}
	return took, err
}

func (k *kumoDisks) waitReady(ctx context.Context, name string, t0 time.Time) (time.Duration, error) {
	deadline := t0.Add(readyTimeout)
	for time.Now().Before(deadline) {
		d := &apps.VMDisk{}
		if err := k.c.Apps.Get().Namespace(k.ns).Resource("vmdisks").Name(name).Do(ctx).Into(d); err != nil {
			return 0, err
		}
		switch d.Status.Phase {
		case apps.DiskReady:
			return time.Since(t0), nil
		case apps.DiskFailed:
			return 0, fmt.Errorf("disk %s failed: %+v", name, d.Status.Conditions)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("disk %s not Ready after %s", name, readyTimeout)
}

// remove deletes the VM, then the disk once the VM no longer holds it.
func (k *kumoDisks) remove(ctx context.Context, name string) error {
	if err := k.c.Apps.Delete().Namespace(k.ns).Resource("vminstances").Name(name).Do(ctx).Error(); err != nil {
		return fmt.Errorf("delete VM %s: %w", name, err)
	}
	// The guest has nothing to boot and would ignore the ACPI power button for the agent's whole
	// grace period, spinning under TCG meanwhile: end it now so it does not load the next sample.
	exec.Command("pkill", "-KILL", "-f", "guest="+k.ns+"_"+name+",").Run()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := k.c.Apps.Delete().Namespace(k.ns).Resource("vmdisks").Name(name).Do(ctx).Error()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// plainConvert is the baseline: qemu-img converting the same file (already on this machine) to
// the class's target, plain or, like Kumo's disks, encrypted (the target made and formatted
// beforehand, untimed).
type plainConvert struct {
	src, dir                 string
	cephConf, cephUser, pool string
}

func (p *plainConvert) run(ctx context.Context, class string, encrypted bool) (time.Duration, error) {
	key := filepath.Join(p.dir, "plain.key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef0123456789ab"), 0o600); err != nil {
		return 0, err
	}
	sec := "secret,id=s,file=" + key
	var args, prepare []string
	var cleanup func()
	switch file, img := filepath.Join(p.dir, "plain.qcow2"), p.pool+"/bench-plain"; {
	case class == "local" && !encrypted:
		args, cleanup = []string{"-O", "qcow2", file}, func() { os.Remove(file) }
	case class == "local":
		prepare = []string{"qemu-img", "create", "-q", "-f", "qcow2", "--object", sec, "-o", "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10", file, "4G"}
		args = []string{"-n", "--object", sec, "--target-image-opts", "driver=qcow2,file.filename=" + file + ",encrypt.key-secret=s"}
		cleanup = func() { os.Remove(file) }
	case !encrypted:
		args = []string{"-O", "raw", "rbd:" + img + ":conf=" + p.cephConf + ":id=" + p.cephUser}
	default:
		rbd := "rbd -c " + p.cephConf + " --id " + p.cephUser
		prepare = []string{"sh", "-c", rbd + " create --size 4G " + img + " && " + rbd + " encryption format " + img + " luks2 " + key}
		pool, name, _ := strings.Cut(img, "/")
		args = []string{"-n", "--object", sec, "--target-image-opts", fmt.Sprintf("driver=rbd,pool=%s,image=%s,conf=%s,user=%s,encrypt.format=luks2,encrypt.key-secret=s", pool, name, p.cephConf, p.cephUser)}
	}
	if cleanup == nil {
		cleanup = func() {
			exec.Command("rbd", "-c", p.cephConf, "--id", p.cephUser, "rm", "--no-progress", p.pool+"/bench-plain").Run()
		}
	}
	cleanup()
	defer cleanup()
	if prepare != nil {
		if err := runPBKDF(ctx, prepare...); err != nil {
			return 0, err
		}
	}
	args = append([]string{"convert", "-f", "qcow2", p.src}, args...)
	t0 := time.Now()
	if out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("qemu-img %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return time.Since(t0), nil
}

// runPBKDF runs a command that creates LUKS headers. QEMU times its key derivation on the CPU
// clock and now and then, on a loaded machine, gives up on the measurement: that is retried.
func runPBKDF(ctx context.Context, args ...string) error {
	var out []byte
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if out, err = exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err == nil || !strings.Contains(string(out), "accurate CPU usage") {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// makeImage writes a qcow2 golden image "big" of size bytes, all of it pseudo-random data,
// into dir (the HTTP server serves it from there too).
func makeImage(ctx context.Context, dir string, size int64) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	raw := filepath.Join(dir, "big.raw")
	f, err := os.Create(raw)
	if err != nil {
		return "", err
	}
	_, err = io.CopyN(f, newNoise(), size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("write %s: %w", raw, err)
	}
	defer os.Remove(raw)
	dst := filepath.Join(dir, "big.qcow2")
	if out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, dst).CombinedOutput(); err != nil {
		return "", fmt.Errorf("qemu-img convert: %v: %s", err, out)
	}
	return dst, nil
}

// serve serves dir on a loopback port and returns its URL and a stop function.
func serve(dir string) (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	s := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go s.Serve(l)
	return "http://" + l.Addr().String(), func() { s.Close() }, nil
}
