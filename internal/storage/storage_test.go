package storage

import (
	"context"
	"errors"
	"os"
	"testing"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// scripted is a driver whose Open and Create answer from lists, recording the calls.
type scripted struct {
	opens   []error
	creates []error
	calls   []string
	source  *apps.VMDisk
}

func (s *scripted) Info() Info { return Info{} }
func (s *scripted) Open(context.Context, *apps.VMDisk, Key) (Volume, error) {
	s.calls = append(s.calls, "open")
	err := s.opens[0]
	s.opens = s.opens[1:]
	return Volume{Path: "p"}, err
}
func (s *scripted) Create(_ context.Context, req Request) (Volume, error) {
	s.calls = append(s.calls, "create")
	s.source = req.Source
	err := s.creates[0]
	s.creates = s.creates[1:]
	return Volume{Path: "p"}, err
}
func (s *scripted) Delete(context.Context, string, string) error      { return nil }
func (s *scripted) List(context.Context) (map[string][]string, error) { return nil, nil }

func TestEnsureCreatesOnlyWhatIsKnownAbsent(t *testing.T) {
	clone := &apps.VMDisk{Spec: apps.VMDiskSpec{Source: apps.VMDiskSource{Disk: &apps.DiskSource{Name: "src"}}}}
	src := &apps.VMDisk{}
	resolved := 0
	req := Request{Disk: clone, ResolveSource: func(context.Context) (*apps.VMDisk, error) { resolved++; return src, nil }}
	eio := errors.New("input/output error")
	for _, tc := range []struct {
		name         string
		opens        []error
		creates      []error
		want         []string
		wantErr      error
		wantResolved int
	}{
		{"exists", []error{nil}, nil, []string{"open"}, nil, 0},
		{"unknown", []error{eio}, nil, []string{"open"}, eio, 0},
		{"absent", []error{ErrNotFound}, []error{nil}, []string{"open", "create"}, nil, 1},
		{"made meanwhile", []error{ErrNotFound, nil}, []error{ErrExists}, []string{"open", "create", "open"}, nil, 1},
	} {
		resolved = 0
		drv := &scripted{opens: tc.opens, creates: tc.creates}
		_, err := Ensure(context.Background(), drv, req)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.wantErr)
		}
		if len(drv.calls) != len(tc.want) || (len(tc.want) > 0 && drv.calls[len(drv.calls)-1] != tc.want[len(tc.want)-1]) {
			t.Errorf("%s: calls %v, want %v", tc.name, drv.calls, tc.want)
		}
		if resolved != tc.wantResolved || (tc.wantResolved > 0 && drv.source != src) {
			t.Errorf("%s: source resolved %d times (%v), want %d", tc.name, resolved, drv.source, tc.wantResolved)
		}
	}
	// A source that cannot be resolved creates nothing.
	drv := &scripted{opens: []error{ErrNotFound}}
	bad := Request{Disk: clone, ResolveSource: func(context.Context) (*apps.VMDisk, error) { return nil, errors.New("source disk src is not ready") }}
	if _, err := Ensure(context.Background(), drv, bad); err == nil || len(drv.calls) != 1 {
		t.Errorf("unresolvable source: %v, calls %v", err, drv.calls)
	}
}

// A sweep running while a scratch directory is being set up must leave it alone: it used to
// take the new directory's lock before its owner, remove the directory, and the operation then
// failed (a disk import failed for good).
func TestSweepDuringScratchSetUpLeavesItAlone(t *testing.T) {
	parent := t.TempDir()
	swept := -1
	beforeScratchLockNamed = func(string) { swept, _ = SweepScratch(parent, ".x-") }
	defer func() { beforeScratchLockNamed = func(string) {} }()
	s, err := NewScratch(parent, ".x-")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if swept != 0 {
		t.Errorf("the sweep removed %d directories", swept)
	}
	if err := os.WriteFile(s.Path("f"), []byte("x"), 0o600); err != nil {
		t.Errorf("the scratch directory is gone under its operation: %v", err)
	}
	// And a sweep afterwards still sees the lock held.
	if n, err := SweepScratch(parent, ".x-"); n != 0 || err != nil {
		t.Errorf("sweep of a live scratch directory: %d %v", n, err)
	}
	s.Close()
	// Once its owner is gone (lock free), it is swept.
	s2, err := NewScratch(parent, ".x-")
	if err != nil {
		t.Fatal(err)
	}
	s2.lock.Close()
	if n, err := SweepScratch(parent, ".x-"); n != 1 || err != nil {
		t.Errorf("sweep of a dead scratch directory: %d %v", n, err)
	}
}
