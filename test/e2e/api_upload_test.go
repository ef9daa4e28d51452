package e2e

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// uploadDisk creates a source.upload disk and returns it as stored.
func uploadDisk(t *testing.T, cl *client.Client, ns, name string) *apps.VMDisk {
	t.Helper()
	q := resource.MustParse("1Gi")
	d := &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: apps.VMDiskSpec{Source: apps.VMDiskSource{Upload: &apps.UploadSource{}}, Storage: &q, StorageClass: apps.StorageLocal}}
	got := &apps.VMDisk{}
	if err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Body(d).Do(context.Background()).Into(got); err != nil {
		t.Fatal(err)
	}
	return got
}

// slowUpload starts an upload whose body the test feeds through the returned pipe; the result
// arrives on the channel when the server answers.
func slowUpload(cl *client.Client, ns, name string) (*io.PipeWriter, <-chan error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- cl.Apps.Post().Namespace(ns).Resource("vmdisks").Name(name).SubResource("upload").
			SetHeader("Content-Type", "application/octet-stream").Body(io.Reader(pr)).Do(context.Background()).Error()
		pr.Close()
	}()
	return pw, done
}

// rawImage is a raw disk image of 1 MiB filled with b.
func rawImage(b byte) []byte { return bytes.Repeat([]byte{b}, 1<<20) }

func receivingFiles(dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "uploads", "vmdisks", "*", "*.receiving"))
	return m
}

func TestConcurrentUploadsToOneDiskOneWins(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("upl")
	cl := c.Client(t, c.NewTenant(t, tenant))
	ns := kumo.TenantNamespace(tenant)
	d := uploadDisk(t, cl, ns, "up")
	staged := filepath.Join(c.Dir, "uploads", "vmdisks", ns, string(d.UID)+".img")

	winner, loser := rawImage('A'), rawImage('B')
	pw, first := slowUpload(cl, ns, "up")
	if _, err := pw.Write(winner[:len(winner)/2]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the first upload being received", func() bool {
		_, err := os.Stat(staged + ".receiving")
		return err == nil
	})
	err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Name("up").SubResource("upload").
		SetHeader("Content-Type", "application/octet-stream").Body(loser).Do(ctx).Error()
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "in progress") {
		t.Errorf("second upload while the first runs: want 409, got %v", err)
	}
	if _, err := pw.Write(winner[len(winner)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	select {
	case err := <-first:
		if err != nil {
			t.Fatalf("first upload: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("first upload not answered")
	}
	got, err := os.ReadFile(staged)
	if err != nil {
		t.Fatal(err)
	}
	// Staged sealed with the tenant's key: a 48-byte header, then 16 chunks of 64Ki with their
	// 16-byte tags; no run of the plaintext survives.
	if !bytes.HasPrefix(got, []byte("KUMOSTG1")) || len(got) != 48+len(winner)+16*16 {
		t.Errorf("the accepted file is not the winner's upload sealed (%d bytes, header %q)", len(got), got[:min(8, len(got))])
	}
	if bytes.Contains(got, bytes.Repeat([]byte{'A'}, 32)) || bytes.Contains(got, bytes.Repeat([]byte{'B'}, 32)) {
		t.Error("the staged upload holds the tenant's plaintext")
	}
	if _, err := os.Stat(staged + ".receiving"); !os.IsNotExist(err) {
		t.Errorf("a .receiving file outlives the upload: %v", err)
	}
	// The staged file goes with its disk; a new disk of the same name starts with none.
	if err := cl.Apps.Delete().Namespace(ns).Resource("vmdisks").Name("up").Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(staged); !os.IsNotExist(err) {
		t.Errorf("the staged upload outlives its disk: %v", err)
	}
	again := uploadDisk(t, cl, ns, "up")
	if again.UID == d.UID {
		t.Fatal("same UID for a new disk")
	}
	if m, _ := filepath.Glob(filepath.Join(c.Dir, "uploads", "vmdisks", ns, "*")); len(m) != 0 {
		t.Errorf("staged files for a disk nothing was uploaded to: %v", m)
	}
}

func TestInterruptedUploadIsCleanedAtRestart(t *testing.T) {
	needCluster(t)
	dir := t.TempDir()
	c, err := StartCluster(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			t.Logf("kumod log:\n%s", tail(c.Log(), 40))
		}
	})
	tenant := "cut"
	cl := c.Client(t, c.NewTenant(t, tenant))
	ns := kumo.TenantNamespace(tenant)
	kept := uploadDisk(t, cl, ns, "kept")
	if err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Name("kept").SubResource("upload").
		SetHeader("Content-Type", "application/octet-stream").Body(rawImage('K')).Do(context.Background()).Error(); err != nil {
		t.Fatal(err)
	}
	uploadDisk(t, cl, ns, "cut")
	pw, _ := slowUpload(cl, ns, "cut")
	defer pw.Close()
	if _, err := pw.Write(rawImage('C')[:4096]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the upload being received", func() bool { return len(receivingFiles(dir)) == 1 })
	// A staged upload whose disk is gone (deleted while the server was down) goes too.
	orphan := filepath.Join(dir, "uploads", "vmdisks", ns, "00000000-0000-0000-0000-000000000000.img")
	if err := os.WriteFile(orphan, rawImage('O'), 0o600); err != nil {
		t.Fatal(err)
	}

	// The server dies in the middle of the upload (no graceful shutdown to clean up).
	_ = c.cmd.Process.Kill()
	<-c.done
	if len(receivingFiles(dir)) != 1 {
		t.Fatalf("the cut upload left no .receiving file to clean: %v", receivingFiles(dir))
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if m := receivingFiles(dir); len(m) != 0 {
		t.Errorf("orphaned .receiving files after restart: %v", m)
	}
	eventually(t, 30*time.Second, "the orphaned staged upload removed", func() bool {
		_, err := os.Stat(orphan)
		return os.IsNotExist(err)
	})
	if got, err := os.ReadFile(filepath.Join(dir, "uploads", "vmdisks", ns, string(kept.UID)+".img")); err != nil || !bytes.HasPrefix(got, []byte("KUMOSTG1")) || len(got) != 48+len(rawImage('K'))+16*16 {
		t.Errorf("the staged upload of a live disk must survive the restart: %v", err)
	}
}
