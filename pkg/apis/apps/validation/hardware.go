package validation

import (
	"fmt"
	"regexp"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation/field"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// Limits of spec.resources.
const (
	// MaxVCPUs is the most vCPUs a VM may have (cpu x sockets): QEMU's q35 limit.
	MaxVCPUs = 288
	// minMemoryBytes and maxMemoryBytes bound spec.resources.memory.
	minMemoryBytes = int64(64) << 20
	maxMemoryBytes = int64(4) << 40
	mib            = int64(1) << 20
)

// cpuModelPattern is what QEMU's CPU model names look like (Skylake-Server-v4, EPYC-Rome, qemu64).
var cpuModelPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func validateCPUModel(model string, path *field.Path) field.ErrorList {
	if model == "" || cpuModelPattern.MatchString(model) {
		return nil
	}
	return field.ErrorList{field.Invalid(path, abbreviate(model), "must be a QEMU CPU model name such as host, max, qemu64 or Skylake-Server-v4")}
}

func validateFirmware(fw *apps.Firmware, path *field.Path) field.ErrorList {
	if fw == nil {
		return nil
	}
	var errs field.ErrorList
	if fw.Bootloader != "" && !sets.New(bootloaders...).Has(string(fw.Bootloader)) {
		errs = append(errs, field.NotSupported(path.Child("bootloader"), fw.Bootloader, bootloaders))
	}
	if fw.Bootloader != apps.BootloaderUEFI {
		if fw.SecureBoot {
			errs = append(errs, field.Invalid(path.Child("secureBoot"), true, "Secure Boot is a UEFI feature: set firmware.bootloader: uefi"))
		}
		if fw.EFIPersistent {
			errs = append(errs, field.Invalid(path.Child("efiPersistent"), true, "UEFI variables exist only with UEFI: set firmware.bootloader: uefi"))
		}
	}
	return errs
}

// validateResources checks spec.resources: unset (absent, empty, or only empty strings), or
// cpu and memory (sockets optional), each a valid amount; a block that sizes only part of the VM
// is refused naming the missing field, whether or not an instance type is given.
func validateResources(r *apps.Resources, instanceType string, path *field.Path) field.ErrorList {
	if r == nil || (!r.CPU.IsSet() && !r.Memory.IsSet() && !r.Sockets.IsSet()) {
		return nil
	}
	var errs field.ErrorList
	whole := func(a apps.Amount, p *field.Path, what string) int64 {
		if !a.IsSet() {
			return 0
		}
		q, err := a.Quantity()
		if err != nil {
			errs = append(errs, field.Invalid(p, string(a), fmt.Sprintf("must be a whole number of %s, e.g. 2", what)))
			return 0
		}
		n, ok := q.AsInt64()
		if !ok || n < 1 || n > MaxVCPUs {
			errs = append(errs, field.Invalid(p, string(a), fmt.Sprintf("must be a whole number of %s between 1 and %d", what, MaxVCPUs)))
			return 0
		}
		return n
	}
	cores := whole(r.CPU, path.Child("cpu"), "cores per socket")
	sockets := whole(r.Sockets, path.Child("sockets"), "sockets")
	if cores > 0 && sockets > 0 && cores*sockets > MaxVCPUs {
		errs = append(errs, field.Invalid(path.Child("cpu"), string(r.CPU),
			fmt.Sprintf("cpu x sockets = %d vCPUs, more than the %d a VM may have", cores*sockets, MaxVCPUs)))
	}
	if r.Memory.IsSet() {
		errs = append(errs, validateMemory(r.Memory, path.Child("memory"))...)
	}
	sizes := "resources sizes the VM only with both cpu and memory"
	if instanceType != "" {
		sizes += fmt.Sprintf(" (then overriding instanceType %s); or leave resources empty to size by instanceType", instanceType)
	}
	if !r.CPU.IsSet() {
		errs = append(errs, field.Required(path.Child("cpu"), sizes))
	}
	if !r.Memory.IsSet() {
		errs = append(errs, field.Required(path.Child("memory"), sizes))
	}
	return errs
}

func validateMemory(a apps.Amount, path *field.Path) field.ErrorList {
	q, err := a.Quantity()
	if err != nil {
		return field.ErrorList{field.Invalid(path, string(a), "must be an amount of memory such as 4Gi or 512Mi")}
	}
	lo, hi := resource.NewQuantity(minMemoryBytes, resource.BinarySI), resource.NewQuantity(maxMemoryBytes, resource.BinarySI)
	n, ok := q.AsInt64()
	switch {
	case !ok || n < minMemoryBytes || n > maxMemoryBytes:
		return field.ErrorList{field.Invalid(path, string(a), fmt.Sprintf("must be between %s and %s", lo, hi))}
	case n%mib != 0:
		return field.ErrorList{field.Invalid(path, string(a), "must be a whole number of MiB (e.g. 1536Mi)")}
	}
	return nil
}
