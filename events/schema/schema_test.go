package schema_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/schema"
)

// pinned are the SHA-256 sums of the schema files of the version events
// keep. A change of a schema is a change of the contract with every
// consumer, so it must be made on purpose, and this test fails until it is
// weighed (docs/events.md, Versions):
//
//   - a compatible change (an optional field added, a field of the API's
//     model added, a description reworded) keeps the version: update the
//     sums here;
//   - an incompatible one (a field removed, renamed, made required or
//     given another type or meaning; a kind's data reshaped) makes the
//     next version: new files under events/schema/v2, events.SchemaVersion
//     "v2" and so new dataschema URIs, and a new type per CloudEvents'
//     advice (meetwatch.meeting.started.v2), while v1 stays as it was.
var pinned = struct {
	version string
	sums    map[events.Kind]string
}{
	version: "v1",
	sums: map[events.Kind]string{
		events.Started: "acd9cceb7a4b65a5dbee9d9b8d874df4409120b5b6e2ae9a8ad50711bb4a928d",
		events.Changed: "52ba141477282f6154ff51bc167e9356e15d031d1b0218df951e3cc4d96f93ea",
		events.Ended:   "00a9782bad510e6a16ac4f6d188d622fd97e5053a2d01a2862916524a30efdbe",
	},
}

// TestSchemasArePinned: the schemas are the ones whose changes were
// weighed; see pinned.
func TestSchemasArePinned(t *testing.T) {
	require.Equal(t, pinned.version, events.SchemaVersion,
		"a new version of the schemas: pin its files here, and keep the last version's files as they were")
	for _, k := range schema.Kinds() {
		body, err := schema.For(k)
		require.NoError(t, err)
		sum := sha256.Sum256(body)
		assert.Equal(t, pinned.sums[k], hex.EncodeToString(sum[:]),
			"events/schema/%s changed. If the change is compatible (an optional field or a field of the API's model added, a description reworded), update its sum in pinned; "+
				"if it is not (a field removed, renamed, required or retyped), keep %s as it is and make the next version: new files, a new dataschema, a new type (docs/events.md, Versions)",
			schema.Path(k), events.SchemaVersion)
	}
}

// TestForEveryKind: each kind's schema is a draft 2020-12 schema whose $id
// is the dataschema its events carry, of the whole event of that type.
func TestForEveryKind(t *testing.T) {
	for _, k := range schema.Kinds() {
		body, err := schema.For(k)
		require.NoError(t, err)
		onDisk, err := os.ReadFile(schema.Path(k))
		require.NoError(t, err)
		assert.Equal(t, onDisk, body, "the file as it is in the repository")
		var s struct {
			Schema     string `json:"$schema"`
			ID         string `json:"$id"`
			Properties struct {
				Type       struct{ Const string } `json:"type"`
				DataSchema struct{ Const string } `json:"dataschema"`
			} `json:"properties"`
		}
		require.NoError(t, json.Unmarshal(body, &s))
		assert.Equal(t, "https://json-schema.org/draft/2020-12/schema", s.Schema)
		assert.Equal(t, events.DataSchema(k), s.ID)
		assert.Equal(t, events.DataSchema(k), s.Properties.DataSchema.Const)
		assert.Equal(t, events.TypePrefix+string(k), s.Properties.Type.Const)

		body[0] = 'x'
		again, err := schema.For(k)
		require.NoError(t, err)
		assert.Equal(t, byte('{'), again[0], "the bytes For returns are the caller's")
	}
	_, err := schema.For("paused")
	require.ErrorIs(t, err, schema.ErrUnknownKind)
	assert.ErrorContains(t, err, "started, changed, ended")
}

func ExampleFor() {
	body, err := schema.For(events.Ended)
	if err != nil {
		panic(err)
	}
	var s struct {
		ID string `json:"$id"`
	}
	_ = json.Unmarshal(body, &s)
	fmt.Println(s.ID)
	// Output: https://github.com/meetwatch/meetwatch/blob/main/events/schema/v1/ended.json
}
