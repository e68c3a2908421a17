// Package view reads the view bucket meetwatch keeps for consumers (see
// events.ViewEntry): the meetings going on now, one key each. Watch
// returns the current set and then each change of it, as an informer's
// cache would, so that a service holds "which meetings are going on"
// without replaying the event stream or reading meetwatch's private
// state. It lives apart from package events so that a consumer that only
// decodes events does not link a NATS client.
package view

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
)

// Update is one change of the view after the set Watch returned: a
// meeting started or changed (Entry set), or ended (Deleted).
type Update struct {
	// Key is the meeting's key: events.ViewKey of its account and
	// confUUID.
	Key string
	// Entry is the meeting's entry now; zero when Deleted.
	Entry events.ViewEntry
	// Deleted says that the meeting is going on no more.
	Deleted bool
	// Revision is the bucket's revision of the change: updates come in
	// its order.
	Revision uint64
	// Err, when set, says that the key holds a value that is not a
	// ViewEntry (someone else wrote it); Entry is then zero.
	Err error
}

// Watch reads the view in kv, the keys matching filters (every key when
// there is none; "acme.*" for the meetings of the account acme, "*" for a
// single watcher's), and returns them, keyed as the bucket keys them, once
// every value there was has been read; then it sends each change on the
// channel, in order, until ctx ends, when it closes the channel. A value
// that does not decode is left out of the map, and sent as an Update with
// Err. The reader must keep up: a change waits until the one before it
// is received.
func Watch(ctx context.Context, kv jetstream.KeyValue, filters ...string) (map[string]events.ViewEntry, <-chan Update, error) {
	var (
		w   jetstream.KeyWatcher
		err error
	)
	if len(filters) == 0 {
		w, err = kv.WatchAll(ctx)
	} else {
		w, err = kv.WatchFiltered(ctx, filters)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("watching the view: %w", err)
	}
	current := map[string]events.ViewEntry{}
	var last uint64
	for initial := true; initial; {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return nil, nil, fmt.Errorf("reading the view: %w", context.Cause(ctx))
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return nil, nil, fmt.Errorf("reading the view: the watch stopped")
			case e == nil: // the values there were are all read
				initial = false
			default:
				last = e.Revision()
				switch u := update(e); {
				case u.Deleted:
					delete(current, u.Key)
				case u.Err == nil:
					current[u.Key] = u.Entry
				}
			}
		}
	}
	out := make(chan Update)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Revision() <= last {
					continue
				}
				select {
				case out <- update(e):
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return current, out, nil
}

// update reads one entry of the watch.
func update(e jetstream.KeyValueEntry) Update {
	u := Update{Key: e.Key(), Revision: e.Revision()}
	if e.Operation() != jetstream.KeyValuePut {
		u.Deleted = true
		return u
	}
	if err := json.Unmarshal(e.Value(), &u.Entry); err != nil {
		u.Entry, u.Err = events.ViewEntry{}, fmt.Errorf("reading view key %s: %w", e.Key(), err)
	}
	return u
}
