package view_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed"
	"github.com/meetwatch/meetwatch/events/view"
	"github.com/meetwatch/meetwatch/snapshot"
)

// A service holds the meetings going on now: the current set first, then
// each start, change and end as meetwatch writes it. The first part only
// sets up a NATS server with a view in it, as meetwatch would.
func ExampleWatch() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, stop := exampleView(ctx)
	defer stop()

	current, updates, err := view.Watch(ctx, kv)
	if err != nil {
		log.Fatal(err)
	}
	for key, e := range current {
		var rec struct{ Subject string }
		_ = json.Unmarshal(e.Conference, &rec)
		fmt.Printf("going on: %s %q since %s\n", key, rec.Subject, e.StartedAt.Format(time.Kitchen))
	}

	// meetwatch sees the meeting end, and deletes its key.
	if err := kv.Purge(ctx, "c0ffee"); err != nil {
		log.Fatal(err)
	}
	u := <-updates
	fmt.Printf("ended: %s %v\n", u.Key, u.Deleted)
	// Output:
	// going on: c0ffee "Weekly sync" since 9:00AM
	// ended: c0ffee true
}

// exampleView starts a NATS server whose view holds one meeting.
func exampleView(ctx context.Context) (jetstream.KeyValue, func()) {
	dir, err := os.MkdirTemp("", "meetwatch-example")
	if err != nil {
		log.Fatal(err)
	}
	srv, err := natsembed.Start(natsembed.Options{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	stop := func() { nc.Close(); natsembed.Stop(srv); os.RemoveAll(dir) }
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: events.DefaultViewBucket})
	if err != nil {
		log.Fatal(err)
	}
	m, _ := snapshot.ParseMeeting([]byte(`{"confUUID":"c0ffee","subject":"Weekly sync","startTime":"2026-12-07 09:00"}`))
	v, err := events.Builder{}.ViewValue(m, 1)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := kv.Put(ctx, events.ViewKey("", m.UUID), v); err != nil {
		log.Fatal(err)
	}
	return kv, stop
}
