package main

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/ha"
)

// TestEventsAskTheLease: the pipeline run wires up asks the lease before
// every event goes out. A replica that does not lead gets an error the
// engine ends its term on (watcher.ErrFenced), and the stream stores
// nothing; while it leads, the same event is stored.
func TestEventsAskTheLease(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	cfg, err := loadConfig(runEnv("http://127.0.0.1:9", "fence-token", srv.ClientURL()), true)
	require.NoError(t, err)
	health := &ha.Health{}
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	pipe, err := openPipeline(t.Context(), srv.ClientURL(), cfg, nil, health, newNATSLink(logger, health), logger)
	require.NoError(t, err)
	t.Cleanup(pipe.close)
	msgs := []events.Message{{ID: "fence-test-1", Kind: events.Started, Meeting: "m1", Body: []byte(`{"specversion":"1.0"}`)}}

	_, err = pipe.publisher.Send(t.Context(), msgs)
	require.ErrorIs(t, err, watcher.ErrFenced, "a standby's event")
	assert.Zero(t, streamLen(nc, "MEETINGS"))

	ctx, cancel := context.WithCancel(t.Context())
	sent := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = pipe.lease.Run(ctx, func(lctx context.Context) {
			_, err := pipe.publisher.Send(lctx, msgs)
			sent <- err
			cancel()
		})
	}()
	require.NoError(t, <-sent, "the leader's event")
	assert.Equal(t, 1, streamLen(nc, "MEETINGS"))
	<-done

	msgs[0].ID = "fence-test-2"
	_, err = pipe.publisher.Send(t.Context(), msgs)
	require.ErrorIs(t, err, watcher.ErrFenced, "an event after the term")
	assert.Equal(t, 1, streamLen(nc, "MEETINGS"))
}
