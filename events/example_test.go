package events_test

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
	"github.com/meetwatch/meetwatch/events/publish"
	"github.com/meetwatch/meetwatch/snapshot"
)

// A Go service reacts to meetings with a durable consumer on the stream:
// it resumes where it stopped after a restart, and acknowledges an event
// once handled, so that none is lost. The first part only sets up a NATS
// server with a few events in it, as meetwatch would.
func Example_durableConsumer() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, stop := exampleStream(ctx)
	defer stop()

	// The consumer: a durable on the stream, one handler per kind.
	cons, err := js.CreateOrUpdateConsumer(ctx, "MEETINGS", jetstream.ConsumerConfig{
		Durable:   "my-service",
		AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		e, err := events.Decode(m.Data())
		if err != nil {
			_ = m.Term() // not a meeting event: never redeliver it
			return
		}
		var rec struct{ Subject string }
		_ = json.Unmarshal(e.Data.Conference, &rec)
		switch e.Kind() {
		case events.Started:
			fmt.Printf("started: %s\n", rec.Subject)
		case events.Changed:
			fmt.Printf("changed: %s (%d fields)\n", rec.Subject, len(e.Data.Changes))
		case events.Ended:
			fmt.Printf("ended: %s\n", rec.Subject)
			close(done)
		}
		_ = m.Ack()
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Stop()
	<-done
	// Output:
	// started: Weekly sync
	// changed: Weekly sync, moved (1 fields)
	// ended: Weekly sync, moved
}

// exampleStream starts a NATS server holding the stream meetwatch writes,
// with a meeting's started, changed and ended events in it.
func exampleStream(ctx context.Context) (jetstream.JetStream, func()) {
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
	pub, err := publish.New(nc, publish.Config{Stream: "MEETINGS", Prefix: events.DefaultPrefix, Duplicates: time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	if err := pub.EnsureStream(ctx); err != nil {
		log.Fatal(err)
	}
	before, _ := snapshot.ParseMeeting([]byte(`{"confUUID":"c0ffee","conferenceID":"914083136","subject":"Weekly sync"}`))
	after, _ := snapshot.ParseMeeting([]byte(`{"confUUID":"c0ffee","conferenceID":"914083136","subject":"Weekly sync, moved"}`))
	b := events.Builder{Source: events.Source("example")}
	var evs []events.Event
	for _, c := range []snapshot.Change{
		{Kind: snapshot.Started, Key: "c0ffee", New: before},
		{Kind: snapshot.Changed, Key: "c0ffee", Old: before, New: after, Fields: snapshot.CompareRecords(before.Raw(), after.Raw())},
		{Kind: snapshot.Ended, Key: "c0ffee", Old: after},
	} {
		e, err := b.Build(c, time.Now(), false, time.Time{})
		if err != nil {
			log.Fatal(err)
		}
		evs = append(evs, e)
	}
	if _, err := pub.Publish(ctx, evs); err != nil {
		log.Fatal(err)
	}
	return js, stop
}
