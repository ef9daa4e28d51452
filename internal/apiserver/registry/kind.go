// Package registry stores each served kind in etcd through k8s.io/apiserver's generic store. A
// Kind says how one resource is named, defaulted, validated and shown as a table; this package
// turns it into a REST storage (plus a status subresource where the kind has status).
package registry

import (
	"context"
	"reflect"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// Kind describes one served resource.
type Kind struct {
	Resource   schema.GroupResource
	Singular   string
	ShortNames []string
	Categories []string
	Namespaced bool
	New        func() runtime.Object
	NewList    func() runtime.Object
	// HasStatus adds a status subresource and keeps status out of main-resource writes.
	HasStatus bool
	// Version is the served version, used for server-side apply's reset fields.
	Version string

	// PrepareForCreate and PrepareForUpdate normalise an object before validation.
	PrepareForCreate func(obj runtime.Object)
	PrepareForUpdate func(obj, old runtime.Object)
	// PrepareForStatusUpdate normalises a status write (after spec and metadata are kept).
	PrepareForStatusUpdate func(obj, old runtime.Object)
	Validate               func(ctx context.Context, obj runtime.Object) field.ErrorList
	ValidateUpdate         func(ctx context.Context, obj, old runtime.Object) field.ErrorList

	Table    rest.TableConvertor
	AttrFunc storage.AttrFunc
	// TTL, when set, expires objects (events).
	TTL func(obj runtime.Object, existing uint64, update bool) (uint64, error)
}

// Storage is a kind's main store and, if it has one, its status store.
type Storage struct {
	*genericregistry.Store
	Status *genericregistry.Store
	kind   *Kind
}

// ShortNames gives kubectl and kumo the kind's short names through discovery.
func (s *Storage) ShortNames() []string { return s.kind.ShortNames }

// Categories puts the kind into groups such as "all".
func (s *Storage) Categories() []string { return s.kind.Categories }

var (
	_ rest.ShortNamesProvider  = &Storage{}
	_ rest.CategoriesProvider  = &Storage{}
	_ rest.ResetFieldsStrategy = &strategy{}
)

// NewStorage builds the etcd-backed storage of a kind.
func NewStorage(k *Kind, typer runtime.ObjectTyper, opts generic.RESTOptionsGetter) (*Storage, error) {
	st := &strategy{ObjectTyper: typer, NameGenerator: names.SimpleNameGenerator, kind: k}
	store := &genericregistry.Store{
		NewFunc:                   k.New,
		NewListFunc:               k.NewList,
		DefaultQualifiedResource:  k.Resource,
		SingularQualifiedResource: schema.GroupResource{Group: k.Resource.Group, Resource: k.Singular},
		CreateStrategy:            st,
		UpdateStrategy:            st,
		DeleteStrategy:            st,
		ResetFieldsStrategy:       st,
		TableConvertor:            k.Table,
		TTLFunc:                   k.TTL,
	}
	attr := k.AttrFunc
	if attr == nil {
		attr = storage.DefaultClusterScopedAttr
		if k.Namespaced {
			attr = storage.DefaultNamespaceScopedAttr
		}
	}
	store.PredicateFunc = func(label labelsSelector, fields fieldsSelector) storage.SelectionPredicate {
		return storage.SelectionPredicate{Label: label, Field: fields, GetAttrs: attr}
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: opts, AttrFunc: attr}); err != nil {
		return nil, err
	}
	out := &Storage{Store: store, kind: k}
	if k.HasStatus {
		status := *store
		sst := &statusStrategy{strategy: st}
		status.UpdateStrategy = sst
		status.ResetFieldsStrategy = sst
		out.Status = &status
	}
	return out, nil
}

// strategy applies a Kind's hooks and the rules every kind shares: status is written only through
// the status subresource, and generation counts spec changes.
type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	kind *Kind
}

func (s *strategy) NamespaceScoped() bool { return s.kind.Namespaced }

func (s *strategy) PrepareForCreate(ctx context.Context, obj runtime.Object) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetGeneration(1)
	}
	if s.kind.HasStatus {
		setField(obj, "Status", reflect.Zero(fieldOf(obj, "Status").Type()))
	}
	if s.kind.PrepareForCreate != nil {
		s.kind.PrepareForCreate(obj)
	}
}

func (s *strategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	if s.kind.HasStatus {
		setField(obj, "Status", fieldOf(old, "Status"))
	}
	if s.kind.PrepareForUpdate != nil {
		s.kind.PrepareForUpdate(obj, old)
	}
	bumpGeneration(obj, old)
}

func (s *strategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	if s.kind.Validate == nil {
		return nil
	}
	return s.kind.Validate(ctx, obj)
}

func (s *strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	if s.kind.ValidateUpdate != nil {
		return s.kind.ValidateUpdate(ctx, obj, old)
	}
	return s.Validate(ctx, obj)
}

func (s *strategy) WarningsOnCreate(ctx context.Context, obj runtime.Object) []string { return nil }
func (s *strategy) WarningsOnUpdate(ctx context.Context, obj, old runtime.Object) []string {
	return nil
}
func (s *strategy) Canonicalize(obj runtime.Object)                   {}
func (s *strategy) AllowCreateOnUpdate(ctx context.Context) bool      { return false }
func (s *strategy) AllowUnconditionalUpdate(ctx context.Context) bool { return true }

// GetResetFields keeps status out of server-side apply on the main resource.
func (s *strategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	if !s.kind.HasStatus {
		return nil
	}
	return map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(schema.GroupVersion{Group: s.kind.Resource.Group, Version: s.kind.Version}.String()): fieldpath.NewSet(fieldpath.MakePathOrDie("status")),
	}
}

// statusStrategy lets only status change through the status subresource.
type statusStrategy struct{ *strategy }

func (s *statusStrategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	setField(obj, "Spec", fieldOf(old, "Spec"))
	newMeta, err1 := meta.Accessor(obj)
	oldMeta, err2 := meta.Accessor(old)
	if err1 == nil && err2 == nil {
		newMeta.SetLabels(oldMeta.GetLabels())
		newMeta.SetAnnotations(oldMeta.GetAnnotations())
		newMeta.SetFinalizers(oldMeta.GetFinalizers())
		newMeta.SetOwnerReferences(oldMeta.GetOwnerReferences())
	}
	if s.kind.PrepareForStatusUpdate != nil {
		s.kind.PrepareForStatusUpdate(obj, old)
	}
}

func (s *statusStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	return nil
}

func (s *statusStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(schema.GroupVersion{Group: s.kind.Resource.Group, Version: s.kind.Version}.String()): fieldpath.NewSet(fieldpath.MakePathOrDie("spec"), fieldpath.MakePathOrDie("metadata")),
	}
}

func bumpGeneration(obj, old runtime.Object) {
	newMeta, err1 := meta.Accessor(obj)
	oldMeta, err2 := meta.Accessor(old)
	if err1 != nil || err2 != nil {
		return
	}
	spec, oldSpec := fieldOf(obj, "Spec"), fieldOf(old, "Spec")
	gen := oldMeta.GetGeneration()
	if spec.IsValid() && oldSpec.IsValid() && !reflect.DeepEqual(spec.Interface(), oldSpec.Interface()) {
		gen++
	}
	newMeta.SetGeneration(gen)
}

// fieldOf returns a named field of the struct obj points to, or an invalid value.
func fieldOf(obj runtime.Object, name string) reflect.Value {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return reflect.Value{}
	}
	return v.Elem().FieldByName(name)
}

func setField(obj runtime.Object, name string, val reflect.Value) {
	if f := fieldOf(obj, name); f.IsValid() && f.CanSet() && val.IsValid() {
		f.Set(val)
	}
}
