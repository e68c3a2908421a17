// Package schema holds the JSON Schemas (draft 2020-12) of meetwatch's
// events, one per kind, each of a whole event: the CloudEvents envelope
// and its data. They are the contract for consumers outside Go, who
// generate their models from them and check messages against them; each
// event names its schema in its dataschema attribute, and
// `meetwatch schema <kind>` prints it.
//
// The files are self-contained (no reference a validator must fetch) and
// generated: `go generate ./events/schema` writes them from one
// description of their shared parts. Package validate checks events
// against them.
package schema

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"strings"

	"github.com/meetwatch/meetwatch/events"
)

//go:generate go run ./internal/gen -model ../../watcher/meetingapi/apisim/testdata/conference-info-model.txt -out v1

// files are the schemas, under the version events.SchemaVersion names.
//
//go:embed v1/started.json v1/changed.json v1/ended.json
var files embed.FS

// Errors returned when a schema is asked for.
var (
	// ErrUnknownKind means a kind has no schema: it is none of Kinds.
	ErrUnknownKind = errors.New("unknown event kind")
)

// Kinds returns the kinds of event, each with a schema, in the order a
// meeting's events come: started, changed, ended.
func Kinds() []events.Kind {
	return []events.Kind{events.Started, events.Changed, events.Ended}
}

// KindNames returns Kinds as one line for people: "started, changed, ended".
func KindNames() string {
	names := make([]string, 0, 3)
	for _, k := range Kinds() {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

// Path returns where the schema of kind lies in the repository, under
// events/schema: "v1/started.json". Its URI, the $id, is
// events.DataSchema(kind).
func Path(kind events.Kind) string {
	return events.SchemaVersion + "/" + string(kind) + ".json"
}

// For returns the schema of events of kind, as the file holds it. The
// bytes are the caller's.
func For(kind events.Kind) ([]byte, error) {
	body, err := files.ReadFile(Path(kind))
	if err != nil {
		return nil, fmt.Errorf("schema of %q: %w (want one of %s)", kind, ErrUnknownKind, KindNames())
	}
	return bytes.Clone(body), nil
}
