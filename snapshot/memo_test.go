package snapshot_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot"
)

func TestMemoReadsEachDistinctRecordOnce(t *testing.T) {
	var fits atomic.Int32
	memo := snapshot.NewMemo(func(m snapshot.Meeting) (snapshot.Meeting, error) {
		fits.Add(1)
		return m, nil
	})
	rec := func(id, subject string) []byte {
		return fmt.Appendf(nil, `{"confUUID": %q, "subject": %q}`, id, subject)
	}

	first, err := memo.Read(rec("a", "one"))
	require.NoError(t, err)
	assert.Equal(t, `{"confUUID":"a","subject":"one"}`, string(first.Raw()), "parsed and compacted")
	_, err = memo.Read(rec("b", "two"))
	require.NoError(t, err)
	memo.Keep()

	again, err := memo.Read(rec("a", "one"))
	require.NoError(t, err)
	assert.Equal(t, unsafe.SliceData(first.Raw()), unsafe.SliceData(again.Raw()), "an unchanged record shares the memory of the last listing's")
	changed, err := memo.Read(rec("b", "renamed"))
	require.NoError(t, err)
	assert.Equal(t, "renamed", changed.Subject)
	assert.EqualValues(t, 3, fits.Load(), "only the new bytes were parsed and fitted")
	memo.Keep()

	_, err = memo.Read(rec("b", "two"))
	require.NoError(t, err)
	assert.EqualValues(t, 4, fits.Load(), "a record the last listing lacked is forgotten")

	_, err = memo.Read([]byte(`{"subject":"no id"}`))
	require.ErrorIs(t, err, snapshot.ErrNoUUID)
}

func TestMemoIsSafeForConcurrentPages(t *testing.T) {
	memo := snapshot.NewMemo(nil)
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Go(func() {
			for i := range 200 {
				m, err := memo.Read(fmt.Appendf(nil, `{"confUUID":"m%d"}`, (p*100+i)%300))
				assert.NoError(t, err)
				assert.Equal(t, fmt.Sprintf("m%d", (p*100+i)%300), m.UUID)
			}
		})
	}
	wg.Wait()
}

// A record the memo has to parse that turns out the same as the prior
// snapshot's (after a restart, every one) is returned as the prior's.
func TestMemoSharesTheRecordsOfThePriorSnapshot(t *testing.T) {
	prior, err := snapshot.ParseMeeting([]byte(`{"confUUID":"a","subject":"one"}`))
	require.NoError(t, err)
	memo := snapshot.NewMemo(nil)
	memo.Prior(snapshot.Snapshot{"a": prior})
	got, err := memo.Read([]byte(`{"confUUID": "a", "subject": "one"}`))
	require.NoError(t, err)
	assert.Equal(t, unsafe.SliceData(prior.Raw()), unsafe.SliceData(got.Raw()))
	other, err := memo.Read([]byte(`{"confUUID":"a","subject":"two"}`))
	require.NoError(t, err)
	assert.Equal(t, "two", other.Subject, "a different record stays itself")
}

// A first listing is remembered whole, however large.
func TestMemoRemembersAWholeFirstListing(t *testing.T) {
	var fits atomic.Int32
	memo := snapshot.NewMemo(func(m snapshot.Meeting) (snapshot.Meeting, error) {
		fits.Add(1)
		return m, nil
	})
	const n = 5000
	for i := range n {
		_, err := memo.Read(fmt.Appendf(nil, `{"confUUID":"m%d"}`, i))
		require.NoError(t, err)
	}
	memo.Keep()
	for i := range n {
		_, err := memo.Read(fmt.Appendf(nil, `{"confUUID":"m%d"}`, i))
		require.NoError(t, err)
	}
	assert.EqualValues(t, n, fits.Load(), "the second listing parsed nothing")
}
