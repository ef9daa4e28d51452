package apiserver

import (
	"context"
	"fmt"

	apiequality "k8s.io/apimachinery/pkg/api/equality"

	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"kumo.dev/kumo/internal/apiserver/registry"
	"kumo.dev/kumo/internal/quota"
	appsvalidation "kumo.dev/kumo/pkg/apis/apps/validation"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

func instanceTypeKind() *registry.Kind {
	it := func(o runtime.Object) *kumo.InstanceType { return o.(*kumo.InstanceType) }
	validate := func(_ context.Context, o runtime.Object) field.ErrorList {
		t := it(o)
		errs := apimachineryvalidation.ValidateObjectMeta(&t.ObjectMeta, false, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
		spec := field.NewPath("spec")
		if t.Spec.CPUs < 1 || t.Spec.CPUs > 1024 {
			errs = append(errs, field.Invalid(spec.Child("cpus"), t.Spec.CPUs, "must be between 1 and 1024"))
		}
		if t.Spec.Memory.Value() < 64<<20 {
			errs = append(errs, field.Invalid(spec.Child("memory"), t.Spec.Memory.String(), "must be at least 64Mi"))
		}
		return errs
	}
	return &registry.Kind{
		Resource: kumo.Resource("instancetypes"), Singular: "instancetype", ShortNames: []string{"it"},
		Categories: []string{"kumo"}, Version: kumo.SchemeGroupVersion.Version,
		New:      func() runtime.Object { return &kumo.InstanceType{} },
		NewList:  func() runtime.Object { return &kumo.InstanceTypeList{} },
		Validate: validate,
		Table: registry.Table{
			{Name: "Series", Type: "string", Value: func(o runtime.Object) interface{} { return registry.OrNone(it(o).Spec.Series) }},
			{Name: "vCPU", Type: "integer", Value: func(o runtime.Object) interface{} { return it(o).Spec.CPUs }},
			{Name: "Memory", Type: "string", Value: func(o runtime.Object) interface{} { return it(o).Spec.Memory.String() }},
			{Name: "Description", Type: "string", Priority: 1, Value: func(o runtime.Object) interface{} { return it(o).Spec.Description }},
		},
	}
}

var (
	diskBuses = []string{"virtio", "scsi", "sata"}
	nicModels = []string{"virtio", "e1000e", "e1000"}
	clocks    = []string{"utc", "localtime"}
)

func instanceProfileKind() *registry.Kind {
	ip := func(o runtime.Object) *kumo.InstanceProfile { return o.(*kumo.InstanceProfile) }
	validate := func(_ context.Context, o runtime.Object) field.ErrorList {
		p := ip(o)
		errs := apimachineryvalidation.ValidateObjectMeta(&p.ObjectMeta, false, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
		spec := field.NewPath("spec")
		oneOf := func(name, v string, allowed []string) {
			if !sets.New(allowed...).Has(v) {
				errs = append(errs, field.NotSupported(spec.Child(name), v, allowed))
			}
		}
		oneOf("osType", string(p.Spec.OSType), []string{string(kumo.OSLinux), string(kumo.OSWindows)})
		oneOf("firmware", string(p.Spec.Firmware), []string{string(kumo.FirmwareBIOS), string(kumo.FirmwareUEFI)})
		oneOf("machine", p.Spec.Machine, []string{"q35", "pc"})
		oneOf("diskBus", p.Spec.DiskBus, diskBuses)
		oneOf("nicModel", p.Spec.NICModel, nicModels)
		oneOf("clock", p.Spec.Clock, clocks)
		return errs
	}
	return &registry.Kind{
		Resource: kumo.Resource("instanceprofiles"), Singular: "instanceprofile", ShortNames: []string{"ip"},
		Categories: []string{"kumo"}, Version: kumo.SchemeGroupVersion.Version,
		New:      func() runtime.Object { return &kumo.InstanceProfile{} },
		NewList:  func() runtime.Object { return &kumo.InstanceProfileList{} },
		Validate: validate,
		Table: registry.Table{
			{Name: "OS", Type: "string", Value: func(o runtime.Object) interface{} { return string(ip(o).Spec.OSType) }},
			{Name: "Firmware", Type: "string", Value: func(o runtime.Object) interface{} { return string(ip(o).Spec.Firmware) }},
			{Name: "Disk", Type: "string", Value: func(o runtime.Object) interface{} { return ip(o).Spec.DiskBus }},
			{Name: "NIC", Type: "string", Value: func(o runtime.Object) interface{} { return ip(o).Spec.NICModel }},
			{Name: "Machine", Type: "string", Priority: 1, Value: func(o runtime.Object) interface{} { return ip(o).Spec.Machine }},
		},
	}
}

// maxTenantName keeps tenant-<name> within a 63-character DNS label.
const maxTenantName = 63 - len(kumo.TenantNamespacePrefix)

func tenantKind() *registry.Kind {
	tn := func(o runtime.Object) *kumo.Tenant { return o.(*kumo.Tenant) }
	validate := func(_ context.Context, o runtime.Object) field.ErrorList {
		t := tn(o)
		errs := apimachineryvalidation.ValidateObjectMeta(&t.ObjectMeta, false, apimachineryvalidation.NameIsDNSLabel, field.NewPath("metadata"))
		if len(t.Name) > maxTenantName {
			errs = append(errs, field.TooLong(field.NewPath("metadata", "name"), t.Name, maxTenantName))
		}
		return append(errs, quota.Validate(t.Spec.Quota, field.NewPath("spec", "quota"))...)
	}
	return &registry.Kind{
		Resource: kumo.Resource("tenants"), Singular: "tenant", Categories: []string{"kumo"},
		HasStatus: true, Version: kumo.SchemeGroupVersion.Version,
		New:     func() runtime.Object { return &kumo.Tenant{} },
		NewList: func() runtime.Object { return &kumo.TenantList{} },
		PrepareForCreate: func(o runtime.Object) {
			t := tn(o)
			if !sets.New(t.Finalizers...).Has(kumo.TenantFinalizer) {
				t.Finalizers = append(t.Finalizers, kumo.TenantFinalizer)
			}
			t.Status = kumo.TenantStatus{Phase: kumo.TenantPending, Namespace: kumo.TenantNamespace(t.Name)}
			kumo.SetDefaultsTenantQuota(&t.Spec.Quota)
		},
		PrepareForUpdate: func(o, _ runtime.Object) { kumo.SetDefaultsTenantQuota(&tn(o).Spec.Quota) },
		Validate:         validate,
		ValidateUpdate: func(ctx context.Context, o, old runtime.Object) field.ErrorList {
			errs := apimachineryvalidation.ValidateObjectMetaUpdate(&tn(o).ObjectMeta, &tn(old).ObjectMeta, field.NewPath("metadata"))
			return append(errs, validate(ctx, o)...)
		},
		Table: registry.Table{
			{Name: "Phase", Type: "string", Value: func(o runtime.Object) interface{} { return string(tn(o).Status.Phase) }},
			{Name: "Namespace", Type: "string", Value: func(o runtime.Object) interface{} { return registry.OrNone(tn(o).Status.Namespace) }},
			{Name: "VMs", Type: "string", Description: "VMs held / quota", Value: func(o runtime.Object) interface{} { return quota.Column(tn(o), quota.VMs) }},
			{Name: "vCPU", Type: "string", Description: "vCPU of the VMs / quota", Value: func(o runtime.Object) interface{} { return quota.Column(tn(o), quota.CPUs) }},
			{Name: "Memory", Type: "string", Description: "Memory of the VMs / quota", Value: func(o runtime.Object) interface{} { return quota.Column(tn(o), quota.Memory) }},
			{Name: "Display Name", Type: "string", Priority: 1, Value: func(o runtime.Object) interface{} { return tn(o).Spec.DisplayName }},
		},
	}
}

func nodeKind() *registry.Kind {
	nd := func(o runtime.Object) *kumo.Node { return o.(*kumo.Node) }
	validate := func(_ context.Context, o runtime.Object) field.ErrorList {
		n := nd(o)
		errs := apimachineryvalidation.ValidateObjectMeta(&n.ObjectMeta, false, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
		if n.Spec.Datacenter == "" {
			errs = append(errs, field.Required(field.NewPath("spec", "datacenter"), "the datacenter the node sits in"))
		} else {
			for _, msg := range validation.IsDNS1123Label(n.Spec.Datacenter) {
				errs = append(errs, field.Invalid(field.NewPath("spec", "datacenter"), n.Spec.Datacenter, msg))
			}
		}
		return errs
	}
	ready := func(n *kumo.Node) string {
		for _, c := range n.Status.Conditions {
			if c.Type == kumo.NodeConditionReady {
				if c.Status == "True" {
					return "Ready"
				}
				return "NotReady"
			}
		}
		return "Unknown"
	}
	quantity := func(n *kumo.Node, r string) string {
		if q, ok := n.Status.Allocatable[r]; ok {
			return q.String()
		}
		return "<none>"
	}
	return &registry.Kind{
		Resource: kumo.Resource("nodes"), Singular: "node", ShortNames: []string{"no"}, Categories: []string{"kumo"},
		HasStatus: true, Version: kumo.SchemeGroupVersion.Version,
		New:      func() runtime.Object { return &kumo.Node{} },
		NewList:  func() runtime.Object { return &kumo.NodeList{} },
		Validate: validate,
		Table: registry.Table{
			{Name: "Status", Type: "string", Value: func(o runtime.Object) interface{} { return ready(nd(o)) }},
			{Name: "DC", Type: "string", Value: func(o runtime.Object) interface{} { return nd(o).Spec.Datacenter }},
			{Name: "vCPU", Type: "string", Value: func(o runtime.Object) interface{} { return quantity(nd(o), "cpu") }},
			{Name: "Memory", Type: "string", Value: func(o runtime.Object) interface{} { return nodeMemory(nd(o)) }},
			{Name: "Accel", Type: "string", Priority: 1, Value: func(o runtime.Object) interface{} { return registry.OrNone(nd(o).Status.Accelerator) }},
			{Name: "QEMU", Type: "string", Priority: 1, Value: func(o runtime.Object) interface{} { return registry.OrNone(nd(o).Status.QEMUVersion) }},
		},
	}
}

func goldenImageKind() *registry.Kind {
	gi := func(o runtime.Object) *kumo.GoldenImage { return o.(*kumo.GoldenImage) }
	validate := func(_ context.Context, o runtime.Object) field.ErrorList {
		g := gi(o)
		errs := apimachineryvalidation.ValidateObjectMeta(&g.ObjectMeta, false, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
		src := field.NewPath("spec", "source")
		switch {
		case g.Spec.Source.HTTP != nil && g.Spec.Source.Upload != nil:
			errs = append(errs, field.Invalid(src, "http, upload", "must name exactly one source: http or upload"))
		case g.Spec.Source.HTTP == nil && g.Spec.Source.Upload == nil:
			errs = append(errs, field.Required(src, "http (a URL) or upload (kumo image import --file)"))
		case g.Spec.Source.HTTP != nil:
			errs = append(errs, appsvalidation.ValidateImportURL(g.Spec.Source.HTTP.URL, src.Child("http", "url"))...)
		}
		return errs
	}
	return &registry.Kind{
		Resource: kumo.Resource("goldenimages"), Singular: "goldenimage", ShortNames: []string{"gi", "image"}, Categories: []string{"kumo"},
		HasStatus: true, Version: kumo.SchemeGroupVersion.Version,
		New:              func() runtime.Object { return &kumo.GoldenImage{} },
		NewList:          func() runtime.Object { return &kumo.GoldenImageList{} },
		PrepareForCreate: func(o runtime.Object) { gi(o).Status.Phase = kumo.GoldenImagePending },
		Validate:         validate,
		ValidateUpdate: func(ctx context.Context, o, old runtime.Object) field.ErrorList {
			errs := apimachineryvalidation.ValidateObjectMetaUpdate(&gi(o).ObjectMeta, &gi(old).ObjectMeta, field.NewPath("metadata"))
			if !apiequality.Semantic.DeepEqual(gi(o).Spec.Source, gi(old).Spec.Source) {
				errs = append(errs, field.Forbidden(field.NewPath("spec", "source"), "cannot change: import a new image under another name"))
			}
			return append(errs, validate(ctx, o)...)
		},
		Table: registry.Table{
			{Name: "OS", Type: "string", Value: func(o runtime.Object) interface{} { return registry.OrNone(gi(o).Spec.OS) }},
			{Name: "Phase", Type: "string", Value: func(o runtime.Object) interface{} { return string(gi(o).Status.Phase) }},
			{Name: "Format", Type: "string", Value: func(o runtime.Object) interface{} { return registry.OrNone(gi(o).Status.Format) }},
			{Name: "Size", Type: "string", Value: func(o runtime.Object) interface{} {
				if q := gi(o).Status.Size; q != nil {
					return q.String()
				}
				return "<none>"
			}},
		},
	}
}

// nodeMemory is a node's allocatable memory in GiB with one decimal (23.0Gi), as people read it;
// the agent reports bytes, which a Quantity prints as 24159260Ki.
func nodeMemory(n *kumo.Node) string {
	q, ok := n.Status.Allocatable["memory"]
	if !ok {
		return "<none>"
	}
	return fmt.Sprintf("%.1fGi", float64(q.Value())/(1<<30))
}
