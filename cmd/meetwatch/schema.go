package main

import (
	"fmt"
	"io"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/schema"
)

// runSchema prints the JSON Schema of a whole event of one kind, for
// teams that generate their models from it or check messages in CI
// without the repository at hand.
func runSchema(args []string, stdout io.Writer) error {
	fs := newFlagSet("schema", `Usage: meetwatch schema started|changed|ended

Prints the JSON Schema (draft 2020-12) of a whole event of that kind: the
CloudEvents envelope and its data, self-contained. Its $id is the
dataschema URI the kind's events carry (docs/events.md).`, io.Discard)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	switch fs.NArg() {
	case 0:
		return usagef("no kind: want one of %s", schema.KindNames())
	case 1:
	default:
		return usagef("unexpected argument %q", fs.Arg(1))
	}
	body, err := schema.For(events.Kind(fs.Arg(0)))
	if err != nil {
		return usagef("unknown kind %q: want one of %s", fs.Arg(0), schema.KindNames())
	}
	if _, err := stdout.Write(body); err != nil {
		return fmt.Errorf("writing the schema: %w", err)
	}
	return nil
}
