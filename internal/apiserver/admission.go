package apiserver

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/admission"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"kumo.dev/kumo/internal/auth"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// LabelTenant marks a namespace with the tenant that owns it.
const LabelTenant = "kumo.dev/tenant"

// lookups are the stores admission reads. They are filled once the stores exist.
type lookups struct {
	namespaces, tenants, instanceTypes, instanceProfiles rest.Getter
	vmInstances                                          rest.Lister
	vmDisks                                              getLister
	// nodes report the CPU models their QEMU offers (spec.cpuModel is checked against them).
	nodes rest.Lister
}

// getLister reads single objects and lists.
type getLister interface {
	rest.Getter
	rest.Lister
}

// admissionChecks enforces what one object's validation cannot see: namespaces belong to live
// tenants, references to instance types and profiles resolve, VMs and disks stay within their
// tenant's quota (admission_quota.go), a tenant holding VMs or disks is not deleted, a disk a VM names is not deleted (admission_disks.go), and a node registers only
// itself.
type admissionChecks struct{ l *lookups }

var _ admission.ValidationInterface = &admissionChecks{}

func (a *admissionChecks) Handles(op admission.Operation) bool {
	return op == admission.Create || op == admission.Update || op == admission.Delete
}

func (a *admissionChecks) Validate(ctx context.Context, attr admission.Attributes, _ admission.ObjectInterfaces) error {
	gr := attr.GetResource().GroupResource()
	if node := auth.NodeOf(attr.GetUserInfo()); node != "" {
		if attr.GetSubresource() == "status" && attr.GetOperation() == admission.Update {
			return nodeOwnsStatus(node, gr, attr.GetName(), attr.GetObject(), attr.GetOldObject())
		}
		if gr == coreResource("events") && attr.GetOperation() != admission.Delete {
			return a.l.nodeMayReport(ctx, node, attr.GetObject())
		}
	}
	if attr.GetSubresource() != "" && !(gr == kumo.Resource("tenants") && attr.GetSubresource() == "token") {
		return nil
	}
	switch name := objectName(attr); {
	case attr.GetOperation() == admission.Create && attr.GetNamespace() != "" && gr != coreResource("namespaces"):
		if err := a.namespaceAccepts(ctx, attr.GetNamespace(), gr); err != nil {
			return err
		}
	case attr.GetOperation() == admission.Delete && gr == kumo.Resource("tenants"):
		return a.tenantEmpty(ctx, name)
	case attr.GetOperation() == admission.Delete && gr == coreResource("namespaces"):
		return a.namespaceDeletable(ctx, name)
	case attr.GetOperation() == admission.Delete && gr == apps.Resource("vmdisks"):
		return a.diskUnused(ctx, attr.GetNamespace(), name)
	}
	if op := attr.GetOperation(); (op == admission.Create || op == admission.Update) &&
		(gr == apps.Resource("vminstances") || gr == apps.Resource("vmdisks")) {
		if err := a.withinQuota(ctx, attr); err != nil {
			return err
		}
	}
	if gr == kumo.Resource("nodes") {
		if n := auth.NodeOf(attr.GetUserInfo()); n != "" && attr.GetOperation() == admission.Create && attr.GetName() != n {
			return apierrors.NewForbidden(gr, attr.GetName(), fmt.Errorf("node %q may only register itself", n))
		}
	}
	return nil
}

// objectName is the name of the object a request is about. A delete of a whole collection
// (deletecollection) is admitted object by object with no name in the request: the name is then
// the deleted object's.
func objectName(attr admission.Attributes) string {
	if n := attr.GetName(); n != "" {
		return n
	}
	if old := attr.GetOldObject(); old != nil {
		if m, err := meta.Accessor(old); err == nil {
			return m.GetName()
		}
	}
	return ""
}

// namespaceAccepts refuses new objects in a namespace that does not exist, is being deleted, or
// (for VMs and disks) belongs to no tenant.
func (a *admissionChecks) namespaceAccepts(ctx context.Context, ns string, gr schema.GroupResource) error {
	obj, err := a.l.namespaces.Get(ctx, ns, &metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		hint := ""
		if t := kumo.TenantOfNamespace(ns); t != "" {
			hint = fmt.Sprintf(": create the tenant first (kumo tenant create %s)", t)
		}
		return apierrors.NewNotFound(coreResource("namespaces"), ns+hint)
	}
	if err != nil {
		return err
	}
	n := obj.(*corev1.Namespace)
	if n.Status.Phase == corev1.NamespaceTerminating || n.DeletionTimestamp != nil {
		return apierrors.NewForbidden(gr, "", fmt.Errorf("unable to create new content in namespace %s because it is being terminated", ns))
	}
	if gr.Group == apps.GroupName && n.Labels[LabelTenant] == "" {
		return apierrors.NewForbidden(gr, "", fmt.Errorf("namespace %s belongs to no tenant: VMs and disks live in a tenant's namespace (tenant-<name>)", ns))
	}
	return nil
}

// vmReferences checks that the instance type and profile a VM names exist. It runs within
// validation so that one response lists every problem of a manifest.
func (l *lookups) vmReferences(ctx context.Context, vm, old *apps.VMInstance) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	check := func(getter rest.Getter, path *field.Path, name, oldName, what string) {
		if name == "" || name == oldName {
			return
		}
		_, err := getter.Get(ctx, name, &metav1.GetOptions{ResourceVersion: "0"})
		switch {
		case apierrors.IsNotFound(err):
			e := field.NotFound(path, name)
			e.Detail = fmt.Sprintf("no such %s (kumo get %ss lists them)", what, strings.ReplaceAll(what, " ", ""))
			errs = append(errs, e)
		case err != nil:
			errs = append(errs, field.InternalError(path, err))
		}
	}
	var oldType, oldProfile string
	if old != nil {
		oldType, oldProfile = old.Spec.InstanceType, old.Spec.InstanceProfile
	}
	check(l.instanceTypes, spec.Child("instanceType"), vm.Spec.InstanceType, oldType, "instance type")
	check(l.instanceProfiles, spec.Child("instanceProfile"), vm.Spec.InstanceProfile, oldProfile, "instance profile")
	if old == nil || vm.Spec.CPUModel != old.Spec.CPUModel {
		errs = append(errs, l.cpuModelOffered(ctx, vm.Spec.CPUModel, spec.Child("cpuModel"))...)
	}
	return errs
}

// cpuModelOffered refuses a cpuModel no node can give: "host" when no node runs KVM, any other
// model when nodes report their QEMU's models and none offers it. While no node has reported a
// list (none registered yet), the model is accepted and a node that lacks it fails the start
// with QEMU's message.
func (l *lookups) cpuModelOffered(ctx context.Context, model string, path *field.Path) field.ErrorList {
	if model == "" || l.nodes == nil {
		return nil
	}
	list, err := l.nodes.List(ctx, &metainternalversion.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return field.ErrorList{field.InternalError(path, fmt.Errorf("list nodes to check the CPU model: %w", err))}
	}
	nodes := list.(*kumo.NodeList).Items
	reported, kvm := false, false
	for _, n := range nodes {
		if n.Status.Accelerator == "kvm" {
			kvm = true
		}
		if len(n.Status.CPUModels) == 0 {
			continue
		}
		reported = true
		if model != "host" && slices.Contains(n.Status.CPUModels, model) {
			return nil
		}
	}
	switch {
	case model == "host" && (kvm || len(nodes) == 0):
		return nil
	case model == "host":
		return field.ErrorList{field.Invalid(path, model, "host passthrough needs KVM and no node runs it; name a model such as max or Skylake-Server-v4, or leave cpuModel empty")}
	case !reported:
		return nil
	}
	return field.ErrorList{field.Invalid(path, model, "no node's QEMU offers this CPU model (kumo get node NODE -o yaml lists status.cpuModels)")}
}

// tenantEmpty refuses to delete a tenant whose namespace still holds VMs or disks.
func (a *admissionChecks) tenantEmpty(ctx context.Context, tenant string) error {
	nsCtx := genericapirequest.WithNamespace(ctx, kumo.TenantNamespace(tenant))
	var held []string
	for _, l := range []struct {
		lister rest.Lister
		what   string
	}{{a.l.vmInstances, "VMInstance"}, {a.l.vmDisks, "VMDisk"}} {
		list, err := l.lister.List(nsCtx, &metainternalversion.ListOptions{})
		if err != nil {
			return err
		}
		if n := meta.LenList(list); n > 0 {
			held = append(held, plural(n, l.what))
		}
	}
	if len(held) == 0 {
		return nil
	}
	return apierrors.NewConflict(kumo.Resource("tenants"), tenant, fmt.Errorf(
		"tenant still holds %s in namespace %s; delete them first", strings.Join(held, " and "), kumo.TenantNamespace(tenant)))
}

// namespaceDeletable keeps a live tenant's namespace: it goes with its tenant.
func (a *admissionChecks) namespaceDeletable(ctx context.Context, ns string) error {
	t := kumo.TenantOfNamespace(ns)
	if t == "" {
		return nil
	}
	obj, err := a.l.tenants.Get(ctx, t, &metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if obj.(*kumo.Tenant).DeletionTimestamp == nil {
		return apierrors.NewForbidden(coreResource("namespaces"), ns, fmt.Errorf("it belongs to tenant %s: delete the tenant instead", t))
	}
	return nil
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
