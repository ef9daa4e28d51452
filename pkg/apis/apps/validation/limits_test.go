package validation

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// The reproduction: 20,000 SSH keys (1.8 MB) reached etcd and failed there with a 500.
// Too many keys is a 422 at spec.sshKeys, before any key is parsed.
func TestTwentyThousandSSHKeysAreRefusedAtTheField(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := sshKey(t, pub)
	vm := newVM(func(vm *apps.VMInstance) {
		for i := 0; i < 20000; i++ {
			vm.Spec.SSHKeys = append(vm.Spec.SSHKeys, key)
		}
	})
	assertErrors(t, ValidateVMInstance(vm), wantErr{field.ErrorTypeTooMany, "spec.sshKeys"})

	vm.Spec.SSHKeys = vm.Spec.SSHKeys[:MaxSSHKeys]
	assertErrors(t, ValidateVMInstance(vm))
}

func TestOversizedSSHKeysAreRefused(t *testing.T) {
	huge := "ssh-ed25519 " + strings.Repeat("A", MaxSSHKeyBytes)
	vm := newVM(func(vm *apps.VMInstance) { vm.Spec.SSHKeys = []string{huge} })
	assertErrors(t, ValidateVMInstance(vm), wantErr{field.ErrorTypeTooLong, "spec.sshKeys[0]"})

	// 40 keys of 3.5 KiB each: each fits, together they pass 128 KiB.
	big := "ssh-rsa " + strings.Repeat("A", 3500)
	vm = newVM(func(vm *apps.VMInstance) {
		for i := 0; i < 40; i++ {
			vm.Spec.SSHKeys = append(vm.Spec.SSHKeys, big)
		}
	})
	assertErrors(t, ValidateVMInstance(vm), wantErr{field.ErrorTypeTooLong, "spec.sshKeys"})
}

func TestLocalDisksAreCappedAt16Ti(t *testing.T) {
	local := newDisk(func(d *apps.VMDisk) { d.Spec.StorageClass = apps.StorageLocal; d.Spec.Storage = qty("17Ti") })
	assertErrors(t, ValidateVMDisk(local), wantErr{field.ErrorTypeInvalid, "spec.storage"})
	local.Spec.Storage = qty("16Ti")
	assertErrors(t, ValidateVMDisk(local))
	replicated := newDisk(func(d *apps.VMDisk) { d.Spec.Storage = qty("17Ti") })
	assertErrors(t, ValidateVMDisk(replicated))
}
