package watcher

import (
	"time"

	"github.com/meetwatch/meetwatch/snapshot"
)

// State is the last committed snapshot: what the watcher believes was
// ongoing at ObservedAt, and has already announced.
type State struct {
	Snapshot snapshot.Snapshot
	// ObservedAt is when the committed snapshot was observed. Every meeting
	// in Snapshot but those in Missing was seen then, so it is their
	// lastSeen. Before a first commit, it is when the earliest listing
	// that recorded one of them was observed.
	ObservedAt time.Time
	// Committed is false until a first snapshot was ever committed, which
	// marks the started events of that first snapshot as initial.
	Committed bool
	// Pending holds the starts and changes whose events a poll was about
	// to publish, or had published, when it stopped short of recording
	// them. The next poll publishes them again (the same ids, so JetStream
	// keeps one) and takes them into Snapshot before it diffs: a meeting
	// that ends meanwhile still gets its ended event, and a meeting's
	// changes follow on from the last one announced. A pending change's
	// meeting is in Snapshot with its record before the change.
	Pending []snapshot.Change
	// Missing holds the meetings of Snapshot that the last complete listing
	// lacked and whose end no lookup confirmed, each with when it was last
	// seen. They stay in Snapshot, so that nothing is forgotten; the next
	// complete listing that lacks them too ends them.
	Missing map[string]time.Time
	// Incarnations holds the incarnation of each meeting of Snapshot
	// that was listed again after an end (see snapshot.Change); a meeting
	// not in it is in its first.
	Incarnations map[string]int
}

// Commit is what a poll hands the state store once every one of its events
// is acknowledged and every key written.
type Commit struct {
	// ObservedAt is when the listing was taken.
	ObservedAt time.Time
	// Meetings counts the committed snapshot.
	Meetings int
	// Missed are the meetings this listing lacked for the first time and
	// that stay in the snapshot until the next one, with when each was last
	// seen.
	Missed map[string]time.Time
	// Settled are meetings that were missing and are not any more: they
	// ended (their change says so), or they are listed again.
	Settled []string
}
