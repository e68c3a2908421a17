package docs_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/events/publish"
	"github.com/meetwatch/meetwatch/snapshot"
)

// asyncAPIFile is the document under test, and specFile the AsyncAPI
// 3.0.0 specification's JSON Schema (testdata/README.md says where it
// comes from).
const (
	asyncAPIFile = "asyncapi.yaml"
	specFile     = "testdata/asyncapi-specs/3.0.0-without-id.json"
)

// repoBlob starts every dataschema URI before the schema file's path in
// the repository.
const repoBlob = "https://github.com/meetwatch/meetwatch/blob/main/"

var kinds = []events.Kind{events.Started, events.Changed, events.Ended}

// loadYAML reads a YAML file as the values encoding/json would give for
// the same document, which is what a JSON Schema validates.
func loadYAML(tb testing.TB, path string) map[string]any {
	tb.Helper()
	b, err := os.ReadFile(path)
	require.NoError(tb, err)
	var v any
	require.NoError(tb, yaml.Unmarshal(b, &v), "reading %s", path)
	j, err := json.Marshal(v)
	require.NoError(tb, err, "%s as JSON", path)
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	require.NoError(tb, err)
	m, ok := doc.(map[string]any)
	require.True(tb, ok, "%s is not a mapping", path)
	return m
}

// loadJSON reads a JSON file as a JSON Schema library reads it.
func loadJSON(tb testing.TB, path string) any {
	tb.Helper()
	f, err := os.Open(path)
	require.NoError(tb, err)
	defer f.Close()
	v, err := jsonschema.UnmarshalJSON(f)
	require.NoError(tb, err, "reading %s", path)
	return v
}

// at returns the value at the slash-separated path in doc, failing the
// test when there is none.
func at(tb testing.TB, doc any, path string) any {
	tb.Helper()
	v := doc
	for _, key := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		key = strings.NewReplacer("~1", "/", "~0", "~").Replace(key)
		m, ok := v.(map[string]any)
		require.True(tb, ok, "%s: %q is not under a mapping", path, key)
		v, ok = m[key]
		require.True(tb, ok, "%s: no %q", path, key)
	}
	return v
}

// deref follows v's local $ref ("#/...") in doc, if it has one.
func deref(tb testing.TB, doc, v any) any {
	tb.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	ref, ok := m["$ref"].(string)
	if !ok || !strings.HasPrefix(ref, "#/") {
		return v
	}
	return at(tb, doc, strings.TrimPrefix(ref, "#"))
}

// compileSpec returns the AsyncAPI 3.0.0 specification's JSON Schema.
func compileSpec(tb testing.TB) *jsonschema.Schema {
	tb.Helper()
	c := jsonschema.NewCompiler()
	require.NoError(tb, c.AddResource("asyncapi-3.0.0.json", loadJSON(tb, specFile)))
	sch, err := c.Compile("asyncapi-3.0.0.json")
	require.NoError(tb, err)
	return sch
}

func TestAsyncAPIDocumentKeepsTheSpecification(t *testing.T) {
	spec := compileSpec(t)
	assert.NoError(t, spec.Validate(loadYAML(t, asyncAPIFile)))

	// The specification's schema tells a wrong document apart: these are
	// mistakes one makes moving from AsyncAPI 2 to 3.
	for _, tc := range []struct {
		name  string
		spoil func(doc map[string]any)
	}{
		{"an AsyncAPI 2 action", func(doc map[string]any) {
			at(t, doc, "/operations/sendStarted").(map[string]any)["action"] = "publish"
		}},
		{"a server URL in place of a host", func(doc map[string]any) {
			s := at(t, doc, "/servers/local").(map[string]any)
			delete(s, "host")
			s["url"] = "nats://localhost:4222"
		}},
		{"an operation without its channel", func(doc map[string]any) {
			delete(at(t, doc, "/operations/sendEnded").(map[string]any), "channel")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := loadYAML(t, asyncAPIFile)
			tc.spoil(doc)
			assert.Error(t, spec.Validate(doc))
		})
	}
}

// subjectTemplate returns the address of the channel of kind as the code
// builds it: the subject of an event with "{account}" and "{confUUID}"
// standing for its parameters.
func subjectTemplate(kind events.Kind, account string) string {
	const confUUID = "CONFUUID" // one subject token as it is, unlike "{confUUID}"
	e := events.Event{Type: events.TypePrefix + string(kind), Subject: confUUID, Account: account}
	return strings.TrimSuffix(e.NATSSubject(events.DefaultPrefix), confUUID) + "{confUUID}"
}

// accountChannel names the channel of kind's events with an accounts file.
func accountChannel(kind events.Kind) string {
	return "account" + strings.ToUpper(string(kind[:1])) + string(kind[1:])
}

// schemaPath returns the path in the repository of the schema file of
// kind: the path its dataschema URI names.
func schemaPath(tb testing.TB, kind events.Kind) string {
	tb.Helper()
	uri := events.DataSchema(kind)
	require.True(tb, strings.HasPrefix(uri, repoBlob), "dataschema %s is not a file of the repository", uri)
	return strings.TrimPrefix(uri, repoBlob)
}

func TestAsyncAPIDocumentAgreesWithTheCode(t *testing.T) {
	doc := loadYAML(t, asyncAPIFile)

	t.Run("content type", func(t *testing.T) {
		assert.Equal(t, events.ContentType, at(t, doc, "/defaultContentType"))
		for _, kind := range kinds {
			assert.Equal(t, events.ContentType, at(t, doc, "/components/messages/"+string(kind)+"/contentType"), kind)
		}
	})

	t.Run("version", func(t *testing.T) {
		// The document's major version is the schemas'.
		v, _ := at(t, doc, "/info/version").(string)
		assert.Equal(t, strings.TrimPrefix(events.SchemaVersion, "v"), strings.Split(v, ".")[0], "info.version %q", v)
	})

	t.Run("channels", func(t *testing.T) {
		var want []string
		for _, kind := range kinds {
			for _, ch := range []struct{ name, address string }{
				{string(kind), subjectTemplate(kind, "")},
				{accountChannel(kind), subjectTemplate(kind, "{account}")},
			} {
				want = append(want, ch.name)
				channel := at(t, doc, "/channels/"+ch.name)
				assert.Equal(t, ch.address, at(t, channel, "/address"), ch.name)
				params := regexp.MustCompile(`\{([^}]+)\}`).FindAllStringSubmatch(ch.address, -1)
				var wantParams []string
				for _, p := range params {
					wantParams = append(wantParams, p[1])
					assert.Equal(t, map[string]any{"$ref": "#/components/parameters/" + p[1]}, at(t, channel, "/parameters/"+p[1]), ch.name)
				}
				assert.ElementsMatch(t, wantParams, slices.Collect(maps.Keys(at(t, channel, "/parameters").(map[string]any))), ch.name)
				assert.Equal(t, map[string]any{string(kind): map[string]any{"$ref": "#/components/messages/" + string(kind)}},
					at(t, channel, "/messages"), ch.name)
			}
		}
		assert.ElementsMatch(t, want, slices.Collect(maps.Keys(at(t, doc, "/channels").(map[string]any))), "channels")
	})

	t.Run("operations", func(t *testing.T) {
		// Each channel has one operation, meetwatch's send of its message.
		sent := map[string]int{}
		for name, op := range at(t, doc, "/operations").(map[string]any) {
			assert.Equal(t, "send", at(t, op, "/action"), name)
			ref, _ := at(t, op, "/channel/$ref").(string)
			channel, ok := strings.CutPrefix(ref, "#/channels/")
			if !assert.True(t, ok, "%s: channel %q", name, ref) {
				continue
			}
			sent[channel]++
			var msgs []any
			for m := range maps.Keys(at(t, doc, "/channels/"+channel+"/messages").(map[string]any)) {
				msgs = append(msgs, map[string]any{"$ref": ref + "/messages/" + m})
			}
			assert.ElementsMatch(t, msgs, at(t, op, "/messages"), name)
		}
		for name := range at(t, doc, "/channels").(map[string]any) {
			assert.Equal(t, 1, sent[name], "operations on channel %s", name)
		}
	})

	t.Run("messages", func(t *testing.T) {
		for _, kind := range kinds {
			msg := at(t, doc, "/components/messages/"+string(kind))
			assert.Equal(t, events.TypePrefix+string(kind), at(t, msg, "/name"), kind)
			assert.Equal(t, map[string]any{"$ref": "#/components/schemas/headers"}, at(t, msg, "/headers"), kind)
		}
		var want []string
		for _, kind := range kinds {
			want = append(want, string(kind))
		}
		assert.ElementsMatch(t, want, slices.Collect(maps.Keys(at(t, doc, "/components/messages").(map[string]any))), "messages")
	})

	t.Run("payloads", func(t *testing.T) {
		for _, kind := range kinds {
			repoPath := schemaPath(t, kind)
			assert.Equal(t, map[string]any{"$ref": "../" + repoPath}, at(t, doc, "/components/messages/"+string(kind)+"/payload"), kind)
			file := filepath.Join("..", filepath.FromSlash(repoPath))
			if _, err := os.Stat(file); err != nil {
				t.Errorf("the payload of %s is %s, which cannot be read: %v", kind, repoPath, err)
				continue
			}
			schema := loadJSON(t, file)
			assert.Equal(t, events.DataSchema(kind), at(t, schema, "/$id"), "$id of %s", repoPath)
			for _, p := range draft7Misreadings(schema, "#") {
				t.Errorf("%s: %s", repoPath, p)
			}
		}
	})
}

// draft7Misreadings lists the places in schema that a reader of JSON
// Schema draft-07, which the Schema Object of AsyncAPI extends, would read
// otherwise than draft 2020-12 does. A keyword draft-07 lacks
// (dependentRequired, unevaluatedProperties) is only skipped, so such a
// reader checks less; but items beside prefixItems would hold every item
// to the schema of the items after them, and a reference by anchor or a
// dynamic one cannot be followed at all.
func draft7Misreadings(schema any, path string) []string {
	m, ok := schema.(map[string]any)
	if !ok {
		return nil
	}
	var out []string
	for k := range m {
		switch k {
		case "$anchor", "$dynamicAnchor", "$dynamicRef", "$recursiveAnchor", "$recursiveRef":
			out = append(out, fmt.Sprintf("%s: %s cannot be followed in draft-07", path, k))
		case "prefixItems":
			if _, ok := m["items"]; ok {
				out = append(out, fmt.Sprintf("%s: items beside prefixItems applies to every item in draft-07", path))
			}
		}
	}
	for _, k := range []string{"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"} {
		if sub, ok := m[k].(map[string]any); ok {
			for name, s := range sub {
				out = append(out, draft7Misreadings(s, path+"/"+k+"/"+name)...)
			}
		}
	}
	for _, k := range []string{"items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "contains", "propertyNames", "not", "if", "then", "else"} {
		out = append(out, draft7Misreadings(m[k], path+"/"+k)...)
	}
	for _, k := range []string{"allOf", "anyOf", "oneOf", "prefixItems"} {
		if sub, ok := m[k].([]any); ok {
			for i, s := range sub {
				out = append(out, draft7Misreadings(s, fmt.Sprintf("%s/%s/%d", path, k, i))...)
			}
		}
	}
	return out
}

func TestDraft7MisreadingsFindsWhatDraft7ReadsOtherwise(t *testing.T) {
	got := draft7Misreadings(map[string]any{
		"$defs": map[string]any{"rec": map[string]any{"$dynamicAnchor": "rec", "unevaluatedProperties": false}},
		"properties": map[string]any{
			"pair":      map[string]any{"prefixItems": []any{map[string]any{"type": "string"}}, "items": false},
			"$anchor":   map[string]any{"type": "string"}, // a property's name, not a keyword
			"ended":     map[string]any{"dependentRequired": map[string]any{"startedAt": []any{"durationSeconds"}}},
			"reference": map[string]any{"$ref": "#/$defs/rec", "description": "skipped beside $ref: draft-07 checks less"},
		},
		"allOf": []any{map[string]any{"$dynamicRef": "#rec"}},
	}, "#")
	assert.ElementsMatch(t, []string{
		"#/$defs/rec: $dynamicAnchor cannot be followed in draft-07",
		"#/properties/pair: items beside prefixItems applies to every item in draft-07",
		"#/allOf/0: $dynamicRef cannot be followed in draft-07",
	}, got)
}

// TestAsyncAPIDocumentDescribesWhatMeetwatchSends publishes each kind of
// event through the publisher, with and without an account, and checks
// each stored message against the document: its subject is the address
// of exactly one channel, whose message is named by the event's type; its
// headers are the document's headers, every one; and its body keeps the
// schema that message's payload refers to.
func TestAsyncAPIDocumentDescribesWhatMeetwatchSends(t *testing.T) {
	doc := loadYAML(t, asyncAPIFile)
	const stream = "MEETINGS"
	nc := natstest.Connect(t, natstest.Start(t))
	for _, account := range []string{"", "acme"} {
		pub, err := publish.New(nc, publish.Config{Stream: stream, Prefix: events.DefaultPrefix, Account: account, Duplicates: time.Minute})
		require.NoError(t, err)
		require.NoError(t, pub.EnsureStream(t.Context()))
		b := events.Builder{Source: events.Source("127.0.0.1"), Account: account}
		before, err := snapshot.ParseMeeting([]byte(`{"confUUID":"c0ffee","conferenceID":"914083136","subject":"Weekly sync","startTime":"2026-12-07 14:23"}`))
		require.NoError(t, err)
		after, err := snapshot.ParseMeeting([]byte(`{"confUUID":"c0ffee","conferenceID":"914083136","subject":"Weekly sync, moved","startTime":"2026-12-07 14:23"}`))
		require.NoError(t, err)
		var evs []events.Event
		for _, c := range []snapshot.Change{
			{Kind: snapshot.Started, Key: "c0ffee", New: before},
			{Kind: snapshot.Changed, Key: "c0ffee", Old: before, New: after, Fields: snapshot.CompareRecords(before.Raw(), after.Raw())},
			{Kind: snapshot.Ended, Key: "c0ffee", Old: after},
		} {
			e, err := b.Build(c, time.Date(2026, 12, 7, 15, 0, 0, 0, time.UTC), false, time.Date(2026, 12, 7, 14, 59, 45, 0, time.UTC))
			require.NoError(t, err)
			evs = append(evs, e)
		}
		_, err = pub.Publish(t.Context(), evs)
		require.NoError(t, err)
		pub.Close()
	}

	// The channels' addresses as patterns of subjects.
	type channel struct {
		name    string
		address *regexp.Regexp
	}
	var channels []channel
	for name, ch := range at(t, doc, "/channels").(map[string]any) {
		pattern := regexp.QuoteMeta(at(t, ch, "/address").(string))
		pattern = regexp.MustCompile(`\\\{[^}]+\\\}`).ReplaceAllString(pattern, `[^.]+`)
		channels = append(channels, channel{name, regexp.MustCompile("^" + pattern + "$")})
	}

	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7) // the Schema Object of AsyncAPI is draft-07's
	headerSchema := at(t, doc, "/components/schemas/headers")
	require.NoError(t, c.AddResource("headers.json", headerSchema))
	headers, err := c.Compile("headers.json")
	require.NoError(t, err)
	wantHeaders := slices.Sorted(maps.Keys(at(t, headerSchema, "/properties").(map[string]any)))
	var required []string
	for _, h := range at(t, headerSchema, "/required").([]any) {
		required = append(required, h.(string))
	}
	assert.ElementsMatch(t, wantHeaders, required, "every header is always sent")

	msgs := natstest.Messages(t, nc, stream)
	require.Len(t, msgs, 6)
	for _, m := range msgs {
		e, err := events.Decode(m.Data)
		require.NoError(t, err)
		var matched []string
		for _, ch := range channels {
			if ch.address.MatchString(m.Subject) {
				matched = append(matched, ch.name)
			}
		}
		if !assert.Len(t, matched, 1, "channels of subject %s", m.Subject) {
			continue
		}
		msgs := at(t, doc, "/channels/"+matched[0]+"/messages").(map[string]any)
		require.Len(t, msgs, 1)
		var msg any
		for _, ref := range msgs {
			msg = deref(t, doc, ref)
		}
		assert.Equal(t, e.Type, at(t, msg, "/name"), "message of channel %s, for subject %s", matched[0], m.Subject)

		got := map[string]any{}
		for k, v := range m.Header {
			got[k] = strings.Join(v, ",")
		}
		assert.Equal(t, wantHeaders, slices.Sorted(maps.Keys(got)), "headers on %s", m.Subject)
		assert.NoError(t, headers.Validate(got), "headers on %s", m.Subject)
		assert.Equal(t, e.ID, got["Nats-Msg-Id"], "Nats-Msg-Id on %s", m.Subject)
		assert.Equal(t, stream, got["Nats-Expected-Stream"], "Nats-Expected-Stream on %s", m.Subject)

		ref, _ := at(t, msg, "/payload/$ref").(string)
		file := filepath.FromSlash(ref)
		if _, err := os.Stat(file); err != nil {
			t.Errorf("the payload of %s is %s, which cannot be read: %v", matched[0], ref, err)
			continue
		}
		body, err := jsonschema.UnmarshalJSON(bytes.NewReader(m.Data))
		require.NoError(t, err)
		loc, err := filepath.Abs(file)
		require.NoError(t, err)
		pc := jsonschema.NewCompiler()
		require.NoError(t, pc.AddResource(loc, loadJSON(t, file)))
		payload, err := pc.Compile(loc)
		require.NoError(t, err, "compiling %s", ref)
		assert.NoError(t, payload.Validate(body), "%s against %s", m.Subject, ref)
	}
}
