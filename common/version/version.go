// Package version reports what a connector binary is: its version and commit (set at link time with
// -ldflags "-X github.com/numaflow-connectors/sources/common/version.Version=v0.1.0 -X
// .../version.Commit=abc1234", or read from the Go build info), and the numaflow-go version it embeds.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set at link time; empty means: read the build info.
var (
	Version string
	Commit  string
)

const numaflowGoPath = "github.com/numaproj/numaflow-go"

// Get returns the version and the short commit: the linked values, else the main module's version and
// the VCS revision from the build info ("devel" and "unknown" when neither is known).
func Get() (version, commit string) {
	version, commit = Version, Commit
	bi, ok := debug.ReadBuildInfo()
	if version == "" && ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		version = bi.Main.Version
	}
	if commit == "" && ok {
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if len(commit) > 7 {
			commit = commit[:7]
		}
		if commit != "" && modified {
			commit += "-dirty"
		}
	}
	if version == "" {
		version = "devel"
	}
	if commit == "" {
		commit = "unknown"
	}
	return version, commit
}

// NumaflowGo returns the version of numaflow-go linked into the binary ("unknown" when it is not).
func NumaflowGo() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return depVersion(bi, numaflowGoPath)
}

func depVersion(bi *debug.BuildInfo, path string) string {
	for _, d := range bi.Deps {
		if d.Path != path {
			continue
		}
		if d.Replace != nil {
			if d.Replace.Version != "" {
				return d.Replace.Version
			}
			return d.Version + " (replaced by " + d.Replace.Path + ")"
		}
		return d.Version
	}
	return "unknown"
}

// String describes the binary, e.g. "sqs-source v0.1.0 (commit abc1234, numaflow-go v0.12.0, go1.26.8)".
func String(name string) string {
	v, c := Get()
	return fmt.Sprintf("%s %s (commit %s, numaflow-go %s, %s)", name, v, c, NumaflowGo(), strings.TrimSpace(runtime.Version()))
}
