// Package tenant reconciles Tenants: each gets its namespace, tenant-<name>, owned by it, and
// its status.usage counts what the namespace holds against spec.quota (usage.go); a
// deleted tenant's namespace is marked Terminating, emptied of whatever raced in (VMs, then
// disks, then events) and removed before the tenant itself goes (a finalizer holds it).
package tenant

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"kumo.dev/kumo/internal/controller/events"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// resyncPeriod re-checks every tenant now and then, so a namespace deleted behind Kumo's back
// comes back.
const resyncPeriod = 5 * time.Minute

// ConditionReady says the tenant's namespace exists.
const ConditionReady = "Ready"

// Controller reconciles tenants.
type Controller struct {
	c          *client.Client
	labelKey   string
	tenants    cache.SharedIndexInformer
	namespaces cache.SharedIndexInformer
	// vms, disks and types count each tenant's usage (usage.go).
	vms, disks, types cache.SharedIndexInformer
	queue             workqueue.TypedRateLimitingInterface[string]
	recorder          record.EventRecorder
}

// NewController watches tenants and the namespaces labelled with labelKey.
func NewController(c *client.Client, labelKey string) *Controller {
	ctl := &Controller{
		c:        c,
		labelKey: labelKey,
		queue:    workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
	}
	ctl.tenants = cache.NewSharedIndexInformer(
		cache.NewListWatchFromClient(c.Kumo, "tenants", "", fields.Everything()), &kumo.Tenant{}, resyncPeriod, cache.Indexers{})
	ctl.namespaces = cache.NewSharedIndexInformer(
		cache.NewFilteredListWatchFromClient(c.Core.CoreV1().RESTClient(), "namespaces", "", func(o *metav1.ListOptions) { o.LabelSelector = labelKey }),
		&corev1.Namespace{}, resyncPeriod, cache.Indexers{})
	enqueueTenant := func(obj interface{}) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			ctl.queue.Add(key)
		}
	}
	enqueueOwner := func(obj interface{}) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if m, err := meta.Accessor(obj); err == nil && m.GetLabels()[labelKey] != "" {
			ctl.queue.Add(m.GetLabels()[labelKey])
		}
	}
	ctl.tenants.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueueTenant, UpdateFunc: func(_, o interface{}) { enqueueTenant(o) }, DeleteFunc: enqueueTenant,
	})
	ctl.namespaces.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, o interface{}) { enqueueOwner(o) }, DeleteFunc: enqueueOwner,
	})
	ctl.watchUsage()
	return ctl
}

// Run reconciles with workers until ctx ends.
func (ctl *Controller) Run(ctx context.Context, workers int) {
	defer ctl.queue.ShutDown()
	ctl.recorder = events.NewRecorder(ctx, ctl.c, "kumo-tenant-controller")
	go ctl.tenants.Run(ctx.Done())
	go ctl.namespaces.Run(ctx.Done())
	go ctl.vms.Run(ctx.Done())
	go ctl.disks.Run(ctx.Done())
	go ctl.types.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), ctl.tenants.HasSynced, ctl.namespaces.HasSynced, ctl.vms.HasSynced, ctl.disks.HasSynced, ctl.types.HasSynced) {
		return
	}
	for i := 0; i < workers; i++ {
		go func() {
			for ctl.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
}

func (ctl *Controller) next(ctx context.Context) bool {
	key, quit := ctl.queue.Get()
	if quit {
		return false
	}
	defer ctl.queue.Done(key)
	if err := ctl.reconcile(ctx, key); err != nil {
		slog.Warn("reconcile tenant", "tenant", key, "err", err)
		ctl.queue.AddRateLimited(key)
		return true
	}
	ctl.queue.Forget(key)
	return true
}

func (ctl *Controller) reconcile(ctx context.Context, name string) error {
	obj, exists, err := ctl.tenants.GetStore().GetByKey(name)
	if err != nil || !exists {
		return err
	}
	t := obj.(*kumo.Tenant).DeepCopy()
	if t.DeletionTimestamp != nil {
		return ctl.finalize(ctx, t)
	}
	ns := kumo.TenantNamespace(t.Name)
	if _, exists, _ := ctl.namespaces.GetStore().GetByKey(ns); !exists {
		if err := ctl.createNamespace(ctx, t, ns); err != nil {
			return err
		}
	}
	if err := ctl.ensureKey(ctx, t); err != nil {
		return err
	}
	usage, err := ctl.usage(t)
	if err != nil {
		return fmt.Errorf("count the usage of tenant %s: %w", t.Name, err)
	}
	if t.Status.Phase == kumo.TenantActive && t.Status.Namespace == ns && apiequality.Semantic.DeepEqual(t.Status.Usage, usage) {
		return nil
	}
	t.Status.Phase, t.Status.Namespace, t.Status.Usage = kumo.TenantActive, ns, usage
	meta.SetStatusCondition(&t.Status.Conditions, metav1.Condition{
		Type: ConditionReady, Status: metav1.ConditionTrue, Reason: "NamespaceReady",
		Message: fmt.Sprintf("namespace %s is ready", ns), ObservedGeneration: t.Generation,
	})
	if err := ctl.c.Kumo.Put().Resource("tenants").Name(t.Name).SubResource("status").Body(t).Do(ctx).Error(); err != nil {
		return fmt.Errorf("update status of tenant %s: %w", t.Name, err)
	}
	return nil
}

func (ctl *Controller) createNamespace(ctx context.Context, t *kumo.Tenant, ns string) error {
	// A namespace that does not exist takes no content, so whatever is found under its name
	// belongs to an earlier tenant of this name (left by a version of Kumo whose deletion raced
	// with creates): it goes before the new tenant gets the namespace. The informer may lag, so
	// only a namespace etcd does not have counts as absent.
	_, err := ctl.c.Core.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("read namespace %s: %w", ns, err)
	}
	if err := ctl.removeContent(ctx, ns); err != nil {
		return fmt.Errorf("clear what an earlier tenant left in %s: %w", ns, err)
	}
	owner := metav1.NewControllerRef(t, kumo.SchemeGroupVersion.WithKind("Tenant"))
	_, err = ctl.c.Core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Labels: map[string]string{ctl.labelKey: t.Name}, OwnerReferences: []metav1.OwnerReference{*owner},
	}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create namespace %s for tenant %s: %w", ns, t.Name, err)
	}
	ctl.recorder.Eventf(t, corev1.EventTypeNormal, "NamespaceCreated", "Created namespace %s", ns)
	slog.Info("tenant namespace created", "tenant", t.Name, "namespace", ns)
	return nil
}

// finalize removes a deleted tenant's namespace and everything in it, then lets the tenant go.
// Admission refused the deletion while the tenant held VMs or disks, but creates racing the
// deletion may have landed since: the namespace is marked Terminating first (no create is
// admitted after that), then what it still holds is deleted, and the namespace goes only once it
// is empty. A tenant created again under the same name starts with a namespace of its own, and
// its tokens (bound to the tenant's UID) differ from the old ones.
func (ctl *Controller) finalize(ctx context.Context, t *kumo.Tenant) error {
	ns := kumo.TenantNamespace(t.Name)
	core := ctl.c.Core.CoreV1()
	if n, err := core.Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
		if n.Status.Phase != corev1.NamespaceTerminating {
			n.Status.Phase = corev1.NamespaceTerminating
			if _, err := core.Namespaces().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("mark namespace %s terminating: %w", ns, err)
			}
		}
		// The namespace takes no new content from here on (admission refuses creates in a
		// terminating namespace, and the mark returned only once every create admitted before it
		// was written). What raced in between the tenant's emptiness check and the mark goes now.
		if err := ctl.removeContent(ctx, ns); err != nil {
			return err
		}
		if err := core.Events(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			return fmt.Errorf("delete events of namespace %s: %w", ns, err)
		}
		if err := core.Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete namespace %s: %w", ns, err)
		}
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("read namespace %s: %w", ns, err)
	} else if err := ctl.removeContent(ctx, ns); err != nil {
		// The namespace is gone (no create is admitted): what is left there goes too.
		return err
	}
	if t.Status.Phase != kumo.TenantTerminating {
		t.Status.Phase = kumo.TenantTerminating
		if err := ctl.c.Kumo.Put().Resource("tenants").Name(t.Name).SubResource("status").Body(t).Do(ctx).Into(t); err != nil {
			return fmt.Errorf("mark tenant %s terminating: %w", t.Name, err)
		}
	}
	if err := ctl.c.Kumo.Delete().Resource("tenantkeys").Name(t.Name).Do(ctx).Error(); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete the disk key of tenant %s: %w", t.Name, err)
	}
	var keep []string
	for _, f := range t.Finalizers {
		if f != kumo.TenantFinalizer {
			keep = append(keep, f)
		}
	}
	t.Finalizers = keep
	if err := ctl.c.Kumo.Put().Resource("tenants").Name(t.Name).Body(t).Do(ctx).Error(); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("release tenant %s: %w", t.Name, err)
	}
	slog.Info("tenant deleted", "tenant", t.Name, "namespace", ns)
	return nil
}

// ensureKey creates the tenant's disk encryption key once; it never changes afterwards.
func (ctl *Controller) ensureKey(ctx context.Context, t *kumo.Tenant) error {
	err := ctl.c.Kumo.Get().Resource("tenantkeys").Name(t.Name).Do(ctx).Error()
	if err == nil || !apierrors.IsNotFound(err) {
		return err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	owner := metav1.NewControllerRef(t, kumo.SchemeGroupVersion.WithKind("Tenant"))
	key := &kumo.TenantKey{ObjectMeta: metav1.ObjectMeta{Name: t.Name, OwnerReferences: []metav1.OwnerReference{*owner}}, Key: base64.StdEncoding.EncodeToString(raw)}
	if err := ctl.c.Kumo.Post().Resource("tenantkeys").Body(key).Do(ctx).Error(); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create the disk key of tenant %s: %w", t.Name, err)
	}
	ctl.recorder.Event(t, corev1.EventTypeNormal, "KeyCreated", "Created the tenant's disk encryption key")
	return nil
}

// contentRemaining is returned while a terminating namespace still holds VMs or disks; the
// tenant is reconciled again until they are gone.
type contentRemaining struct {
	ns   string
	left []string
}

func (e *contentRemaining) Error() string {
	return fmt.Sprintf("namespace %s still holds %v: deleting them", e.ns, e.left)
}

// removeContent deletes the VMs of a terminating namespace, then (once no VM names them) its
// disks. It returns nil only when the namespace holds neither.
func (ctl *Controller) removeContent(ctx context.Context, ns string) error {
	var left []string
	for _, r := range []string{"vminstances", "vmdisks"} {
		var list runtime.Object = &apps.VMInstanceList{}
		if r == "vmdisks" {
			list = &apps.VMDiskList{}
		}
		if err := ctl.c.Apps.Get().Namespace(ns).Resource(r).Do(ctx).Into(list); err != nil {
			return fmt.Errorf("list %s of terminating namespace %s: %w", r, ns, err)
		}
		var items []metav1.ObjectMeta
		_ = meta.EachListItem(list, func(o runtime.Object) error {
			if m, err := meta.Accessor(o); err == nil {
				items = append(items, metav1.ObjectMeta{Name: m.GetName(), UID: m.GetUID()})
			}
			return nil
		})
		if len(items) == 0 {
			continue
		}
		if r == "vmdisks" && len(left) > 0 {
			// Disks a VM names cannot be deleted: wait for the VMs to go first.
			left = append(left, fmt.Sprintf("%d %s", len(items), r))
			break
		}
		for _, o := range items {
			err := ctl.c.Apps.Delete().Namespace(ns).Resource(r).Name(o.Name).
				Body(&metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &o.UID}}).Do(ctx).Error()
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return fmt.Errorf("delete %s %s/%s of a deleted tenant: %w", r, ns, o.Name, err)
			}
			slog.Info("deleted the content of a deleted tenant", "resource", r, "namespace", ns, "name", o.Name)
		}
		left = append(left, fmt.Sprintf("%d %s", len(items), r))
	}
	if len(left) > 0 {
		return &contentRemaining{ns: ns, left: left}
	}
	return nil
}
