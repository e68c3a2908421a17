package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// version is the release this binary is, for a build that names it:
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/meetwatch
//
// Left empty, the version is the main module's, as the go command stamped
// it into the build.
var version string

// build says which build of meetwatch runs, for `meetwatch version` and
// the log line run starts with: enough to find its source again.
type build struct {
	Version  string // a tag, a pseudo-version, or "(devel)"
	Commit   string // the commit built from, or "unknown"
	Time     string // the commit's time, RFC 3339, or empty
	Modified bool   // the work tree had changes not committed
}

// readBuild returns this binary's build.
func readBuild() build {
	bi, _ := debug.ReadBuildInfo() // nil when not built by the go command
	return buildOf(bi, version)
}

// buildOf reads a build from the build information the go command
// stamps, and from a version set at link time, which comes first. A
// build without version control (from an archive, or with -buildvcs=false)
// has no commit.
func buildOf(bi *debug.BuildInfo, linked string) build {
	b := build{Version: linked, Commit: "unknown"}
	if bi == nil {
		bi = &debug.BuildInfo{}
	}
	if b.Version == "" {
		b.Version = bi.Main.Version
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// String is the line `meetwatch version` prints, e.g.
// "meetwatch v1.2.3 (commit 0123456789ab, 2026-01-02T03:04:05Z, modified) go1.26.8 linux/amd64".
func (b build) String() string {
	about := []string{"commit " + shortCommit(b.Commit)}
	if b.Time != "" {
		about = append(about, b.Time)
	}
	if b.Modified {
		about = append(about, "modified")
	}
	return fmt.Sprintf("meetwatch %s (%s) %s %s/%s", b.Version, strings.Join(about, ", "),
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// shortCommit shortens a commit hash as git log --abbrev=12 does: enough
// to find it, short enough to read.
func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

func runVersion(args []string, stdout io.Writer) error {
	fs := newFlagSet("version", `Usage: meetwatch version

Prints the version of this build, the commit it was built from (and
whether the work tree had changes not committed), and the Go version and
platform, on one line. meetwatch --version does the same.`, io.Discard)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := noArguments(fs); err != nil {
		return err
	}
	fmt.Fprintln(stdout, readBuild())
	return nil
}
