// Package pubwindow publishes to JetStream with a bounded window of
// unacknowledged messages: the one way events and state writes go out, so
// that the connection stays busy while memory stays bounded.
package pubwindow

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Window is how many messages the events and the state writes of a poll
// keep unacknowledged at most: enough to keep the connection and the
// server busy, few enough that a lease renewal sent meanwhile queues
// behind a couple of megabytes at most. The JetStream context they go
// through must allow that many pending (jetstream.WithPublishAsyncMaxPending):
// the poll's steps follow one another, so no more are ever outstanding.
const Window = 1024

// Publish sends n messages to JetStream asynchronously, keeping at
// most window of them unacknowledged, and hands each one's outcome to done
// in the order sent. Waiting for a whole batch before sending the next
// idles the connection once a batch; a window keeps it busy, and bounds
// the messages held in memory all the same.
//
// msg builds the i-th message when it is about to go, so that the caller
// need not hold every encoded message at once. Publish stops at the
// first error msg or done returns, or when ctx ends; the js context's own
// async timeout (jetstream.WithPublishAsyncTimeout) is what fails an
// acknowledgement that never comes.
func Publish(ctx context.Context, js jetstream.JetStream, n, window int,
	msg func(i int) (*nats.Msg, []jetstream.PublishOpt, error),
	done func(i int, ack *jetstream.PubAck, err error) error,
) error {
	type sent struct {
		i   int
		fut jetstream.PubAckFuture
	}
	inflight := make([]sent, 0, min(n, window))
	settleOldest := func() error {
		s := inflight[0]
		inflight = inflight[1:]
		select {
		case ack := <-s.fut.Ok():
			return done(s.i, ack, nil)
		case err := <-s.fut.Err():
			return done(s.i, nil, err)
		case <-ctx.Done():
			return fmt.Errorf("waiting for acknowledgements: %w", context.Cause(ctx))
		}
	}
	for i := range n {
		if len(inflight) >= window {
			if err := settleOldest(); err != nil {
				return err
			}
		}
		m, opts, err := msg(i)
		if err != nil {
			return err
		}
		fut, err := js.PublishMsgAsync(m, opts...)
		if err != nil {
			if err := done(i, nil, err); err != nil {
				return err
			}
			continue
		}
		inflight = append(inflight, sent{i, fut})
	}
	for len(inflight) > 0 {
		if err := settleOldest(); err != nil {
			return err
		}
	}
	return nil
}
