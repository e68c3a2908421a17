package main

// The command line itself: usage errors, flags among arguments, the
// version, and what the help texts say.

import (
	"context"
	"debug/buildinfo"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// TestUsageErrorsAreOneLine: whatever is wrong with a command line, and
// whichever command it is, meetwatch says so in one line on stderr, naming
// the problem and pointing at the command's --help, prints nothing on
// stdout, and exits 2.
func TestUsageErrorsAreOneLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string // the problem, in the line
		help string // the help pointed at
	}{
		{name: "no command", args: nil, want: "no command", help: "meetwatch --help"},
		{name: "unknown command", args: []string{"frobnicate"}, want: `unknown command "frobnicate"`, help: "meetwatch --help"},
		{name: "run: unknown flag", args: []string{"run", "--frobnicate"}, want: "-frobnicate", help: "meetwatch run --help"},
		{name: "run: unexpected argument", args: []string{"run", "now"}, want: `unexpected argument "now"`, help: "meetwatch run --help"},
		{name: "demo: bad value", args: []string{"demo", "--interval", "soon"}, want: `invalid value "soon" for flag -interval`, help: "meetwatch demo --help"},
		{name: "demo: unexpected argument", args: []string{"demo", "extra"}, want: `unexpected argument "extra"`, help: "meetwatch demo --help"},
		{name: "demo: negative meetings", args: []string{"demo", "--meetings", "-1"}, want: "--meetings -1: must not be negative", help: "meetwatch demo --help"},
		{name: "tail: unknown flag", args: []string{"tail", "--follow"}, want: "-follow", help: "meetwatch tail --help"},
		{name: "tail: flag without its value", args: []string{"tail", "--since"}, want: "flag needs an argument: -since", help: "meetwatch tail --help"},
		{name: "tail: too many arguments", args: []string{"tail", "meetings.ended.>", "meetings.started.>"}, want: `unexpected argument "meetings.started.>"`, help: "meetwatch tail --help"},
		{name: "tail: bad moment", args: []string{"tail", "--since", "yesterday"}, want: "RFC 3339", help: "meetwatch tail --help"},
		{name: "tail: --all and --since", args: []string{"tail", "--all", "--since", "5m"}, want: "--all and --since", help: "meetwatch tail --help"},
		{name: "ls: unexpected argument", args: []string{"ls", "extra"}, want: `unexpected argument "extra"`, help: "meetwatch ls --help"},
		{name: "ls: bad value", args: []string{"ls", "--timeout", "long"}, want: `invalid value "long" for flag -timeout`, help: "meetwatch ls --help"},
		{name: "audit: missing --out", args: []string{"audit"}, want: "--out is required", help: "meetwatch audit --help"},
		{name: "audit: unexpected argument", args: []string{"audit", "--out", "-", "meetings.>"}, want: `unexpected argument "meetings.>"`, help: "meetwatch audit --help"},
		{name: "audit: bad durable", args: []string{"audit", "--out", "-", "--durable", "a.b"}, want: `--durable "a.b"`, help: "meetwatch audit --help"},
		{name: "notify: missing --webhook", args: []string{"notify", "--format", "slack"}, want: "--webhook is required", help: "meetwatch notify --help"},
		{name: "notify: unknown flag", args: []string{"notify", "--channel", "x"}, want: "-channel", help: "meetwatch notify --help"},
		{name: "sim: bad value", args: []string{"sim", "--meetings", "many"}, want: `invalid value "many" for flag -meetings`, help: "meetwatch sim --help"},
		{name: "sim: unexpected argument", args: []string{"sim", "extra"}, want: `unexpected argument "extra"`, help: "meetwatch sim --help"},
		{name: "sim: no accounts", args: []string{"sim", "--accounts", "0"}, want: "--accounts 0: must be at least 1", help: "meetwatch sim --help"},
		{name: "version: unexpected argument", args: []string{"version", "extra"}, want: `unexpected argument "extra"`, help: "meetwatch version --help"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mw := runInProcess(t, nil, tt.args...)
			stderr := mw.stderr.String()
			assert.Equal(t, exitUsage, mw.code, "exit code; stderr:\n%s", stderr)
			assert.Equal(t, 1, strings.Count(stderr, "\n"), "one line:\n%s", stderr)
			assert.True(t, strings.HasSuffix(stderr, "\n"), "the line ends: %q", stderr)
			assert.Contains(t, stderr, tt.want)
			assert.Contains(t, stderr, "(see "+tt.help+")")
			assert.NotContains(t, stderr, "Usage:", "the usage is not printed with the error")
			assert.Empty(t, mw.stdout.String())
		})
	}
}

// TestFlagsAmongArguments: flags parse wherever they stand among a
// command's arguments, up to a "--", after which everything is an
// argument.
func TestFlagsAmongArguments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		wantJSON bool
		wantOut  string
		wantArgs []string
	}{
		{name: "flags first", args: []string{"--json", "--out", "f", "meetings.>"}, wantJSON: true, wantOut: "f", wantArgs: []string{"meetings.>"}},
		{name: "flags after", args: []string{"meetings.ended.>", "--json"}, wantJSON: true, wantArgs: []string{"meetings.ended.>"}},
		{name: "flags between", args: []string{"a", "--out", "f", "b", "--json"}, wantJSON: true, wantOut: "f", wantArgs: []string{"a", "b"}},
		{name: "a flag's value that is -", args: []string{"--out", "-", "a"}, wantOut: "-", wantArgs: []string{"a"}},
		{name: "a lone - is an argument", args: []string{"-", "--json"}, wantJSON: true, wantArgs: []string{"-"}},
		{name: "-- ends the flags", args: []string{"a", "--", "--json", "-x"}, wantArgs: []string{"a", "--json", "-x"}},
		{name: "-- first", args: []string{"--", "--out"}, wantArgs: []string{"--out"}},
		{name: "none", args: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFlagSet("test", "Usage: test", &simtest.Buffer{})
			asJSON := fs.Bool("json", false, "")
			out := fs.String("out", "", "")
			require.NoError(t, parseFlags(fs, tt.args, &simtest.Buffer{}))
			assert.Equal(t, tt.wantJSON, *asJSON, "--json")
			assert.Equal(t, tt.wantOut, *out, "--out")
			if len(tt.wantArgs) == 0 {
				assert.Empty(t, fs.Args(), "the arguments that are not flags")
				return
			}
			assert.Equal(t, tt.wantArgs, fs.Args(), "the arguments that are not flags")
		})
	}

	stdout := &simtest.Buffer{}
	fs := newFlagSet("test", "Usage: test [filter]", &simtest.Buffer{})
	assert.ErrorIs(t, parseFlags(fs, []string{"meetings.>", "--help"}, stdout), flag.ErrHelp, "--help after an argument")
	assert.Contains(t, stdout.String(), "Usage: test [filter]")

	// Flags after the arguments get as far as connecting to NATS (which
	// nothing answers here), not a usage error.
	for _, args := range [][]string{
		{"tail", "meetings.ended.>", "--json"},
		{"tail", "meetings.ended.>", "--since", "1h", "--json"},
		{"audit", "--durable", "x", "--out", "-"},
	} {
		mw := runInProcess(t, map[string]string{"MEETWATCH_NATS_URL": "nats://127.0.0.1:1"}, args...)
		assert.Equal(t, exitFailed, mw.code, "%v; stderr:\n%s", args, mw.stderr)
		assert.Contains(t, mw.stderr.String(), "connecting to nats://127.0.0.1:1", "%v", args)
	}
	mw := runInProcess(t, nil, "ls", "--", "--json")
	assert.Equal(t, exitUsage, mw.code)
	assert.Contains(t, mw.stderr.String(), `unexpected argument "--json"`, "after --, a flag is an argument")
}

// TestVersion: meetwatch version, --version and -version print one line on
// stdout with the version, the commit, the Go version and the platform.
func TestVersion(t *testing.T) {
	t.Parallel()
	var lines []string
	for _, arg := range []string{"version", "--version", "-version"} {
		mw := runInProcess(t, nil, arg)
		assert.Equal(t, exitOK, mw.code, "%s; stderr:\n%s", arg, mw.stderr)
		assert.Empty(t, mw.stderr.String(), arg)
		lines = append(lines, mw.stdout.String())
	}
	assert.Equal(t, lines[0], lines[1], "--version")
	assert.Equal(t, lines[0], lines[2], "-version")
	line := regexp.MustCompile(`^meetwatch \S+ \(commit [^)]+\) (go\S+) (\S+/\S+)\n$`)
	m := line.FindStringSubmatch(lines[0])
	require.NotNil(t, m, "the line: %q", lines[0])
	assert.Equal(t, runtime.Version(), m[1])
	assert.Equal(t, runtime.GOOS+"/"+runtime.GOARCH, m[2])

	mw := runInProcess(t, nil, "--help")
	assert.Contains(t, mw.stdout.String(), "meetwatch version", "the usage names the command")
}

// TestVersionOfTheBuiltBinary: the binary prints what the go command
// stamped into it: its module version, and the commit, its time and
// whether the tree was modified when it was built with version control.
func TestVersionOfTheBuiltBinary(t *testing.T) {
	t.Parallel()
	bi, err := buildinfo.ReadFile(binary)
	require.NoError(t, err)
	for _, arg := range []string{"version", "--version"} {
		mw := startMeetwatch(t, nil, arg)
		require.Equal(t, 0, mw.wait(t, exitWait), "%s; stderr:\n%s", arg, mw.stderr)
		assert.Equal(t, buildOf(bi, "").String()+"\n", mw.stdout.String(), arg)
		assert.Empty(t, mw.stderr.String())
	}

	// run says which build it is in its first log line.
	b := buildOf(bi, "")
	api := startAPI(t, "version-token", 1)
	srv := natstest.Start(t)
	mw := startMeetwatch(t, runEnv(api.URL, "version-token", srv.ClientURL()), "run")
	want := fmt.Sprintf("msg=\"meetwatch starting\" version=%s commit=%s modified=%t go=%s", b.Version, b.Commit, b.Modified, runtime.Version())
	require.Eventually(t, func() bool { return strings.Contains(mw.stderr.String(), want) }, eventWait, tick, "waiting for %q", want)
	assert.Contains(t, strings.SplitN(mw.stderr.String(), "\n", 2)[0], want, "the first line")
	mw.stop(t, syscall.SIGTERM)
}

// TestBuildOf: the version set at link time comes first, then the module's;
// the commit, its time and the modified mark come from version control,
// and a build without it says its commit is unknown.
func TestBuildOf(t *testing.T) {
	t.Parallel()
	vcs := []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	tests := []struct {
		name   string
		bi     *debug.BuildInfo
		linked string
		want   string
	}{
		{name: "a tagged build", bi: &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: vcs[:3]},
			want: "meetwatch v1.2.3 (commit 0123456789ab, 2026-01-02T03:04:05Z)"},
		{name: "modified", bi: &debug.BuildInfo{Main: debug.Module{Version: "v1.2.4-0.20260102030405-0123456789ab+dirty"}, Settings: vcs},
			want: "meetwatch v1.2.4-0.20260102030405-0123456789ab+dirty (commit 0123456789ab, 2026-01-02T03:04:05Z, modified)"},
		{name: "set at link time", bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs[:3]}, linked: "v2.0.0",
			want: "meetwatch v2.0.0 (commit 0123456789ab, 2026-01-02T03:04:05Z)"},
		{name: "from an archive", bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			want: "meetwatch (devel) (commit unknown)"},
		{name: "no build information", want: "meetwatch (devel) (commit unknown)"},
		{name: "no build information, set at link time", linked: "v3.1.0", want: "meetwatch v3.1.0 (commit unknown)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := buildOf(tt.bi, tt.linked).String()
			assert.Equal(t, tt.want+" "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH, got)
		})
	}
}

// TestRunHelpGivesEveryVariableItsMeaning: every configuration variable
// has its meaning in a desc tag, and `run --help` prints it beside the
// variable with its default, on the variable's own line.
func TestRunHelpGivesEveryVariableItsMeaning(t *testing.T) {
	t.Parallel()
	mw := runInProcess(t, nil, "run", "--help")
	require.Equal(t, exitOK, mw.code)
	help := mw.stdout.String()
	n := 0
	for _, f := range reflect.VisibleFields(reflect.TypeFor[config]()) {
		if f.Anonymous {
			continue
		}
		n++
		name := envPrefix + f.Tag.Get("env")
		desc := f.Tag.Get("desc")
		if !assert.NotEmpty(t, desc, "%s (field %s) has no desc tag", name, f.Name) {
			continue
		}
		assert.Regexp(t, `(?m)^  `+regexp.QuoteMeta(name)+` +`+regexp.QuoteMeta(desc)+` \(default: [^\n]+\)$`, help, name)
	}
	assert.Greater(t, n, 40, "the embedded structs' variables are listed too")
	assert.Regexp(t, `(?m)^  MEETWATCH_NATS_URL +NATS server URLs, comma-separated \(default: empty, meaning an embedded server`, help)
	assert.Regexp(t, `(?m)^  MEETWATCH_NATS_USER +\S`, help, "a variable of NATSAuth")
	assert.Regexp(t, `(?m)^  MEETWATCH_LEASE_TTL +\S`, help, "a variable of HA")
}

// TestHelpTextsSayWhatTheyMean: demo's --nats-listen names its value an
// address, and sim's --seed shows no default that changes from run to run.
func TestHelpTextsSayWhatTheyMean(t *testing.T) {
	t.Parallel()
	demo := runInProcess(t, nil, "demo", "--help").stdout.String()
	assert.Contains(t, demo, "-nats-listen address")
	assert.NotContains(t, demo, "-nats-listen meetwatch")

	sim := runInProcess(t, nil, "sim", "--help").stdout.String()
	assert.Contains(t, sim, "-seed seed")
	assert.NotRegexp(t, `\d{6}`, sim, "no random number in the help")
	assert.Equal(t, sim, runInProcess(t, nil, "sim", "--help").stdout.String(), "the same help every time")
}

// TestSimPrintsItsSeed: a simulator given no seed picks one and prints it,
// and another given that seed serves the same meetings.
func TestSimPrintsItsSeed(t *testing.T) {
	t.Parallel()
	seedLine := regexp.MustCompile(`random seed (\d+) \(--seed (\d+) repeats this run\)`)
	serve := func(args ...string) (seed string, uuids []string) {
		ctx, cancel := context.WithCancel(t.Context())
		stdout := &simtest.Buffer{}
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, append([]string{"sim", "--addr", "127.0.0.1:0", "--churn", "0", "--meetings", "5", "--token", "seed-token"}, args...),
				nil, stdout, &simtest.Buffer{})
		}()
		defer func() {
			cancel()
			assert.Equal(t, exitOK, <-done)
		}()
		require.Eventually(t, func() bool { return simURL.MatchString(stdout.String()) }, eventWait, tick, "waiting for the simulator")
		m := seedLine.FindStringSubmatch(stdout.String())
		require.NotNil(t, m, "the seed line in:\n%s", stdout)
		assert.Equal(t, m[1], m[2])
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, simURL.FindStringSubmatch(stdout.String())[1]+apisim.Path, nil)
		require.NoError(t, err)
		req.Header.Set("X-Access-Token", "seed-token")
		client := &http.Client{Timeout: 10 * time.Second}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var page struct {
			Data []struct {
				UUID string `json:"confUUID"`
			} `json:"data"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
		for _, d := range page.Data {
			uuids = append(uuids, d.UUID)
		}
		require.Len(t, uuids, 5)
		return m[1], uuids
	}
	seed, first := serve()
	assert.NotEqual(t, "0", seed)
	again, second := serve("--seed", seed)
	assert.Equal(t, seed, again)
	assert.ElementsMatch(t, first, second, "the same meetings")
}
