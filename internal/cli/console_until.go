package cli

import (
	"bytes"
	"fmt"
	"time"
)

// untilMarker ends `kumo console NAME --until STRING` as soon as STRING has appeared in the
// console output, and fails it when STRING has not appeared within the timeout or the console
// closed first. Scripts and tests wait for a marker their own command prints instead of
// sleeping a fixed time. A nil *untilMarker waits for nothing.
type untilMarker struct {
	vm       string
	marker   []byte
	timeout  time.Duration
	deadline time.Time
	// tail holds the last len(marker)-1 bytes of output, so that a marker split across two
	// WebSocket messages is still found.
	tail  []byte
	found bool
}

// newUntilMarker starts the clock of --timeout for the console of a VM.
func newUntilMarker(vm, marker string, timeout time.Duration) *untilMarker {
	return &untilMarker{vm: vm, marker: []byte(marker), timeout: timeout, deadline: time.Now().Add(timeout)}
}

// seen feeds the next chunk of output and reports whether the marker has appeared so far.
func (u *untilMarker) seen(chunk []byte) bool {
	if u == nil {
		return false
	}
	if u.found {
		return true
	}
	buf := make([]byte, 0, len(u.tail)+len(chunk))
	buf = append(append(buf, u.tail...), chunk...)
	if bytes.Contains(buf, u.marker) {
		u.found = true
		u.tail = nil
		return true
	}
	if keep := len(u.marker) - 1; len(buf) > keep {
		buf = buf[len(buf)-keep:]
	}
	u.tail = bytes.Clone(buf)
	return false
}

// expired fires at the deadline; never for a nil *untilMarker.
func (u *untilMarker) expired() <-chan time.Time {
	if u == nil {
		return nil
	}
	return time.After(time.Until(u.deadline))
}

// timeoutErr is the error of a marker that did not appear in time.
func (u *untilMarker) timeoutErr() error {
	return fmt.Errorf("console of VM %s: %q did not appear within %s (--timeout)", u.vm, u.marker, u.timeout)
}

// closed turns the end of the console stream (err nil: closed normally) into the command's
// result: with a marker still awaited, a closed console is a failure.
func (u *untilMarker) closed(err error) error {
	if err != nil || u == nil || u.found {
		return err
	}
	return fmt.Errorf("console of VM %s closed before %q appeared", u.vm, u.marker)
}
