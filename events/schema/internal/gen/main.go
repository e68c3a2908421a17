// Command gen writes the JSON Schemas of meetwatch's events, one file per
// kind, from one description of their shared parts: the CloudEvents
// envelope, the record (read from the list of the API's ConferenceInfo
// model that the simulator is checked against), the truncation marker and
// the change. The three files differ only where the kinds do, and a test
// checks that the committed files are what gen writes.
//
//	go generate ./events/schema
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

func main() {
	model := flag.String("model", "", "the ConferenceInfo model file")
	out := flag.String("out", "", "the directory to write <kind>.json to")
	flag.Parse()
	if err := run(*model, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(modelPath, dir string) error {
	f, err := os.Open(modelPath)
	if err != nil {
		return fmt.Errorf("reading the model: %w", err)
	}
	defer f.Close()
	files, err := generate(f)
	if err != nil {
		return err
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

// kinds are the event kinds, each with a file.
var kinds = []events.Kind{events.Started, events.Changed, events.Ended}

// generate returns the schema files, by name, for the model read from r.
func generate(r io.Reader) (map[string][]byte, error) {
	fields, err := readModel(r)
	if err != nil {
		return nil, fmt.Errorf("reading the model: %w", err)
	}
	defs, err := recordDefs(fields)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for _, k := range kinds {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(eventSchema(k, defs)); err != nil {
			return nil, fmt.Errorf("encoding the %s schema: %w", k, err)
		}
		files[string(k)+".json"] = buf.Bytes()
	}
	return files, nil
}

// obj is a JSON object that keeps its members in the order written, so
// that a schema reads from the envelope down rather than alphabetically.
type obj []member

type member struct {
	key string
	val any
}

// MarshalJSON writes the members in order.
func (o obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(m.key)
		if err != nil {
			return nil, err
		}
		var v bytes.Buffer
		enc := json.NewEncoder(&v)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(m.val); err != nil {
			return nil, fmt.Errorf("%s: %w", m.key, err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(bytes.TrimRight(v.Bytes(), "\n"))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// ref is a reference to a definition of the same file: the schemas stay
// self-contained, with nothing for a validator to fetch.
func ref(def string) obj { return obj{{"$ref", "#/$defs/" + def}} }

// markerDef names the definition of the truncation marker.
const markerDef = "truncated"

func eventSchema(k events.Kind, record []member) obj {
	return obj{
		{"$schema", "https://json-schema.org/draft/2020-12/schema"},
		{"$id", events.DataSchema(k)},
		{"title", events.TypePrefix + string(k)},
		{"description", fmt.Sprintf("A meetwatch %s event: a CloudEvents 1.0 event in structured JSON mode, the whole message body. Fields may be added to any object without a new version (docs/events.md, Versions).", k)},
		{"type", "object"},
		{"required", []string{"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema", "data"}},
		{"properties", obj{
			{"specversion", obj{{"description", "The CloudEvents version."}, {"type", "string"}, {"const", events.SpecVersion}}},
			{"id", obj{{"description", "Deterministic: the same transition published again has the same id (and Nats-Msg-Id)."}, {"type", "string"}, {"pattern", "^[0-9a-f]{32}$"}}},
			{"source", obj{{"description", "meetwatch://<API host>, and /<account> with an accounts file."}, {"type", "string"}, {"format", "uri-reference"}, {"minLength", 1}}},
			{"type", obj{{"type", "string"}, {"const", events.TypePrefix + string(k)}}},
			{"subject", obj{{"description", "The meeting's confUUID."}, {"type", "string"}, {"minLength", 1}}},
			{"time", obj{{"description", "When the change was observed: the end of the listing that saw it, in UTC."}, {"type", "string"}, {"format", "date-time"}}},
			{"datacontenttype", obj{{"type", "string"}, {"const", events.DataContentType}}},
			{"dataschema", obj{{"description", "This schema's $id: its kind and version."}, {"type", "string"}, {"format", "uri"}, {"const", events.DataSchema(k)}}},
			{"account", obj{{"description", "Extension attribute, only with an accounts file: the account whose listing the event comes from."}, {"type", "string"}, {"minLength", 1}}},
			{"data", ref("data")},
		}},
		{"additionalProperties", true},
		{"$defs", slices.Concat(obj{
			{"data", dataSchema(k)},
			{markerDef, obj{
				{"description", "Stands for a value cut so that the event fits the size limit: count is an array's number of elements, or the size of any other value's JSON text in bytes."},
				{"type", "object"},
				{"required", []string{"truncated", "count"}},
				{"properties", obj{{"truncated", obj{{"const", true}}}, {"count", obj{{"type", "integer"}, {"minimum", 0}}}}},
				{"additionalProperties", false},
			}},
			{"timestamp", obj{{"description", "RFC 3339, in UTC."}, {"type", "string"}, {"format", "date-time"}}},
		}, changeDefs(k), obj(record))},
	}
}

func changeDefs(k events.Kind) obj {
	if k != events.Changed {
		return nil
	}
	return obj{{"fieldChange", obj{
		{"description", "One field that differs between previous and conference. old or new is absent when the field was absent on that side; a change of a secret (redacted) or of a value cut to fit the size limit (truncated) has neither."},
		{"type", "object"},
		{"required", []string{"field"}},
		{"properties", obj{
			{"field", obj{{"description", "A dotted path into nested objects (confConfigInfo.isAutoMute); arrays are compared whole; a . or \\ within a key is escaped with \\."}, {"type", "string"}}},
			{"old", obj{{"description", "The value in previous, any JSON value."}}},
			{"new", obj{{"description", "The value in conference, any JSON value."}}},
			{"redacted", obj{{"description", "A secret changed; its values are not published."}, {"const", true}}},
			{"truncated", obj{{"description", "The field was cut from a record to fit the size limit; its values are not published."}, {"const", true}}},
		}},
		{"additionalProperties", true},
		{"if", obj{{"anyOf", []obj{{{"required", []string{"redacted"}}}, {{"required", []string{"truncated"}}}}}}},
		{"then", obj{{"properties", obj{{"old", false}, {"new", false}}}}},
	}}}
}

func dataSchema(k events.Kind) obj {
	records := "^conference\\."
	props := obj{{"conference", obj{
		{"description", "The record as the API sent it, every field kept, secrets removed; for ended, the last record seen."},
		{"$ref", "#/$defs/ConferenceInfo"},
	}}}
	required := []string{"conference", "incarnation"}
	var extra obj
	switch k {
	case events.Started:
		props = append(props, member{"initial", obj{{"description", "Set on events of the very first snapshot a watcher took: the meeting was already running."}, {"type", "boolean"}}})
	case events.Changed:
		records = "^(conference|previous)\\."
		props = append(props,
			member{"previous", obj{{"description", "The prior record."}, {"$ref", "#/$defs/ConferenceInfo"}}},
			member{"changes", obj{{"description", "The fields that differ, sorted by field."}, {"type", "array"}, {"items", ref("fieldChange")}}},
		)
		required = []string{"conference", "previous", "incarnation"}
	case events.Ended:
		props = append(props,
			member{"lastSeen", obj{{"description", "When the last snapshot that still held the meeting was observed."}, {"$ref", "#/$defs/timestamp"}}},
			member{"endedAt", obj{{"description", "When the listing that found the meeting gone was taken, never before lastSeen."}, {"$ref", "#/$defs/timestamp"}}},
			member{"durationSeconds", obj{{"description", "Whole seconds from startedAt to endedAt."}, {"type", "integer"}, {"minimum", 0}}},
		)
		required = []string{"conference", "endedAt", "incarnation"}
		extra = obj{{"dependentRequired", obj{{"startedAt", []string{"durationSeconds"}}, {"durationSeconds", []string{"startedAt"}}}}}
	}
	props = append(props,
		member{"startedAt", obj{{"description", "The record's startTime, read in the zone the API writes it in (MEETWATCH_API_TIME_ZONE), in UTC; absent when the record has none in the API's layout."}, {"$ref", "#/$defs/timestamp"}}},
		member{"incarnation", obj{{"description", "Which start of the meeting under its confUUID: 1 for the first, n+1 once it is listed again after its n-th ended."}, {"type", "integer"}, {"minimum", 1}}},
		member{"truncated", obj{
			{"description", "The fields of the records that hold a truncation marker, sorted: conference. or previous. followed by the field's path."},
			{"type", "array"}, {"minItems", 1}, {"uniqueItems", true},
			{"items", obj{{"type", "string"}, {"pattern", records}}},
		}},
	)
	return slices.Concat(obj{
		{"type", "object"},
		{"required", required},
		{"properties", props},
		{"additionalProperties", true},
	}, extra)
}

// field is one line of the model: a path, its JSON kind, and the values
// an enumeration documents.
type field struct {
	path, kind string
	oneOf      []string // a|b|c
	listOf     []string // a,b,c
}

func readModel(r io.Reader) ([]field, error) {
	var fields []field
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Fields(line)
		if len(parts) != 2 && len(parts) != 3 {
			return nil, fmt.Errorf("line %q: want a path, a kind and maybe values", line)
		}
		f := field{path: parts[0], kind: parts[1]}
		if len(parts) == 3 {
			if strings.Contains(parts[2], ",") {
				f.listOf = strings.Split(parts[2], ",")
			} else {
				f.oneOf = strings.Split(parts[2], "|")
			}
		}
		fields = append(fields, f)
	}
	return fields, sc.Err()
}

// typeNames names the model's object types as Huawei's SDKs do, for the
// definitions, so that models generated from the schemas carry those
// names; every object of the model needs one.
var typeNames = map[string]string{
	"":                              "ConferenceInfo",
	"passwordEntry[]":               "PasswordEntry",
	"cycleParams":                   "CycleParams",
	"confConfigInfo":                "RestConfConfigDTO",
	"partAttendeeInfo[]":            "PartAttendee",
	"picDisplay":                    "MultiPicDisplayDO",
	"picDisplay.subscriberInPics[]": "PicInfoNotify",
	"picDisplay.picLayoutInfo":      "PicLayoutInfo",
	"picDisplay.picLayoutInfo.subPicLayoutInfoList[]": "SubPicLayoutInfo",
	"subConfs[]":                "CycleSubConf",
	"subConfs[].confConfigInfo": "CycleSubConfConfigDTO",
	"subConfs[].confConfigInfo.showAudienceCountInfo": "ShowAudienceCountInfo",
}

// protected are the fields snapshot.Trim never cuts, and so never hold a
// marker.
var protected = []string{"confUUID", "conferenceID", "subject", "startTime"}

// notes describe the fields a consumer most often reads.
var notes = map[string]string{
	"confUUID":                 "Unique per meeting instance: the event's subject, and the last token of its NATS subject. Always present.",
	"conferenceID":             "The meeting ID people dial, reused by recurring and personal-room meetings.",
	"startTime":                "YYYY-MM-DD HH:MM, without a zone; data.startedAt is the same time in UTC.",
	"endTime":                  "YYYY-MM-DD HH:MM, without a zone: the scheduled end.",
	"scheduserName":            "The organiser.",
	"onlineAttendeeAmount":     "People in the meeting now.",
	"partAttendeeInfo[].phone": "Masked by the API.",
}

// recordDefs returns a definition per object type of the model.
//
// Every field is optional and may be null, and every object stays open
// to fields the API adds. A field reached from the record through objects
// alone may hold a truncation marker instead of its value when the value
// is a string, an array or an object: Trim cuts a value only when the
// marker is shorter, never inside an array, and never the protected
// fields.
func recordDefs(fields []field) ([]member, error) {
	secret := map[string]bool{}
	for _, p := range redact.Default {
		secret[p] = true
	}
	children := map[string][]field{}
	kindOf := map[string]string{"": "object"}
	for _, f := range fields {
		if _, dup := kindOf[f.path]; dup {
			return nil, fmt.Errorf("the model repeats %s", f.path)
		}
		kindOf[f.path] = f.kind
		parent := ""
		if i := strings.LastIndexAny(f.path, ".["); i >= 0 {
			parent = f.path[:i]
			if f.path[i] == '[' {
				parent = f.path // an array's elements are its child "[]"
				continue
			}
		}
		children[parent] = append(children[parent], f)
	}
	var defs []member
	var visit func(path string) error
	visit = func(path string) error {
		name, ok := typeNames[path]
		if !ok {
			return fmt.Errorf("the model's object %q has no type name", path)
		}
		var props obj
		for _, f := range children[path] {
			key := f.path
			if path != "" {
				key = strings.TrimPrefix(f.path, path+".")
			}
			s, err := fieldSchema(f, kindOf, visit)
			if err != nil {
				return err
			}
			var desc []string
			if n := notes[f.path]; n != "" {
				desc = append(desc, n)
			}
			if f.oneOf != nil {
				desc = append(desc, "Documented values: "+strings.Join(f.oneOf, ", ")+".")
			}
			if f.listOf != nil {
				desc = append(desc, "A comma-separated list of: "+strings.Join(f.listOf, ", ")+".")
			}
			if secret[f.path] {
				desc = append(desc, "A secret: removed from events unless MEETWATCH_REDACT leaves it in.")
			}
			trimmable := !strings.Contains(f.path, "[]") && !slices.Contains(protected, f.path) &&
				(f.kind == "string" || f.kind == "array" || f.kind == "object")
			var alts []obj
			switch {
			case f.path == "confUUID":
				alts = []obj{{{"type", "string"}, {"minLength", 1}}}
			case f.kind == "array":
				s[0].val = []string{"array", "null"}
				alts = []obj{s}
			case f.kind == "object":
				alts = []obj{s, {{"type", "null"}}}
			default:
				alts = []obj{{{"type", []string{f.kind, "null"}}}}
			}
			if trimmable {
				alts = append(alts, ref(markerDef))
			}
			s = obj{{"anyOf", alts}}
			if len(alts) == 1 {
				s = alts[0]
			}
			if len(desc) > 0 {
				s = append(obj{{"description", strings.Join(desc, " ")}}, s...)
			}
			props = append(props, member{key, s})
		}
		def := obj{{"title", name}, {"type", "object"}}
		if path == "" {
			def = append(def, member{"description", "A record of the ongoing-meeting list: every field of the API's ConferenceInfo model, each optional, and any field the API adds."},
				member{"required", []string{"confUUID"}})
		}
		def = append(def, member{"properties", props}, member{"additionalProperties", true})
		defs = append(defs, member{name, def})
		return nil
	}
	if err := visit(""); err != nil {
		return nil, err
	}
	// The record first, then the types inside it, by name.
	slices.SortStableFunc(defs[:len(defs)-1], func(a, b member) int { return strings.Compare(a.key, b.key) })
	return append(defs[len(defs)-1:], defs[:len(defs)-1]...), nil
}

// fieldSchema returns the schema of f's values, without null or markers:
// its type, an object's definition, an array's items.
func fieldSchema(f field, kindOf map[string]string, visit func(string) error) (obj, error) {
	switch f.kind {
	case "object":
		if err := visit(f.path); err != nil {
			return nil, err
		}
		return ref(typeNames[f.path]), nil
	case "array":
		elem := f.path + "[]"
		k, ok := kindOf[elem]
		if !ok {
			return nil, fmt.Errorf("the model gives the array %s no elements", f.path)
		}
		items, err := fieldSchema(field{path: elem, kind: k}, kindOf, visit)
		if err != nil {
			return nil, err
		}
		return obj{{"type", "array"}, {"items", items}}, nil
	case "string", "integer", "boolean", "number":
		return obj{{"type", f.kind}}, nil
	default:
		return nil, fmt.Errorf("%s: unknown kind %q", f.path, f.kind)
	}
}
