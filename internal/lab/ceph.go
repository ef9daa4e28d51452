package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// runCephUp brings Ceph up with hack/ceph/up.sh spread over the datacenters' namespaces and
// returns its daemons per datacenter (found through their pid files) for faults and Heal. It
// only reads s, so it may run while the servers start.
func runCephUp(ctx context.Context, s *State) ([][]Process, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	logPath := filepath.Join(s.Dir, "logs", "ceph-up.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("ceph bring-up log: %w", err)
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, filepath.Join(s.RepoRoot, "hack", "ceph", "up.sh"), s.CephDir)
	cmd.Env = append(os.Environ(), s.CephEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		tail, _ := os.ReadFile(logPath)
		if len(tail) > 3000 {
			tail = tail[len(tail)-3000:]
		}
		return nil, fmt.Errorf("hack/ceph/up.sh %s: %w:\n%s", s.CephDir, err, tail)
	}
	daemons := make([][]Process, len(s.Datacenters))
	for i := range s.Datacenters {
		dc := &s.Datacenters[i]
		ids := [][2]string{{"mon", dc.Name}, {"osd", fmt.Sprint(i)}}
		if i == 0 {
			ids = append(ids, [2]string{"mgr", "x"})
		}
		for _, id := range ids {
			name := id[0] + "." + id[1]
			p := Process{
				Name: "ceph-" + name, Namespace: dc.Namespace,
				Argv:    []string{"ceph-" + id[0], "-c", s.CephConf, "-i", id[1]},
				Log:     filepath.Join(s.CephDir, "log", name+".out"),
				PIDFile: filepath.Join(s.CephDir, "run", name+".pid"),
			}
			b, err := os.ReadFile(p.PIDFile)
			if err != nil {
				return nil, fmt.Errorf("pid of %s: %w", name, err)
			}
			if _, err := fmt.Sscan(string(b), &p.PID); err != nil {
				return nil, fmt.Errorf("pid file of %s: %w", name, err)
			}
			p.StartTime, _, _ = procStat(p.PID)
			daemons[i] = append(daemons[i], p)
		}
	}
	return daemons, nil
}

// Ceph runs the ceph CLI as the cluster's admin from the host (through the host's veth).
func (s *State) Ceph(ctx context.Context, args ...string) (string, error) {
	if s.CephConf == "" {
		return "", fmt.Errorf("the lab runs no Ceph")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ceph", append([]string{"-c", s.CephConf, "--connect-timeout", "10"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("ceph %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// CephHealth is a summary of the cluster: its health status and the monitors in quorum.
type CephHealth struct {
	Status      string   // HEALTH_OK, HEALTH_WARN, HEALTH_ERR
	Checks      []string // names of the failing health checks
	Quorum      []string // monitors in quorum
	OSDsUp      int
	OSDsIn      int
	PGsTotal    int
	PGsClean    int // active+clean
	PGsInactive int // PGs not active (I/O to them blocks)
}

// CephStatus reads `ceph status`.
func (s *State) CephStatus(ctx context.Context) (*CephHealth, error) {
	out, err := s.Ceph(ctx, "status", "-f", "json")
	if err != nil {
		return nil, err
	}
	var st struct {
		Health struct {
			Status string                     `json:"status"`
			Checks map[string]json.RawMessage `json:"checks"`
		} `json:"health"`
		QuorumNames []string `json:"quorum_names"`
		OSDMap      struct {
			NumUp int `json:"num_up_osds"`
			NumIn int `json:"num_in_osds"`
		} `json:"osdmap"`
		PGMap struct {
			NumPGs int `json:"num_pgs"`
			States []struct {
				Name  string `json:"state_name"`
				Count int    `json:"count"`
			} `json:"pgs_by_state"`
		} `json:"pgmap"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("decode ceph status: %w", err)
	}
	h := &CephHealth{Status: st.Health.Status, Quorum: st.QuorumNames,
		OSDsUp: st.OSDMap.NumUp, OSDsIn: st.OSDMap.NumIn, PGsTotal: st.PGMap.NumPGs}
	for k := range st.Health.Checks {
		h.Checks = append(h.Checks, k)
	}
	for _, x := range st.PGMap.States {
		if x.Name == "active+clean" {
			h.PGsClean += x.Count
		}
		if !strings.Contains(x.Name, "active") {
			h.PGsInactive += x.Count
		}
	}
	return h, nil
}

// WaitCephHealthy waits for HEALTH_OK with every monitor in quorum, every OSD up and in and
// every PG active+clean.
func WaitCephHealthy(ctx context.Context, s *State, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var why string
	for {
		h, err := s.CephStatus(ctx)
		switch {
		case err != nil:
			why = err.Error()
		case h.Status == "HEALTH_OK" && len(h.Quorum) == len(s.Datacenters) && h.OSDsUp == len(s.Datacenters) &&
			h.OSDsIn == len(s.Datacenters) && h.PGsClean == h.PGsTotal && h.PGsTotal > 0:
			return nil
		default:
			why = fmt.Sprintf("%s %v, quorum %v, osds up %d in %d, pgs clean %d/%d", h.Status, h.Checks, h.Quorum, h.OSDsUp, h.OSDsIn, h.PGsClean, h.PGsTotal)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ceph not healthy: %s: %w", why, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
