package v1alpha1

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestVMDiskRefUnmarshalJSON(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{name: "bare string is a name", in: `"x"`, want: "x"},
		{name: "bare string with surrounding space", in: " \n\"disk-1\"\t", want: "disk-1"},
		{name: "object with name", in: `{"name":"x"}`, want: "x"},
		{name: "object with name and whitespace", in: "{ \"name\" : \"x\" }", want: "x"},
		{name: "escaped string is unescaped", in: `"d\u0069sk"`, want: "disk"},
		{name: "null is an empty reference", in: `null`, want: ""},
		{name: "empty object is an empty reference", in: `{}`, want: ""},
		{name: "object with an extra field is rejected", in: `{"name":"x","extra":1}`, wantErr: true},
		{name: "number is rejected", in: `5`, wantErr: true},
		{name: "boolean is rejected", in: `true`, wantErr: true},
		{name: "list is rejected", in: `["x"]`, wantErr: true},
		{name: "object with a numeric name is rejected", in: `{"name":5}`, wantErr: true},
		{name: "unterminated string is rejected", in: `"x`, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Start from a non-empty value so that a decoder that leaves the old name is caught.
			r := VMDiskRef{Name: "previous"}
			err := r.UnmarshalJSON([]byte(tc.in))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("UnmarshalJSON(%s) = %+v, want an error", tc.in, r)
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalJSON(%s): %v", tc.in, err)
			}
			if r.Name != tc.want {
				t.Errorf("UnmarshalJSON(%s) name = %q, want %q", tc.in, r.Name, tc.want)
			}
		})
	}
}

func TestVMDiskRefErrorExplainsBothShapes(t *testing.T) {
	var r VMDiskRef
	err := json.Unmarshal([]byte(`{"name":"x","extra":1}`), &r)
	if err == nil {
		t.Fatal("want an error for an unknown field")
	}
	if want := "a disk is a name or an object {name: NAME, bus: BUS}"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q should explain the accepted shapes (%q)", err, want)
	}
}

func TestVMDiskRefMarshalsAsObject(t *testing.T) {
	for _, in := range []string{`"x"`, `{"name":"x"}`} {
		var r VMDiskRef
		if err := json.Unmarshal([]byte(in), &r); err != nil {
			t.Fatalf("unmarshal %s: %v", in, err)
		}
		out, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != `{"name":"x"}` {
			t.Errorf("%s marshals to %s, want {\"name\":\"x\"}", in, out)
		}
	}
	out, err := json.Marshal(&VMDiskRef{Name: "x"})
	if err != nil || string(out) != `{"name":"x"}` {
		t.Errorf("pointer marshals to %s (%v), want {\"name\":\"x\"}", out, err)
	}
}

func TestVMInstanceSpecDecodesMixedDiskList(t *testing.T) {
	in := `{"instanceType":"u1.medium","disks":["a",{"name":"b"}," c ",{"name":"d"}]}`
	var s VMInstanceSpec
	if err := json.Unmarshal([]byte(in), &s); err != nil {
		t.Fatal(err)
	}
	want := []VMDiskRef{{Name: "a"}, {Name: "b"}, {Name: " c "}, {Name: "d"}}
	if !reflect.DeepEqual(s.Disks, want) {
		t.Errorf("disks = %+v, want %+v in order", s.Disks, want)
	}
	if s.InstanceType != "u1.medium" {
		t.Errorf("instanceType = %q, other fields must still decode", s.InstanceType)
	}

	out, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]interface{}
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	wantDisks := []interface{}{
		map[string]interface{}{"name": "a"}, map[string]interface{}{"name": "b"},
		map[string]interface{}{"name": " c "}, map[string]interface{}{"name": "d"},
	}
	if !reflect.DeepEqual(back["disks"], wantDisks) {
		t.Errorf("disks are written back as %v, want objects %v", back["disks"], wantDisks)
	}
}

func TestVMInstanceSpecRejectsBadDiskItem(t *testing.T) {
	for _, in := range []string{
		`{"disks":["a",{"name":"b","size":"1Gi"}]}`,
		`{"disks":[5]}`,
		`{"disks":"a"}`,
	} {
		var s VMInstanceSpec
		if err := json.Unmarshal([]byte(in), &s); err == nil {
			t.Errorf("%s decoded to %+v, want an error", in, s.Disks)
		}
	}
}

func TestVMDiskRefKeepsItsBus(t *testing.T) {
	var s VMInstanceSpec
	if err := json.Unmarshal([]byte(`{"disks":["a",{"name":"b","bus":"sata"}]}`), &s); err != nil {
		t.Fatal(err)
	}
	if want := []VMDiskRef{{Name: "a"}, {Name: "b", Bus: BusSATA}}; !reflect.DeepEqual(s.Disks, want) {
		t.Errorf("disks = %+v, want %+v", s.Disks, want)
	}
}
