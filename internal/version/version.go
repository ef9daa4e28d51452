// Package version holds Kumo's version, set at build time with
// -ldflags "-X kumo.dev/kumo/internal/version.Version=...".
package version

import "runtime/debug"

// Version of this build.
var Version = "v0.1.0-dev"

// Commit returns the VCS revision the binary was built from, when Go recorded it.
func Commit() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
	}
	return "unknown"
}
