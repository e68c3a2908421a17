package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/internal/repo"
)

// modelPath is the list of the API's ConferenceInfo model the schemas are
// made from, as go generate passes it.
const modelPath = "watcher/meetingapi/apisim/testdata/conference-info-model.txt"

// inRepo returns the path of rel from the repository's root.
func inRepo(tb testing.TB, rel string) string {
	tb.Helper()
	p, err := repo.Path(rel)
	require.NoError(tb, err)
	return p
}

func generated(tb testing.TB) map[string][]byte {
	tb.Helper()
	f, err := os.Open(inRepo(tb, modelPath))
	require.NoError(tb, err)
	defer f.Close()
	files, err := generate(f)
	require.NoError(tb, err)
	return files
}

// TestCommittedSchemasAreGenerated: the schema files are what gen writes
// from the model, so that no one edits one by hand and forgets the others.
func TestCommittedSchemasAreGenerated(t *testing.T) {
	files := generated(t)
	require.Len(t, files, 3)
	for name, want := range files {
		got, err := os.ReadFile(inRepo(t, "events/schema/v1/"+name))
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got), "events/schema/v1/%s is not what gen writes: run go generate ./events/schema", name)
	}
}

// TestEveryFieldOfTheModel: the record's schema has every field of the
// model, with the model's type (or null), in the definition of the type
// that holds it, and lets any other field through.
func TestEveryFieldOfTheModel(t *testing.T) {
	var s struct {
		Defs map[string]json.RawMessage `json:"$defs"`
	}
	require.NoError(t, json.Unmarshal(generated(t)["changed.json"], &s))
	type def struct {
		Properties           map[string]any `json:"properties"`
		AdditionalProperties bool           `json:"additionalProperties"`
	}
	defs := map[string]def{}
	for name, raw := range s.Defs {
		var d def
		require.NoError(t, json.Unmarshal(raw, &d))
		defs[name] = d
	}
	// types lists the JSON types a property's schema allows, following
	// references, alternatives and an array's items ("array of integer").
	var types func(v any) []string
	types = func(v any) []string {
		m := v.(map[string]any)
		var out []string
		if r, ok := m["$ref"].(string); ok {
			name := strings.TrimPrefix(r, "#/$defs/")
			if name == "truncated" {
				return []string{"marker"}
			}
			return []string{"object " + name}
		}
		for _, alt := range asList(m["anyOf"]) {
			out = append(out, types(alt)...)
		}
		for _, t := range asList(m["type"]) {
			if t == "array" {
				for _, it := range types(m["items"]) {
					out = append(out, "array of "+it)
				}
				continue
			}
			out = append(out, t.(string))
		}
		return out
	}

	f, err := os.Open(inRepo(t, modelPath))
	require.NoError(t, err)
	defer f.Close()
	fields, err := readModel(f)
	require.NoError(t, err)
	require.Greater(t, len(fields), 100)
	for _, fd := range fields {
		if strings.HasSuffix(fd.path, "[]") {
			continue // an array's elements: checked with the array
		}
		parent, key := "", fd.path
		if i := strings.LastIndex(fd.path, "."); i >= 0 {
			parent, key = fd.path[:i], fd.path[i+1:]
		}
		d, ok := defs[typeNames[parent]]
		require.True(t, ok, "the type holding %s", fd.path)
		assert.True(t, d.AdditionalProperties, "%s is open to fields the API adds", typeNames[parent])
		prop, ok := d.Properties[key]
		if !assert.True(t, ok, "%s is in the schema", fd.path) {
			continue
		}
		got := types(prop)
		switch fd.kind {
		case "object":
			assert.Contains(t, got, "object "+typeNames[fd.path], fd.path)
		case "array":
			elem := fields[indexOf(fields, fd.path+"[]")]
			want := "array of " + elem.kind
			if elem.kind == "object" {
				want = "array of object " + typeNames[elem.path]
			}
			assert.Contains(t, got, want, fd.path)
		default:
			assert.Contains(t, got, fd.kind, fd.path)
		}
		if fd.path != "confUUID" {
			assert.Contains(t, got, "null", "%s may be null", fd.path)
		}
	}
}

func asList(v any) []any {
	switch v := v.(type) {
	case []any:
		return v
	case nil:
		return nil
	default:
		return []any{v}
	}
}

func indexOf(fields []field, path string) int {
	for i, f := range fields {
		if f.path == path {
			return i
		}
	}
	return -1
}
