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
	// in Snapshot was seen then, so it is each one's lastSeen.
	ObservedAt time.Time
	// Committed is false until a first snapshot was ever committed, which
	// marks the started events of that first snapshot as initial.
	Committed bool
	// Pending holds meetings whose started event a poll was about to
	// publish, or had published, when it stopped short of its commit. The
	// next poll publishes them again (the same ids, so JetStream keeps one)
	// and commits them before it diffs, so a meeting that ends meanwhile
	// still gets its ended event.
	Pending []snapshot.Meeting
}
