package watcher_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// attendeesOver returns more attendees than fit in bytes.
func attendeesOver(bytes int64) []any {
	out := make([]any, 0, bytes/50+1)
	for i := range cap(out) {
		out = append(out, map[string]any{"name": fmt.Sprintf("user%06d", i), "phone": "+99111****815", "type": "normal"})
	}
	return out
}

func TestOversizedMeetingGetsEveryEvent(t *testing.T) {
	r := newRig(t)
	rec := r.api.Sim.NewRecord()
	rec["partAttendeeInfo"] = attendeesOver(2 << 20) // a record of about 2 MB, twice the max payload
	id := r.api.Sim.Add(rec)[0]
	r.api.Sim.AddN(2)

	limited := func(c *watcher.Config) {
		c.Builder.MaxBytes = events.MaxEventBytes(r.nc.MaxPayload())
		c.MaxRecordBytes = events.MaxRecordBytes(r.nc.MaxPayload())
	}
	_, err := r.newWatcher(t, nil).Poll(t.Context())
	require.Error(t, err, "without limits, one large meeting fails the poll")

	w := r.newWatcherWith(t, nil, limited)
	_, err = w.Poll(t.Context())
	require.NoError(t, err)
	require.True(t, r.api.Sim.Update(id, func(rec apisim.Record) { rec["onlineAttendeeAmount"] = 99 }))
	_, err = w.Poll(t.Context())
	require.NoError(t, err)

	w = r.newWatcherWith(t, nil, limited)
	res, err := w.Poll(t.Context())
	require.NoError(t, err, "a restart reads the trimmed state back")
	assert.Zero(t, res.Changed+res.Started+res.Ended, "and finds it as trimmed as the listing")
	require.True(t, r.api.Sim.End(id))
	_, err = w.Poll(t.Context())
	require.NoError(t, err)

	var mine []events.Event
	for _, e := range r.published(t) {
		if e.Subject == id {
			mine = append(mine, e)
		}
	}
	require.Len(t, mine, 3, "started, changed, ended, once each")
	assert.Equal(t, []snapshot.ChangeKind{snapshot.Started, snapshot.Changed, snapshot.Ended}, []snapshot.ChangeKind{mine[0].Kind(), mine[1].Kind(), mine[2].Kind()})
	for _, e := range mine {
		assert.Contains(t, e.Data.Truncated, "conference.partAttendeeInfo")
	}
	assert.Equal(t, []snapshot.FieldChange{{Field: "onlineAttendeeAmount", Old: mine[1].Data.Changes[0].Old, New: []byte("99")}}, mine[1].Data.Changes)
	assert.Regexp(t, `level=INFO msg="meeting record trimmed to fit the size limit" component=watcher meeting=`+id+` bytes=\d+ max_bytes=\d+ trimmed=\[partAttendeeInfo\]`, r.logs.String(),
		"the operator hears of each record cut")
}

func TestIgnoredFieldsAreCommittedNotPublished(t *testing.T) {
	r := newRig(t)
	id := r.api.Sim.AddN(1)[0]
	ignore, err := snapshot.ParseFieldSet("onlineAttendeeAmount")
	require.NoError(t, err)
	ignoring := func(c *watcher.Config) { c.Builder.Ignore = ignore }
	w := r.newWatcherWith(t, nil, ignoring)
	_, err = w.Poll(t.Context())
	require.NoError(t, err)

	require.True(t, r.api.Sim.Update(id, func(rec apisim.Record) { rec["onlineAttendeeAmount"] = 41 }))
	res, err := w.Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, res.Ignored)
	assert.Zero(t, res.Changed)
	require.Len(t, r.published(t), 1, "no event for an ignored field")

	w = r.newWatcherWith(t, nil, ignoring) // a restart: only the state tells what was seen
	require.True(t, r.api.Sim.Update(id, func(rec apisim.Record) { rec["onlineAttendeeAmount"] = 42; rec["subject"] = "Renamed" }))
	_, err = w.Poll(t.Context())
	require.NoError(t, err)
	evs := r.published(t)
	require.Len(t, evs, 2)
	changed := evs[1]
	require.Len(t, changed.Data.Changes, 1, "only the fields not ignored: %v", changed.Data.Changes)
	assert.Equal(t, "subject", changed.Data.Changes[0].Field)
	assert.Contains(t, string(changed.Data.Previous), `"onlineAttendeeAmount":41`, "the ignored change was committed")
}
