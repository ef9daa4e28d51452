package e2e

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// consoleMarkers numbers the markers of consoleRun; seeded from the clock so that output kept
// from an earlier run can never hold the marker of a later one.
var consoleMarkers atomic.Int64

func init() { consoleMarkers.Store(time.Now().UnixNano() % 1_000_000 * 1000) }

// consoleRun types input (one shell line) into a VM's serial console with `kumo console
// --until` and returns as soon as the guest has run it: the line ends by echoing a marker the
// guest's shell computes (`echo kumo-done-$((N+1))` prints kumo-done-<N+1>), so neither the
// echoed input nor earlier output matches it. The command fails if the marker does not appear
// within 45 s (Run allows a minute).
func consoleRun(kubeconfig, vm, input string) Result {
	n := consoleMarkers.Add(1)
	line := strings.TrimRight(input, "\n") + fmt.Sprintf("; echo kumo-done-$((%d+1))\n", n)
	return Run(kubeconfig, line, bins.kumo, "console", vm, "--until", fmt.Sprintf("kumo-done-%d", n+1), "--timeout", "45s")
}
