package registry

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apiserver/pkg/registry/rest"
)

// Column is one column of a kind's table (kubectl get / kumo get). Priority 1 columns appear
// only with -o wide.
type Column struct {
	Name        string
	Type        string
	Description string
	Priority    int32
	Value       func(obj runtime.Object) interface{}
}

// Table renders objects as rows: NAME, the given columns, then AGE.
type Table []Column

var _ rest.TableConvertor = Table{}

// ConvertToTable implements rest.TableConvertor.
func (t Table) ConvertToTable(ctx context.Context, object runtime.Object, opts runtime.Object) (*metav1.Table, error) {
	table := &metav1.Table{}
	noHeaders := false
	if o, ok := opts.(*metav1.TableOptions); ok && o != nil {
		noHeaders = o.NoHeaders
	}
	if !noHeaders {
		table.ColumnDefinitions = append(table.ColumnDefinitions, metav1.TableColumnDefinition{
			Name: "Name", Type: "string", Format: "name", Description: "Name of the object"})
		for _, c := range t {
			table.ColumnDefinitions = append(table.ColumnDefinitions, metav1.TableColumnDefinition{
				Name: c.Name, Type: c.Type, Description: c.Description, Priority: c.Priority})
		}
		table.ColumnDefinitions = append(table.ColumnDefinitions, metav1.TableColumnDefinition{
			Name: "Age", Type: "string", Description: "Time since the object was created"})
	}
	add := func(obj runtime.Object) error {
		m, err := meta.Accessor(obj)
		if err != nil {
			return err
		}
		cells := []interface{}{m.GetName()}
		for _, c := range t {
			cells = append(cells, c.Value(obj))
		}
		cells = append(cells, Age(m.GetCreationTimestamp()))
		table.Rows = append(table.Rows, metav1.TableRow{Cells: cells, Object: runtime.RawExtension{Object: obj}})
		return nil
	}
	if meta.IsListType(object) {
		if err := meta.EachListItem(object, add); err != nil {
			return nil, err
		}
		if l, err := meta.ListAccessor(object); err == nil {
			table.ResourceVersion = l.GetResourceVersion()
			table.Continue = l.GetContinue()
			table.RemainingItemCount = l.GetRemainingItemCount()
		}
	} else {
		if err := add(object); err != nil {
			return nil, err
		}
		if m, err := meta.Accessor(object); err == nil {
			table.ResourceVersion = m.GetResourceVersion()
		}
	}
	return table, nil
}

// Age renders how long ago t was, as kubectl does.
func Age(t metav1.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t.Time))
}

// OrNone renders an empty string as "<none>".
func OrNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// Join renders a list of strings comma-separated, or "<none>".
func Join(items []string) string {
	out := ""
	for i, s := range items {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return OrNone(out)
}
