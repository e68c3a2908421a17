package watcher_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// A poll reads ahead the keys of the meetings it will write over: the
// changed meetings' and the vanished ones'. It reads no other key.
func TestAPollReadsAheadTheKeysItWillWrite(t *testing.T) {
	r := newRig(t)
	ids := r.api.Sim.AddN(40)
	w := r.newWatcher(t, nil)
	_, err := w.Poll(t.Context())
	require.NoError(t, err)

	changed, ended := ids[:6], ids[6:9]
	for _, id := range changed {
		r.api.Sim.Update(id, func(rec apisim.Record) { rec["subject"] = "renamed " + id })
	}
	for _, id := range ended {
		r.api.Sim.End(id)
	}
	started := r.api.Sim.AddN(2)

	reads := make(chan *nats.Msg, 1024)
	prefix := "$JS.API.DIRECT.GET.KV_" + testBucket + ".$KV." + testBucket + ".m."
	sub, err := r.nc.ChanSubscribe(prefix+">", reads)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, r.nc.Flush())

	res, err := w.Poll(t.Context())
	require.NoError(t, err)
	require.Equal(t, [3]int{len(started), len(changed), len(ended)}, [3]int{res.Started, res.Changed, res.Ended})
	require.NoError(t, r.nc.Flush())

	var read []string
	for len(reads) > 0 {
		read = append(read, strings.TrimPrefix((<-reads).Subject, prefix))
	}
	var want []string
	for _, id := range slices.Concat(changed, ended) {
		want = append(want, events.Token(id))
	}
	slices.Sort(read)
	read = slices.Compact(read) // pages overlap: a record may come twice
	assert.ElementsMatch(t, want, read, "the keys of the changed and ended meetings, and no other")
}
