package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// logsMu orders keeping and pruning logs, so a prune never removes the directory a keep just
// created.
var logsMu sync.Mutex

// What the agent keeps of ended incarnations: their serial log and QEMU's log, so that a VM's last
// words can be read after a stop or a crash. Bounded per VM and in age.
const (
	// logsKept is how many ended incarnations' logs are kept per VM.
	logsKept = 3
	// logsMaxAge is how long the logs of an ended incarnation are kept at most.
	logsMaxAge = 7 * 24 * time.Hour
	// logPrunePeriod is how often expired logs are removed.
	logPrunePeriod = time.Hour
)

// Suffixes of the kept files, after "<uid>-<incarnation>".
const (
	serialLogSuffix = ".serial.log"
	qemuLogSuffix   = ".qemu.log"
)

// logsDir is where the logs of the VM namespace/name's ended incarnations are kept.
func (a *Agent) logsDir(key string) string {
	ns, name, _ := strings.Cut(key, "/")
	return filepath.Join(a.opts.DataDir, "logs", ns, name)
}

// keepLogs moves an ended incarnation's serial and QEMU logs out of its run directory (which is
// removed next) to DataDir/logs/<ns>/<name>/<uid>-<incarnation>.{serial,qemu}.log, then drops
// what is beyond the bounds.
func (a *Agent) keepLogs(rt *runtimeVM) {
	logsMu.Lock()
	defer logsMu.Unlock()
	dir := a.logsDir(rt.key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		slog.Warn("keep the logs of an ended incarnation", "vm", rt.key, "err", err)
		return
	}
	base := filepath.Join(dir, fmt.Sprintf("%s-%d", rt.uid, rt.incarnation))
	now := time.Now()
	for src, dst := range map[string]string{rt.serialLog(): base + serialLogSuffix, rt.cfg.LogFile(): base + qemuLogSuffix} {
		if err := os.Rename(src, dst); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				slog.Warn("keep the logs of an ended incarnation", "vm", rt.key, "file", src, "err", err)
			}
			continue
		}
		// The modification time is when the incarnation ended: pruning keeps the latest ones.
		_ = os.Chtimes(dst, now, now)
	}
	pruneVMLogs(dir, now)
}

// pruneLogs removes expired logs of every VM.
func (a *Agent) pruneLogs(context.Context) {
	logsMu.Lock()
	defer logsMu.Unlock()
	vmDirs, _ := filepath.Glob(filepath.Join(a.opts.DataDir, "logs", "*", "*"))
	now := time.Now()
	for _, dir := range vmDirs {
		pruneVMLogs(dir, now)
	}
}

// keptIncarnation is the logs of one ended incarnation in a VM's logs directory.
type keptIncarnation struct {
	uid         string
	incarnation int64
	ended       time.Time
	files       []string
}

// keptIncarnations lists the incarnations whose logs dir holds, latest first.
func keptIncarnations(dir string) []*keptIncarnation {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	byBase := map[string]*keptIncarnation{}
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), serialLogSuffix)
		if !ok {
			if base, ok = strings.CutSuffix(e.Name(), qemuLogSuffix); !ok {
				continue
			}
		}
		i := strings.LastIndexByte(base, '-')
		if i < 0 {
			continue
		}
		inc, err := strconv.ParseInt(base[i+1:], 10, 64)
		info, ierr := e.Info()
		if err != nil || ierr != nil {
			continue
		}
		k := byBase[base]
		if k == nil {
			k = &keptIncarnation{uid: base[:i], incarnation: inc}
			byBase[base] = k
		}
		k.files = append(k.files, filepath.Join(dir, e.Name()))
		if info.ModTime().After(k.ended) {
			k.ended = info.ModTime()
		}
	}
	kept := make([]*keptIncarnation, 0, len(byBase))
	for _, k := range byBase {
		kept = append(kept, k)
	}
	sort.Slice(kept, func(i, j int) bool {
		if !kept[i].ended.Equal(kept[j].ended) {
			return kept[i].ended.After(kept[j].ended)
		}
		return kept[i].incarnation > kept[j].incarnation
	})
	return kept
}

// pruneVMLogs keeps the logsKept latest incarnations of one VM's logs directory that ended within
// logsMaxAge, and removes the directory once it is empty.
func pruneVMLogs(dir string, now time.Time) {
	for i, k := range keptIncarnations(dir) {
		if i < logsKept && now.Sub(k.ended) <= logsMaxAge {
			continue
		}
		for _, f := range k.files {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				slog.Warn("remove an old incarnation's log", "file", f, "err", err)
			}
		}
	}
	_ = os.Remove(dir) // only succeeds when empty
}

// keptSerialLog finds the kept serial log of an ended incarnation of VM key: the given uid and
// incarnation when known ("" and 0 mean any), else the latest. ok is false when none is kept.
func (a *Agent) keptSerialLog(key, uid string, incarnation int64) (path string, ok bool) {
	for _, k := range keptIncarnations(a.logsDir(key)) {
		if (uid != "" && k.uid != uid) || (incarnation != 0 && k.incarnation != incarnation) {
			continue
		}
		for _, f := range k.files {
			if strings.HasSuffix(f, serialLogSuffix) {
				return f, true
			}
		}
	}
	return "", false
}
