// Package ha lets several meetwatch replicas share one deployment: a lease
// in a JetStream key-value bucket elects the one that polls and publishes,
// and the /healthz and /readyz probes tell an orchestrator how each replica
// is doing.
package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/watcher"
)

// Lease elects one leader among meetwatch replicas that share a NATS
// deployment, so that exactly one polls and publishes while the others
// stand by to take over.
//
// It is a key in a JetStream key-value bucket whose TTL is one lease: a
// replica takes the lease by creating the key (compare-and-set on "does not
// exist") and keeps it by updating it with the revision it last wrote
// (compare-and-set on the revision). The server expires the key one TTL
// after the last write, so a dead leader's lease lapses on the server's
// clock, and no replica's clock has to agree with another's.
type Lease struct {
	kv     keyValue
	cfg    LeaseConfig
	logger *slog.Logger

	mu        sync.Mutex
	leader    bool
	lastCheck time.Time
}

// LeaseConfig configures a Lease.
type LeaseConfig struct {
	// Bucket is the key-value bucket holding the lease.
	Bucket string
	// Replicas is the bucket's replica count; 0 means 1.
	Replicas int
	// TTL is the lease's length. A leader renews it every TTL/3 and stops
	// leading on its own clock TTL*9/10 after its last good renewal; a
	// standby tries to take it every TTL/5. Failover so stays within two
	// leases.
	TTL time.Duration
	// ID names this replica in the lease and in logs.
	ID string
	// Logger receives elections; nil discards them.
	Logger *slog.Logger
}

// keyValue is what a Lease uses of a jetstream.KeyValue: the three
// compare-and-set writes. It is this small so that tests can drive the
// lease's timing through an in-memory bucket inside a synctest bubble,
// where a real connection would stop fake time.
type keyValue interface {
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
}

const leaseKey = "leader"

var (
	_ watcher.Lease = (*Lease)(nil)
	_ keyValue      = jetstream.KeyValue(nil)
)

// OpenLease creates or updates the lease bucket.
func OpenLease(ctx context.Context, js jetstream.JetStream, cfg LeaseConfig) (*Lease, error) {
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("lease ttl %s: must be at least 1s", cfg.TTL)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         cfg.Bucket,
		Description:    "meetwatch: which replica leads",
		History:        1,
		TTL:            cfg.TTL,
		Storage:        jetstream.FileStorage,
		Replicas:       max(cfg.Replicas, 1),
		LimitMarkerTTL: cfg.TTL,
	})
	if err != nil {
		return nil, fmt.Errorf("creating or updating lease bucket %s: %w", cfg.Bucket, err)
	}
	return newLease(kv, cfg), nil
}

// newLease returns a Lease held in kv, a bucket whose TTL is cfg.TTL.
func newLease(kv keyValue, cfg LeaseConfig) *Lease {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Lease{kv: kv, cfg: cfg, logger: cfg.Logger.With("component", "lease", "replica", cfg.ID)}
}

// Leader reports whether this replica leads now.
func (l *Lease) Leader() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leader
}

// LastCheck is when this replica last heard from the lease bucket: a
// renewal as leader, or a look at the lease as standby.
func (l *Lease) LastCheck() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastCheck
}

func (l *Lease) checked(leader bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leader, l.lastCheck = leader, time.Now()
}

func (l *Lease) setLeader(leader bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leader = leader
}

// Run campaigns until ctx ends. Whenever this replica holds the lease, it
// calls lead with a context that ends as soon as the lease may be lost: a
// renewal failed, or TTL*9/10 passed on this replica's monotonic clock
// since the last good one. lead must stop publishing and return when its
// context ends. On the way out Run gives the lease up, so that a standby
// takes over at once rather than after a TTL.
func (l *Lease) Run(ctx context.Context, lead func(ctx context.Context)) error {
	value, err := json.Marshal(struct {
		ID string `json:"id"`
	}{l.cfg.ID})
	if err != nil {
		return fmt.Errorf("encoding lease value: %w", err)
	}
	unreachable := 0
	for {
		rev, err := l.kv.Create(ctx, leaseKey, value)
		switch {
		case err == nil:
			if unreachable > 0 {
				l.logger.Info("lease bucket reachable again", "failed_attempts", unreachable)
				unreachable = 0
			}
			l.term(ctx, value, rev, lead)
		case errors.Is(err, jetstream.ErrKeyExists):
			l.checked(false)
			if unreachable > 0 {
				l.logger.Info("lease bucket reachable again", "failed_attempts", unreachable)
				unreachable = 0
			}
		case ctx.Err() != nil:
		default:
			l.setLeader(false)
			if unreachable == 0 {
				l.logger.Warn("cannot reach the lease bucket; standing by until it answers", "err", err)
			}
			unreachable++
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(l.cfg.TTL / 5):
		}
	}
}

// term holds the lease from its creation at rev until it is lost or ctx
// ends.
func (l *Lease) term(ctx context.Context, value []byte, rev uint64, lead func(context.Context)) {
	renewEvery := l.cfg.TTL / 3
	// Lead only after one renewal: a former leader that was paused, and
	// whose lease lapsed, gets that long to notice and stand down.
	select {
	case <-ctx.Done():
		l.release(rev)
		return
	case <-time.After(renewEvery):
	}
	sent := time.Now()
	rev, err := l.kv.Update(ctx, leaseKey, value, rev)
	if err != nil {
		l.logger.Info("lost the lease before leading", "err", err)
		return
	}
	// The lease runs from when the renewal was sent, not answered.
	left := l.cfg.TTL*9/10 - time.Since(sent)
	if left <= 0 {
		l.logger.Info("the renewal came back too late to lead on")
		return
	}
	l.checked(true)
	l.logger.Info("leading")

	lctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		deadline := time.NewTimer(left)
		defer deadline.Stop()
		tick := time.NewTicker(renewEvery)
		defer tick.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-deadline.C:
				cancel(fmt.Errorf("%w: no renewal for %s", watcher.ErrFenced, l.cfg.TTL*9/10))
				return
			case <-tick.C:
			}
			rctx, rcancel := context.WithTimeout(lctx, renewEvery)
			at := time.Now()
			next, err := l.kv.Update(rctx, leaseKey, value, rev)
			rcancel()
			if err != nil {
				cancel(fmt.Errorf("%w: renewing the lease: %w", watcher.ErrFenced, err))
				return
			}
			rev = next
			l.checked(true)
			deadline.Reset(l.cfg.TTL*9/10 - time.Since(at))
		}
	})
	lead(lctx)
	cancel(nil)
	wg.Wait()
	l.setLeader(false)
	if cause := context.Cause(lctx); ctx.Err() == nil {
		l.logger.Warn("stopped leading", "err", cause)
		return
	}
	l.release(rev)
}

// release gives the lease up if this replica still holds it at rev.
func (l *Lease) release(rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.kv.Delete(ctx, leaseKey, jetstream.LastRevision(rev)); err != nil {
		l.logger.Debug("lease not released; it lapses on its own", "err", err)
		return
	}
	l.logger.Info("released the lease")
}
