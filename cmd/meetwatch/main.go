// Command meetwatch turns Huawei Cloud Meeting's list of ongoing meetings
// into a stream of started, ended and changed events on NATS JetStream.
//
// main only wires: it reads the configuration, owns the signals and the
// goroutines, and hands the work to the watcher and events packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	_ "time/tzdata" // MEETWATCH_API_TIME_ZONE and notify's --time-zone in an image without a zone database

	"github.com/meetwatch/meetwatch/snapshot/redact"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], environMap(os.Environ()), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2 // bad flags or configuration
)

const usage = `meetwatch turns the Huawei Cloud Meeting ongoing-meeting list into
started / ended / changed events on NATS JetStream.

Usage:
  meetwatch run                     the daemon: poll, diff, publish, commit
  meetwatch check [--json]          check run's configuration against the API and NATS, writing nothing
  meetwatch demo                    a local trial: embedded NATS, a simulated API, live events
  meetwatch tail [--json] [filter]  print events as they arrive (filter e.g. meetings.ended.>)
  meetwatch ls [--json]             list the meetings going on now, from the state bucket
  meetwatch notify --webhook URL --format FORMAT [--kinds started,ended]
                                    post one chat message per event to Slack, Feishu, DingTalk,
                                    WeCom or WeLink, or the event to any CloudEvents receiver
  meetwatch audit --out FILE        append every event to FILE exactly once, in stream order
  meetwatch sim [flags]             serve the simulated meeting API, for trials and tests
  meetwatch schema KIND             print the JSON Schema of a started, changed or ended event
  meetwatch version                 print the version, commit and Go version of this build
  meetwatch <command> --help        help for one command

Flags may come before or after a command's other arguments; -- ends them.

Configuration is read from MEETWATCH_* environment variables; see README.md.
`

// run is main without the process: tests call it with their own arguments,
// environment and output.
func run(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsageError(stderr, "", "no command")
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case "-version", "--version", "version":
		cmd = "version"
		err = runVersion(rest, stdout)
	case "run":
		err = runDaemon(ctx, rest, environ, stdout, stderr)
	case "check":
		err = runCheck(ctx, rest, environ, stdout, stderr)
	case "demo":
		err = runDemo(ctx, rest, stdout, stderr)
	case "tail":
		err = runTail(ctx, rest, environ, stdout, stderr)
	case "ls":
		err = runLs(ctx, rest, environ, stdout, stderr)
	case "notify":
		err = runNotify(ctx, rest, environ, stdout, stderr)
	case "audit":
		err = runAudit(ctx, rest, environ, stdout, stderr)
	case "sim":
		err = runSim(ctx, rest, environ, stdout, stderr)
	case "schema":
		err = runSchema(rest, stdout)
	default:
		printUsageError(stderr, "", fmt.Sprintf("unknown command %q", cmd))
		return exitUsage
	}
	var (
		cfgErr   *configError
		usageErr *badUsage
	)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &usageErr):
		printUsageError(stderr, cmd, usageErr.problem)
		return exitUsage
	case errors.As(err, &cfgErr):
		fmt.Fprintf(stderr, "meetwatch: configuration: %s\n", redact.Text(cfgErr.Error()))
		return exitUsage
	case errors.Is(err, errUsage):
		return exitUsage
	default:
		fmt.Fprintf(stderr, "meetwatch %s: %s\n", cmd, redact.Text(err.Error()))
		return exitFailed
	}
}

// badUsage is a command line meetwatch cannot run: a flag it does not
// know or cannot read, one that is missing, an argument too many. run
// prints it as one line, with where to read how the command is used, and
// exits 2.
type badUsage struct {
	problem string
}

func (e *badUsage) Error() string { return e.problem }

// Is makes every usage error an errUsage.
func (e *badUsage) Is(target error) bool { return target == errUsage }

// usagef returns a badUsage naming the problem.
func usagef(format string, args ...any) error {
	return &badUsage{problem: fmt.Sprintf(format, args...)}
}

// errUsage is a bad command line already reported.
var errUsage = errors.New("usage")

// printUsageError writes the one line of a usage error: the problem and
// the help that explains the command, so the mistake is not lost above a
// screenful of usage. cmd is empty for meetwatch itself.
func printUsageError(stderr io.Writer, cmd, problem string) {
	name := strings.TrimSpace("meetwatch " + cmd)
	fmt.Fprintf(stderr, "%s: %s (see %s --help)\n", name, problem, name)
}

// parseFlags parses a sub-command's flags, before and after its other
// arguments alike (`tail 'meetings.ended.>' --json`), up to a "--", and
// leaves the other arguments in fs.Args. Asked for help, it prints the
// usage on stdout, so that `meetwatch run --help | less` works; a flag it
// cannot parse is a badUsage.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(stdout)
			fs.Usage()
			return flag.ErrHelp
		}
	}
	// The error is reported in one line, not followed by the usage.
	fs.SetOutput(io.Discard)
	var positional []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return usagef("%v", err)
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			positional = append(positional, rest...) // all after "--"
			break
		}
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	// Parsing "--" alone sets no flag, and leaves fs.Args as the arguments
	// that are not flags.
	return fs.Parse(append([]string{"--"}, positional...))
}

// noArguments refuses the arguments that are not flags, for the commands
// that take none.
func noArguments(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// checkCounts refuses what the flag package lets through for the
// simulator's commands: arguments that are not flags, and a negative
// --meetings.
func checkCounts(fs *flag.FlagSet, meetings int) error {
	if err := noArguments(fs); err != nil {
		return err
	}
	if meetings < 0 {
		return usagef("--meetings %d: must not be negative", meetings)
	}
	return nil
}

func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n", synopsis)
		if hasFlags(fs) {
			fmt.Fprintln(fs.Output(), "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

func environMap(kv []string) map[string]string {
	m := make(map[string]string, len(kv))
	for _, e := range kv {
		if k, v, ok := strings.Cut(e, "="); ok {
			m[k] = v
		}
	}
	return m
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	lvl, _ := parseLevel(level) // validated with the configuration
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	// No line shows the credentials of a URL, whoever put the URL in it.
	return slog.New(redact.Handler(h))
}
