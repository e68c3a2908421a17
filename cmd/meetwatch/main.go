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
  meetwatch <command> --help        help for one command

Configuration is read from MEETWATCH_* environment variables; see README.md.
`

// run is main without the process: tests call it with their own arguments,
// environment and output.
func run(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
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
	default:
		fmt.Fprintf(stderr, "meetwatch: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	var cfgErr *configError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &cfgErr):
		fmt.Fprintf(stderr, "meetwatch: configuration: %v\n", cfgErr)
		return exitUsage
	case errors.Is(err, errUsage):
		return exitUsage
	default:
		fmt.Fprintf(stderr, "meetwatch %s: %v\n", cmd, err)
		return exitFailed
	}
}

// errUsage reports bad flags, which the flag package has already printed.
var errUsage = errors.New("usage")

// parseFlags parses a sub-command's flags. Asked for help, it prints the
// usage on stdout, so that `meetwatch run --help | less` works; on a bad
// flag, the flag package has printed the usage on stderr.
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
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		return err
	default:
		return errUsage
	}
}

// checkCounts refuses what the flag package lets through for the
// simulator's commands: arguments after the flags, and a negative
// --meetings.
func checkCounts(stderr io.Writer, cmd string, fs *flag.FlagSet, meetings int) error {
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "meetwatch %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return errUsage
	case meetings < 0:
		fmt.Fprintf(stderr, "meetwatch %s: --meetings %d: must not be negative\n", cmd, meetings)
		return errUsage
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
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
