package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// sshKey returns a fresh OpenSSH public key line.
func sshKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " test@kumo"
}

func newVM(name string, disks ...string) *apps.VMInstance {
	vm := &apps.VMInstance{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       apps.VMInstanceSpec{InstanceType: "u1.medium", InstanceProfile: "ubuntu"},
	}
	for _, d := range disks {
		vm.Spec.Disks = append(vm.Spec.Disks, apps.VMDiskRef{Name: d})
	}
	return vm
}

func newDisk(name, size string, class apps.StorageClass) *apps.VMDisk {
	q := resource.MustParse(size)
	return &apps.VMDisk{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: apps.VMDiskSpec{
			Source:       apps.VMDiskSource{Image: &apps.ImageSource{Name: "kumo-tiny"}},
			Storage:      &q,
			StorageClass: class,
		},
	}
}
