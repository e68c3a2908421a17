// Package ha lets several meetwatch replicas share one deployment: a lease
// in a JetStream key-value bucket elects the one that polls and publishes
// (or, with many accounts, a placement shares them out among the replicas,
// a lease each), and the /healthz and /readyz probes tell an orchestrator
// how each replica is doing.
package ha

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events/jsensure"
	"github.com/meetwatch/meetwatch/internal/backoff"
	"github.com/meetwatch/meetwatch/watcher"
)

// Lease elects one leader among meetwatch replicas that share a NATS
// deployment, so that exactly one polls and publishes while the others
// stand by to take over.
//
// The lease is one key in a bucket whose TTL is the lease's length, so the
// server lets a dead leader's lease lapse on its own clock and no
// replica's clock has to agree with another's. Every replica looks at the
// key often; one that finds it gone creates it (compare-and-set on "no
// key") and leads. The leader renews it every third of a TTL
// (compare-and-set on the revision it last wrote), retrying a renewal
// that fails for a passing reason, and stops leading on its own monotonic
// clock 9/10 of a TTL after its last good renewal was sent, before the
// server can let the key go. A leader that stops gives the key up, so the
// next look of a standby takes it.
type Lease struct {
	kv     keyValue
	cfg    LeaseConfig
	logger *slog.Logger
	// value is what the key holds while this run of the replica leads.
	value []byte

	mu        sync.Mutex
	lastCheck time.Time
	// until is when this replica's lease runs out on its own clock; zero
	// while it does not lead.
	until time.Time
}

// LeaseConfig configures a Lease.
type LeaseConfig struct {
	// Bucket is the key-value bucket holding the lease.
	Bucket string
	// Replicas is the bucket's replica count when OpenLease creates it;
	// 0 means 1.
	Replicas int
	// TTL is the lease's length, and the TTL of a bucket OpenLease
	// creates; an existing bucket's TTL overrides it. After a leader
	// dies, a standby takes over once the server lets its key go, a TTL
	// after its last renewal, at its next look (see campaignEvery).
	TTL time.Duration
	// Key is the lease's key in the bucket; empty means "leader", the one
	// lease of a deployment that watches one account. A Placement holds
	// one lease per unit in the same bucket, each under a key of its own.
	Key string
	// ID names this replica in the lease and in logs.
	ID string
	// Logger receives elections; nil discards them.
	Logger *slog.Logger
	// Beat, when set, hears that the lease's loop is alive and when it
	// will beat again at the latest, whether or not NATS answered: the
	// liveness probe follows the loop, not the bucket.
	Beat func(until time.Time)
	// Conflict, when set, hears of a lease bucket whose TTL differs from
	// TTL, as a sentence for the readiness probe.
	Conflict func(msg string)
}

// keyValue is what a Lease uses of a jetstream.KeyValue. It is this small
// so that tests can drive the lease's timing through an in-memory bucket
// inside a synctest bubble, where a real connection would stop fake time.
type keyValue interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
}

// leaseKey is the lease's key when LeaseConfig.Key is empty.
const leaseKey = "leader"

// campaignTimeout bounds one look at the lease and the write that takes
// it.
const campaignTimeout = 5 * time.Second

var (
	_ watcher.Lease = (*Lease)(nil)
	_ keyValue      = jetstream.KeyValue(nil)
)

// OpenLease opens the lease bucket, creating it with a TTL of cfg.TTL when
// it is missing. An existing bucket keeps the settings an operator gave it.
//
// The bucket's TTL is what fences a leader: the server expires the lease
// one TTL after its last renewal, and a leader stops at 9/10 of its own
// TTL. Replicas that disagree on it could lead at once, so a bucket whose
// TTL differs from cfg.TTL is not rewritten, which would move the ground
// under the replicas running: the lease takes the bucket's, as they do,
// and the difference is logged at WARN and reported to Conflict.
func OpenLease(ctx context.Context, js jetstream.JetStream, cfg LeaseConfig) (*Lease, error) {
	logger := slog.New(slog.DiscardHandler)
	if cfg.Logger != nil {
		logger = cfg.Logger.With("component", "lease", "replica", cfg.ID)
	}
	kv, ttl, err := openLeaseBucket(ctx, js, cfg.Bucket, cfg.Replicas, cfg.TTL, cfg.Conflict, logger)
	if err != nil {
		return nil, err
	}
	cfg.TTL = ttl
	return newLease(kv, cfg), nil
}

// openLeaseBucket opens the lease bucket for OpenLease and OpenPlacement,
// creating it with a TTL of ttl when it is missing, and returns it with
// the TTL to lease with: the bucket's (see OpenLease).
func openLeaseBucket(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, ttl time.Duration, conflict func(string), logger *slog.Logger) (jetstream.KeyValue, time.Duration, error) {
	if ttl < time.Second {
		return nil, 0, fmt.Errorf("lease ttl %s: must be at least 1s", ttl)
	}
	kv, cfg, err := jsensure.Bucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "meetwatch: which replica leads",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	}, nil, logger)
	if err != nil {
		return nil, 0, fmt.Errorf("opening lease bucket: %w", err)
	}
	switch have := cfg.MaxAge; {
	case have < time.Second:
		return nil, 0, fmt.Errorf("lease bucket %s has a TTL of %s: a lease needs one of at least 1s, or a dead leader's lease never lapses; set it, or delete the bucket for meetwatch to make it again", bucket, have)
	case have != ttl:
		logger.Warn("the lease bucket's TTL differs from the configured lease TTL; leasing with the bucket's, as the other replicas do",
			"bucket", bucket, "ttl", have, "configured_ttl", ttl)
		if conflict != nil {
			conflict(fmt.Sprintf("lease bucket %s has a TTL of %s, not the %s configured: this replica leases with the bucket's, as every replica must", bucket, have, ttl))
		}
	}
	return kv, cfg.MaxAge, nil
}

// newLease returns a Lease held in kv, a bucket whose TTL is cfg.TTL.
func newLease(kv keyValue, cfg LeaseConfig) *Lease {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return leaseOn(kv, cfg, newRun(cfg.ID), cfg.Logger.With("component", "lease", "replica", cfg.ID))
}

// newRun returns what a lease key holds while replica id leads in this run
// of the process.
func newRun(id string) leaseValue {
	var run [8]byte
	_, _ = rand.Read(run[:]) // crypto/rand does not fail
	return leaseValue{ID: id, Run: hex.EncodeToString(run[:])}
}

// leaseOn returns a Lease held in kv under cfg.Key, whose key holds run
// while it leads, logging to logger as it is.
func leaseOn(kv keyValue, cfg LeaseConfig, run leaseValue, logger *slog.Logger) *Lease {
	cfg.Key = cmp.Or(cfg.Key, leaseKey)
	value, _ := json.Marshal(run) // two strings always encode
	return &Lease{kv: kv, cfg: cfg, logger: logger, value: value}
}

// leaseValue is what the lease key holds: the replica that leads, and a
// random id of its run, so that a leader whose renewal landed but whose
// answer was lost knows the key for its own (see renew), and not for that
// of another run with the same ID.
type leaseValue struct {
	ID  string `json:"id"`
	Run string `json:"run"`
}

// TTL is the lease's length: the lease bucket's TTL.
func (l *Lease) TTL() time.Duration { return l.cfg.TTL }

// campaignEvery is how often a standby looks at the lease: the lapse of a
// dead leader's lease is seen within half a second, so that failover stays
// within a TTL and a second, first poll included.
func (l *Lease) campaignEvery() time.Duration { return min(l.cfg.TTL/10, 500*time.Millisecond) }

// Leader reports whether this replica leads now.
func (l *Lease) Leader() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.until.IsZero()
}

// LastCheck is when this replica last heard from the lease bucket: a
// renewal as leader, or a look at the lease as standby.
func (l *Lease) LastCheck() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastCheck
}

// heard records that this replica heard from the bucket, and leads until
// until on its own monotonic clock; zero: it does not lead.
func (l *Lease) heard(until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastCheck, l.until = time.Now(), until
}

// stopped records that this replica no longer leads.
func (l *Lease) stopped() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.until = time.Time{}
}

// Check returns nil while this replica holds the lease by its own clock,
// and an error wrapping watcher.ErrFenced otherwise. The publisher and the
// state store ask it before every write, reading the clock then rather
// than waiting for a timer: a replica paused past its lease (a frozen VM,
// SIGSTOP) that wakes in the middle of a poll stops at its next write,
// before the goroutine that would end its term has even run.
func (l *Lease) Check() error {
	l.mu.Lock()
	until := l.until
	l.mu.Unlock()
	if until.IsZero() {
		return fmt.Errorf("%w: this replica does not lead", watcher.ErrFenced)
	}
	if late := time.Since(until); late >= 0 {
		return fmt.Errorf("%w: the lease ran out %s ago on this replica's clock", watcher.ErrFenced, late.Round(time.Millisecond))
	}
	return nil
}

// Run looks at the lease every campaignEvery until ctx ends. Whenever this
// replica takes it, Run calls lead with a context that ends as soon as the
// lease may be lost: a renewal failed for good, or TTL*9/10 passed on this
// replica's monotonic clock since the last good one. lead must stop
// publishing and return when its context ends; a lead that returns on its
// own ends the term too (a write found this replica fenced). When the term
// ends for a reason other than a lost lease, Run gives the lease up, so
// that a standby takes over at its next look rather than after a TTL.
func (l *Lease) Run(ctx context.Context, lead func(ctx context.Context)) error {
	var named leaseValue // the holder this replica last said it stands by for
	failures := 0
	for {
		l.beat(l.campaignEvery() + campaignTimeout)
		sent := time.Now()
		rev, holder, err := l.campaign(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			if failures == 0 {
				l.logger.Warn("cannot reach the lease bucket; standing by until it answers", "err", err)
			}
			failures++
		default:
			l.heard(time.Time{})
			if failures > 0 {
				l.logger.Info("lease bucket reachable again", "failed_attempts", failures)
				failures = 0
			}
			switch {
			case rev != 0:
				named = leaseValue{}
				l.term(ctx, rev, sent, lead)
			case holder.ID != "" && holder != named:
				// Said when this replica starts standing by, and whenever
				// the leader changes: a standby is otherwise silent.
				named = holder
				if holder.ID == l.cfg.ID {
					l.logger.Info("standing by until this replica's former lease lapses")
				} else {
					l.logger.Info("standing by", "leader", holder.ID)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(l.campaignEvery()):
		}
	}
}

// campaign takes the lease when no one holds it, returning the revision of
// the write that took it; otherwise it returns who holds it (no one, when
// another replica took the lease between the look and the write).
func (l *Lease) campaign(ctx context.Context) (uint64, leaseValue, error) {
	ctx, cancel := context.WithTimeout(ctx, campaignTimeout)
	defer cancel()
	var holder leaseValue
	e, err := l.kv.Get(ctx, l.cfg.Key)
	if err == nil {
		_ = json.Unmarshal(e.Value(), &holder) // a value that is not meetwatch's names no one
		return 0, holder, nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, holder, err
	}
	// Create also takes the key over the marker that a release leaves.
	rev, err := l.kv.Create(ctx, l.cfg.Key, l.value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, holder, nil
	}
	return rev, holder, err
}

// beat tells Beat, when set, that the loop beats again within d.
func (l *Lease) beat(d time.Duration) {
	if l.cfg.Beat != nil {
		l.cfg.Beat(time.Now().Add(d))
	}
}

// term leads from the write sent at sent that took the lease at rev, until
// the lease is lost or ctx ends.
//
// It leads at once: a former leader stood down on its own clock before the
// server let its key expire, and one that was paused past that finds, on
// waking, that every write it tries asks Check first and is refused.
func (l *Lease) term(ctx context.Context, rev uint64, sent time.Time, lead func(context.Context)) {
	l.heard(sent.Add(l.cfg.TTL * 9 / 10))
	l.logger.Info("leading")
	lctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		var err error
		rev, err = l.keep(lctx, rev, sent)
		cancel(err)
	})
	lead(lctx)
	cancel(nil)
	wg.Wait()
	l.stopped()
	switch cause := context.Cause(lctx); {
	case ctx.Err() != nil:
		l.release(rev) // stopping: a standby takes over at once
	case errors.Is(cause, watcher.ErrFenced):
		l.logger.Warn("stopped leading", "err", cause) // the lease is lost, or may be
	default:
		// lead returned on its own: a write found this replica fenced.
		// Whatever it still holds goes, so that the leader is decided
		// afresh.
		l.logger.Warn("stopped leading: a write was fenced")
		l.release(rev)
	}
}

// keep renews the lease held at rev, taken by a write sent at sent, every
// third of a TTL until ctx ends. It returns the revision it last wrote,
// and an error wrapping watcher.ErrFenced when the lease is lost or may
// be.
func (l *Lease) keep(ctx context.Context, rev uint64, sent time.Time) (uint64, error) {
	every := l.cfg.TTL / 3
	for {
		l.beat(every + l.cfg.TTL)
		select {
		case <-ctx.Done():
			return rev, nil
		case <-time.After(every - time.Since(sent)):
		}
		at := time.Now()
		next, err := l.renew(ctx, rev, sent.Add(l.cfg.TTL*9/10))
		if err != nil {
			if ctx.Err() != nil {
				return rev, nil
			}
			return rev, fmt.Errorf("%w: renewing the lease: %w", watcher.ErrFenced, err)
		}
		rev, sent = next, at
		l.heard(sent.Add(l.cfg.TTL * 9 / 10))
	}
}

// renew renews the lease held at rev and returns its new revision. A
// renewal that fails for a passing reason (a timeout, no responders, a
// leader election in the cluster) is tried again until by, the leader's
// own deadline. One that meets another revision ends the term, unless the
// key holds this run's value: then an earlier try landed and its answer
// was lost, and the next try goes at the revision it wrote.
func (l *Lease) renew(ctx context.Context, rev uint64, by time.Time) (uint64, error) {
	retry := backoff.Backoff{Base: l.cfg.TTL / 30, Max: l.cfg.TTL / 10}
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, min(time.Until(by), l.cfg.TTL/3))
		next, err := l.kv.Update(actx, l.cfg.Key, l.value, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			e, gerr := l.kv.Get(actx, l.cfg.Key)
			if gerr != nil || !bytes.Equal(e.Value(), l.value) {
				cancel()
				return 0, err
			}
			rev = e.Revision()
		}
		cancel()
		if err == nil {
			if attempt > 1 {
				l.logger.Info("lease renewed after retries", "attempts", attempt)
			}
			return next, nil
		}
		// The last try goes out just before the deadline, however the
		// backoff falls.
		wait := min(retry.Next(), time.Until(by)-l.cfg.TTL/100)
		if ctx.Err() != nil || wait <= 0 {
			return 0, err
		}
		l.logger.Debug("lease renewal failed; retrying", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(wait):
		}
	}
}

// release gives the lease up if this replica still holds it at rev.
func (l *Lease) release(rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.kv.Delete(ctx, l.cfg.Key, jetstream.LastRevision(rev)); err != nil {
		l.logger.Debug("lease not released; it lapses on its own", "err", err)
		return
	}
	l.logger.Info("released the lease")
}
