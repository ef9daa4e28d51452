package agent

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kumo.dev/kumo/internal/hypervisor/qemu"
)

// endIncarnation writes what an incarnation leaves in its run directory and keeps its logs as
// forget does.
func endIncarnation(t *testing.T, a *Agent, key, uid string, inc int64, serial string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	rt := &runtimeVM{key: key, uid: uid, incarnation: inc, dir: dir, cfg: qemu.Config{RunDir: dir}}
	if err := os.WriteFile(rt.serialLog(), []byte(serial), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rt.cfg.LogFile(), []byte("qemu says bye\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.keepLogs(rt)
}

func readKept(t *testing.T, a *Agent, key, uid string, inc int64) (string, bool) {
	t.Helper()
	path, ok := a.keptSerialLog(key, uid, inc)
	if !ok {
		return "", false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data), true
}

func TestEndedIncarnationsLogsAreKeptBounded(t *testing.T) {
	a := &Agent{opts: Options{DataDir: t.TempDir()}}
	const key = "tenant-a/web"
	for inc := int64(1); inc <= 5; inc++ {
		endIncarnation(t, a, key, "uid-1", inc, "last words of incarnation "+string(rune('0'+inc))+"\n")
	}
	// The last three are kept, serial and QEMU log each; the older ones are gone.
	files, _ := filepath.Glob(filepath.Join(a.logsDir(key), "*"))
	if len(files) != 2*logsKept {
		t.Fatalf("kept files %v, want %d", files, 2*logsKept)
	}
	for inc := int64(1); inc <= 5; inc++ {
		got, ok := readKept(t, a, key, "uid-1", inc)
		if want := inc > 5-logsKept; ok != want {
			t.Errorf("incarnation %d kept = %v, want %v", inc, ok, want)
		}
		if ok && !strings.Contains(got, "incarnation "+string(rune('0'+inc))) {
			t.Errorf("incarnation %d serves %q", inc, got)
		}
	}
	if got, ok := readKept(t, a, key, "", 0); !ok || !strings.Contains(got, "incarnation 5") {
		t.Errorf("latest kept log = %q, %v; want incarnation 5", got, ok)
	}
	// Another VM object under the same name (deleted and created again) is told apart by UID.
	if _, ok := readKept(t, a, key, "uid-2", 5); ok {
		t.Error("a log of another VM object served for uid-2")
	}

	// Logs older than logsMaxAge expire.
	old := time.Now().Add(-logsMaxAge - time.Hour)
	for _, f := range files {
		if strings.Contains(filepath.Base(f), "-4.") {
			if err := os.Chtimes(f, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	a.pruneLogs(t.Context())
	if _, ok := readKept(t, a, key, "uid-1", 4); ok {
		t.Error("an expired incarnation's log is still served")
	}
	if _, ok := readKept(t, a, key, "uid-1", 5); !ok {
		t.Error("a recent incarnation's log was pruned")
	}
}

// The serial log of an incarnation the node neither runs nor keeps is not found (404), even while
// another incarnation of the VM runs: an empty answer would say that incarnation printed nothing.
func TestShowLogOfAnIncarnationNotKeptIsNotFound(t *testing.T) {
	a := &Agent{opts: Options{Node: "n1", DataDir: t.TempDir()}, running: map[string]*runtimeVM{}}
	dir := filepath.Join(t.TempDir(), "run")
	a.running["t/vm"] = &runtimeVM{key: "t/vm", uid: "u1", incarnation: 5, dir: dir, cfg: qemu.Config{RunDir: dir}}
	for _, q := range []string{"incarnation=4", "uid=u0"} {
		r := httptest.NewRequest("GET", "/v1/vms/t/vm/console?showLog=true&"+q, nil)
		r.SetPathValue("ns", "t")
		r.SetPathValue("name", "vm")
		w := httptest.NewRecorder()
		a.serveSerialLog(w, r)
		if w.Code != http.StatusNotFound {
			t.Errorf("show-log ?%s while incarnation 5 runs and nothing is kept: %d %q, want 404", q, w.Code, w.Body.String())
		}
	}
	// The running incarnation that printed nothing yet: empty, not an error.
	r := httptest.NewRequest("GET", "/v1/vms/t/vm/console?showLog=true&incarnation=5", nil)
	r.SetPathValue("ns", "t")
	r.SetPathValue("name", "vm")
	w := httptest.NewRecorder()
	a.serveSerialLog(w, r)
	if w.Code != http.StatusOK || w.Body.Len() != 0 {
		t.Errorf("show-log of the running incarnation that printed nothing: %d %q, want 200 and nothing", w.Code, w.Body.String())
	}
}
