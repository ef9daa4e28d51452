package lab

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Clean removes what a lab in dir made, whether it is running, half-built or left by a crash:
// the processes it recorded, every process inside a namespace with the lab's prefix (agents'
// QEMUs, Ceph daemons), every process whose command line names dir, the namespaces, the host's
// veth, and dir itself. A dir that holds something else than a lab is refused.
func Clean(dir string, out io.Writer) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("lab directory %s: %w", dir, err)
	}
	_, statErr := os.Stat(StatePath(dir))
	if len(entries) > 0 && statErr != nil {
		return fmt.Errorf("%s is not empty and holds no lab state (state.json): not removing it", dir)
	}
	var victims []int
	if s, err := Load(dir); err == nil {
		for _, p := range s.processes() {
			if p.Alive() {
				victims = append(victims, p.PID)
			}
		}
	}
	names, err := labNamespaces()
	if err != nil {
		return err
	}
	for _, ns := range names {
		pids, err := pidsIn(ns)
		if err != nil {
			return err
		}
		victims = append(victims, pids...)
	}
	if len(entries) > 0 {
		pids, err := pidsMentioning(dir + string(filepath.Separator))
		if err != nil {
			return err
		}
		victims = append(victims, pids...)
	}
	slices.Sort(victims)
	victims = slices.Compact(victims)
	if len(victims) > 0 {
		stamp(out, "killing %s", describe(victims))
		if err := killAndWait(victims); err != nil {
			return err
		}
	}
	if len(names) > 0 {
		stamp(out, "deleting namespaces %v and %s", names, HostLink)
	}
	if err := deleteNetwork(); err != nil {
		return err
	}
	if len(entries) > 0 {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove %s: %w", dir, err)
		}
		stamp(out, "removed %s", dir)
	}
	return nil
}

// Down stops and removes the lab in dir.
func Down(dir string, out io.Writer) error { return Clean(dir, out) }

// processes lists every process the lab recorded.
func (s *State) processes() []*Process {
	var ps []*Process
	for i := range s.Datacenters {
		dc := &s.Datacenters[i]
		if dc.Server != nil {
			ps = append(ps, dc.Server)
		}
		for j := range dc.Ceph {
			ps = append(ps, &dc.Ceph[j])
		}
	}
	for i := range s.Nodes {
		if s.Nodes[i].Agent != nil {
			ps = append(ps, s.Nodes[i].Agent)
		}
	}
	return ps
}

// stamp prints one line of what the lab did, with the UTC time.
func stamp(out io.Writer, format string, args ...any) {
	fmt.Fprintf(out, "%s %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}
