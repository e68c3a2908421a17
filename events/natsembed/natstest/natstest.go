// Package natstest starts a real, in-process nats-server with JetStream for
// tests, the way net/http/httptest starts a real HTTP server: meetwatch's
// tests never mock NATS.
package natstest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed"
	"github.com/meetwatch/meetwatch/events/schema/validate"
)

// Start runs a JetStream server on a free loopback port with its files in a
// fresh temporary directory, and shuts it down when the test ends.
func Start(tb testing.TB) *server.Server {
	tb.Helper()
	return StartWithDir(tb, tb.TempDir())
}

// StartWithDir is Start with a given store directory, so that a test can
// restart a server on the same files.
func StartWithDir(tb testing.TB, dir string) *server.Server {
	tb.Helper()
	s, err := natsembed.Start(natsembed.Options{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		tb.Fatalf("starting nats-server: %v", err)
	}
	tb.Cleanup(func() { natsembed.Stop(s) })
	return s
}

// Connect returns a connection to s, closed when the test ends.
func Connect(tb testing.TB, s *server.Server) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.Name(tb.Name()))
	if err != nil {
		tb.Fatalf("connecting to nats: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Messages returns every message stored in stream when it is called, in
// order, with headers, so that a test can assert on exactly what was
// published. It reads them through an ordered consumer, in batches, and
// fails the test rather than return fewer than the stream holds: a
// message skipped because the server was slow would look like an event
// meetwatch lost.
//
// Every meetwatch event among them is checked against its kind's JSON
// Schema (see CheckEvents): whatever a test publishes, and whatever it
// reads back through here, keeps the contract consumers validate against.
func Messages(tb testing.TB, nc *nats.Conn, stream string) []*jetstream.RawStreamMsg {
	tb.Helper()
	out := UncheckedMessages(tb, nc, stream)
	CheckEvents(tb, out...)
	return out
}

// UncheckedMessages is Messages without the check of the events, for a
// test of an event that breaks its schema on purpose: one whose record
// strays from the API's model, which meetwatch publishes as sent.
func UncheckedMessages(tb testing.TB, nc *nats.Conn, stream string) []*jetstream.RawStreamMsg {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		tb.Fatalf("stream %s: %v", stream, err)
	}
	state := st.CachedInfo().State
	if state.Msgs == 0 {
		return nil
	}
	cons, err := orderedConsumer(ctx, st)
	if err != nil {
		tb.Fatalf("reading stream %s: %v", stream, err)
	}
	out := make([]*jetstream.RawStreamMsg, 0, state.Msgs)
	for last := uint64(0); len(out) < int(state.Msgs); {
		// Asking for exactly what is left means Fetch never waits out its
		// MaxWait for messages that will not come.
		batch, err := cons.Fetch(min(1000, int(state.Msgs)-len(out)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			tb.Fatalf("reading stream %s: %v", stream, err)
		}
		read := 0
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				tb.Fatalf("reading stream %s: %v", stream, err)
			}
			read++
			last = md.Sequence.Stream
			if last > state.LastSeq {
				continue // published after the call: not asked for
			}
			msg := &jetstream.RawStreamMsg{
				Subject: m.Subject(), Sequence: last, Header: m.Headers(), Data: m.Data(), Time: md.Timestamp,
			}
			out = append(out, msg)
		}
		if err := batch.Error(); errors.Is(err, nats.ErrNoResponders) && read == 0 && ctx.Err() == nil {
			// A cluster electing a new stream leader answers nobody for
			// a moment: ask again.
			time.Sleep(100 * time.Millisecond)
			continue
		} else if err != nil {
			tb.Fatalf("reading stream %s after sequence %d: %v", stream, last, err)
		}
		if read == 0 {
			tb.Fatalf("reading stream %s: no message after sequence %d of %d", stream, last, state.LastSeq)
		}
	}
	return out
}

// orderedConsumer makes an ordered consumer of st, asking again, a few
// seconds at a time, until ctx ends: on a cluster that lost a node, the
// consumer may be placed on the lost node, and its creation then never
// answers; the next try places it anew.
func orderedConsumer(ctx context.Context, st jetstream.Stream) (jetstream.Consumer, error) {
	for {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cons, err := st.OrderedConsumer(tctx, jetstream.OrderedConsumerConfig{})
		cancel()
		if err == nil || ctx.Err() != nil {
			return cons, err
		}
	}
}

// maxReported bounds the violations CheckEvents reports in one call: a
// broken contract breaks every event alike, and the first few say why.
const maxReported = 3

// CheckEvents fails the test for every message that is a meetwatch event
// (its body's type is a meetwatch type, or its Content-Type header that of
// a structured CloudEvent) but does not keep its kind's JSON Schema, with
// the place in the event and the reason. Other messages (a key-value
// bucket's records, something else published on the subjects) are not
// events, and are skipped. The schemas are compiled once for the process.
func CheckEvents(tb testing.TB, msgs ...*jetstream.RawStreamMsg) {
	tb.Helper()
	bad := 0
	for _, m := range msgs {
		if m.Header.Get("Content-Type") != events.ContentType && !validate.IsMeetingEvent(m.Data) {
			continue
		}
		if err := validate.Event(m.Data); err != nil {
			if bad++; bad <= maxReported {
				body := m.Data
				if len(body) > 2048 {
					body = append(body[:2048:2048], " ..."...)
				}
				tb.Errorf("message %d on %s: %v\n%s", m.Sequence, m.Subject, err, body)
			}
		}
	}
	if bad > maxReported {
		tb.Errorf("%d more messages do not keep their schemas", bad-maxReported)
	}
}
