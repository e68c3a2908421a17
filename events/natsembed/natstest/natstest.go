// Package natstest starts a real, in-process nats-server with JetStream for
// tests, the way net/http/httptest starts a real HTTP server: meetwatch's
// tests never mock NATS.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events/natsembed"
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

// Messages returns every message stored in stream, in order, with headers,
// so that a test can assert on exactly what was published. It fails the
// test if the stream does not exist.
func Messages(tb testing.TB, nc *nats.Conn, stream string) []*jetstream.RawStreamMsg {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
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
	var out []*jetstream.RawStreamMsg
	for seq := state.FirstSeq; state.Msgs > 0 && seq <= state.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		out = append(out, m)
	}
	return out
}
