package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/schema"
)

// TestSchema: meetwatch schema <kind> prints the JSON Schema of a whole
// event of that kind, as embedded, and exits 0; a kind it does not know,
// or none, is one line on stderr naming the kinds, and exit 2.
func TestSchema(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"started", "changed", "ended"} {
		mw := startMeetwatch(t, nil, "schema", kind)
		require.Equal(t, exitOK, mw.wait(t, exitWait), "%s; stderr:\n%s", kind, mw.stderr)
		assert.Empty(t, mw.stderr.String(), kind)
		want, err := schema.For(events.Kind(kind))
		require.NoError(t, err)
		assert.Equal(t, string(want), mw.stdout.String(), kind)
		var s struct {
			ID string `json:"$id"`
		}
		require.NoError(t, json.Unmarshal([]byte(mw.stdout.String()), &s), kind)
		assert.Equal(t, "https://github.com/meetwatch/meetwatch/blob/main/events/schema/v1/"+kind+".json", s.ID,
			"the dataschema of %s events", kind)
	}

	for _, args := range [][]string{{"schema", "paused"}, {"schema"}, {"schema", "Started"}} {
		mw := startMeetwatch(t, nil, args...)
		require.Equal(t, exitUsage, mw.wait(t, exitWait), "%v", args)
		stderr := mw.stderr.String()
		assert.Equal(t, 1, strings.Count(stderr, "\n"), "one line:\n%s", stderr)
		assert.Contains(t, stderr, "started, changed, ended", "%v names the kinds", args)
		assert.Contains(t, stderr, "(see meetwatch schema --help)")
		assert.Empty(t, mw.stdout.String(), "%v", args)
	}
	mw := startMeetwatch(t, nil, "schema", "started", "ended")
	require.Equal(t, exitUsage, mw.wait(t, exitWait))
	assert.Contains(t, mw.stderr.String(), `unexpected argument "ended"`)

	help := runInProcess(t, nil, "--help").stdout.String()
	assert.Contains(t, help, "meetwatch schema KIND", "the usage names the command")
	help = runInProcess(t, nil, "schema", "--help").stdout.String()
	assert.Contains(t, help, "dataschema")
}
