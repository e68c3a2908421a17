// Package ha lets several meetwatch replicas share one deployment: a lease
// in a JetStream key-value bucket elects the one that polls and publishes,
// and the /healthz and /readyz probes tell an orchestrator how each replica
// is doing.
package ha

import (
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

	// incarnation tells this run of the replica from earlier ones.
	incarnation string

	mu        sync.Mutex
	leader    bool
	lastCheck time.Time
	// until is when this replica's lease runs out on its own clock (9/10
	// of a TTL after the last good renewal was sent); zero while it does
	// not lead.
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
	// creates; an existing bucket's TTL overrides it. A leader renews it
	// every TTL/3, retries a renewal that fails for a passing reason, and
	// stops leading on its own clock TTL*9/10 after its last good
	// renewal; a standby tries to take it as soon as it sees the key go,
	// and every TTL/5 besides. Failover so stays within a lease, and the
	// new leader's first poll.
	TTL time.Duration
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

// keyValue is what a Lease uses of a jetstream.KeyValue: the three
// compare-and-set writes. It is this small so that tests can drive the
// lease's timing through an in-memory bucket inside a synctest bubble,
// where a real connection would stop fake time.
type keyValue interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
}

const leaseKey = "leader"

var (
	_ watcher.Lease = (*Lease)(nil)
	_ keyValue      = jetstream.KeyValue(nil)
)

// OpenLease opens the lease bucket, creating it with a TTL of cfg.TTL when
// it is missing. An existing bucket keeps the settings an operator gave it
// (its size, replicas, placement, description): only a marker TTL is added
// when it lacks one, since without it standbys do not see the lease
// expire and wait for their next try to take it.
//
// The bucket's TTL is what fences a leader: the server expires the lease
// one TTL after its last renewal, and a leader stops at 9/10 of its own
// TTL. Replicas that disagree on it could lead at once, so a bucket whose
// TTL differs from cfg.TTL is not rewritten, which would move the ground
// under the replicas running: the lease takes the bucket's, as they do,
// and the difference is logged at WARN and reported to Conflict.
func OpenLease(ctx context.Context, js jetstream.JetStream, cfg LeaseConfig) (*Lease, error) {
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("lease ttl %s: must be at least 1s", cfg.TTL)
	}
	logger := slog.New(slog.DiscardHandler)
	if cfg.Logger != nil {
		logger = cfg.Logger.With("component", "lease", "replica", cfg.ID)
	}
	kv, bucket, err := jsensure.Bucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:         cfg.Bucket,
		Description:    "meetwatch: which replica leads",
		History:        1,
		TTL:            cfg.TTL,
		Storage:        jetstream.FileStorage,
		Replicas:       max(cfg.Replicas, 1),
		LimitMarkerTTL: cfg.TTL,
	}, func(c *jetstream.StreamConfig) []string {
		if c.SubjectDeleteMarkerTTL > 0 {
			return nil
		}
		c.AllowMsgTTL, c.SubjectDeleteMarkerTTL = true, cfg.TTL
		return []string{"a marker TTL"}
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("opening lease bucket: %w", err)
	}
	switch ttl := bucket.MaxAge; {
	case ttl < time.Second:
		return nil, fmt.Errorf("lease bucket %s has a TTL of %s: a lease needs one of at least 1s, or a dead leader's lease never lapses; set it, or delete the bucket for meetwatch to make it again", cfg.Bucket, ttl)
	case ttl != cfg.TTL:
		logger.Warn("the lease bucket's TTL differs from the configured lease TTL; leasing with the bucket's, as the other replicas do",
			"bucket", cfg.Bucket, "ttl", ttl, "configured_ttl", cfg.TTL)
		if cfg.Conflict != nil {
			cfg.Conflict(fmt.Sprintf("lease bucket %s has a TTL of %s, not the %s configured: this replica leases with the bucket's, as every replica must", cfg.Bucket, ttl, cfg.TTL))
		}
		cfg.TTL = ttl
	}
	return newLease(kv, cfg), nil
}

// TTL is the lease's length: the lease bucket's TTL.
func (l *Lease) TTL() time.Duration { return l.cfg.TTL }

// newLease returns a Lease held in kv, a bucket whose TTL is cfg.TTL.
func newLease(kv keyValue, cfg LeaseConfig) *Lease {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:]) // crypto/rand does not fail
	return &Lease{
		kv: kv, cfg: cfg, logger: cfg.Logger.With("component", "lease", "replica", cfg.ID),
		incarnation: hex.EncodeToString(nonce[:]),
	}
}

// leaseValue is what the lease key holds: the replica, and which run of
// it, so that a replica that finds its own lease after a reconnect resumes
// it, while a restarted one does not take its predecessor's for its own.
type leaseValue struct {
	ID          string `json:"id"`
	Incarnation string `json:"incarnation"`
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
	if !leader {
		l.until = time.Time{}
	}
}

// renewed records that the lease runs until until, on this replica's
// monotonic clock.
func (l *Lease) renewed(until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leader, l.lastCheck, l.until = true, time.Now(), until
}

// Check returns nil while this replica holds the lease by its own clock,
// and an error wrapping watcher.ErrFenced otherwise. The publisher and the
// state store ask it before every write, reading the clock then rather
// than waiting for a timer: a replica paused past its lease (a frozen VM,
// SIGSTOP) that wakes in the middle of a poll stops at its next write,
// before the goroutine that would cancel its term has even run.
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

// Run campaigns until ctx ends. Whenever this replica holds the lease, it
// calls lead with a context that ends as soon as the lease may be lost: a
// renewal failed, or TTL*9/10 passed on this replica's monotonic clock
// since the last good one. lead must stop publishing and return when its
// context ends. On the way out Run gives the lease up, so that a standby
// takes over at once rather than after a TTL.
func (l *Lease) Run(ctx context.Context, lead func(ctx context.Context)) error {
	value, err := json.Marshal(l.self())
	if err != nil {
		return fmt.Errorf("encoding lease value: %w", err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopWatch()
	gone := l.watchGone(wctx, &wg)
	unreachable := 0
	var marker uint64     // the revision of the delete marker the watch last saw
	var leader leaseValue // the other replica this one last saw lead
	for {
		l.beat(l.cfg.TTL/5 + campaignBound)
		sent := time.Now()
		rev, err := l.kv.Create(ctx, leaseKey, value)
		if errors.Is(err, jetstream.ErrKeyExists) && marker != 0 {
			// Create looks for a delete marker with a read that a
			// replica of the bucket a moment behind may answer with
			// the lease just released. The watch saw the marker: take
			// the lease over it, as Create would, rather than wait a
			// campaign. If anyone wrote the key since, this fails too.
			sent = time.Now()
			if r, uerr := l.kv.Update(ctx, leaseKey, value, marker); uerr == nil {
				rev, err = r, nil
			}
		}
		marker = 0
		resumed := false
		var holder leaseValue
		if errors.Is(err, jetstream.ErrKeyExists) {
			// This run's own lease, held from before NATS went away and
			// still unexpired: no other replica can have led since.
			held, v, ok := l.holder(ctx)
			if ok && v == l.self() {
				sent = time.Now()
				rev, err = l.kv.Update(ctx, leaseKey, value, held)
				resumed = err == nil
			}
			holder = v
		}
		switch {
		case err == nil:
			if unreachable > 0 {
				l.logger.Info("lease bucket reachable again", "failed_attempts", unreachable)
				unreachable = 0
			}
			leader = leaseValue{}
			l.term(ctx, value, rev, sent, resumed, lead)
		case errors.Is(err, jetstream.ErrKeyExists):
			l.checked(false)
			if unreachable > 0 {
				l.logger.Info("lease bucket reachable again", "failed_attempts", unreachable)
				unreachable = 0
			}
			if holder.ID != "" && holder != leader {
				// Said when this replica starts standing by, and
				// whenever the leader changes: a standby is otherwise
				// silent for as long as it waits.
				l.logger.Info("standing by", "leader", holder.ID)
				leader = holder
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
		case marker = <-gone:
		}
	}
}

// watchGone returns a channel that hears whenever the lease key is
// deleted, purged or expires, with the revision of the marker that says
// so, so that a standby campaigns at once rather than at its next periodic
// try. The watch runs until ctx ends, in a goroutine wg waits for. Without
// it (a bucket that cannot be watched), the periodic tries remain, and the
// channel never fires.
func (l *Lease) watchGone(ctx context.Context, wg *sync.WaitGroup) <-chan uint64 {
	gone := make(chan uint64, 1)
	wg.Go(func() {
		// Started here, so that a watch slow to start holds no campaign.
		w, err := l.kv.Watch(ctx, leaseKey, jetstream.UpdatesOnly())
		if err != nil {
			if ctx.Err() == nil {
				l.logger.Warn("cannot watch the lease; standbys try to take it every fifth of a lease", "err", err)
			}
			return
		}
		defer func() {
			// Stopping deletes the watch's consumer, a request: when the
			// node that held the consumer died, no answer comes, and
			// the client waits out its 5 s timeout, which would hold
			// meetwatch's exit. The stop gets a second; past that it
			// ends when the connection closes, as the process exits.
			stopped := make(chan struct{})
			go func() {
				_ = w.Stop() // an error here only leaves an ephemeral consumer to lapse
				close(stopped)
			}()
			select {
			case <-stopped:
			case <-time.After(time.Second):
				l.logger.Debug("the lease watch did not stop within a second; leaving it to the connection's close")
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Operation() == jetstream.KeyValuePut {
					continue
				}
				select { // the latest marker replaces one not yet heard
				case <-gone:
				default:
				}
				gone <- e.Revision()
			}
		}
	})
	return gone
}

// self is what the lease key holds while this run of the replica leads.
func (l *Lease) self() leaseValue { return leaseValue{ID: l.cfg.ID, Incarnation: l.incarnation} }

// holder returns the revision of the lease key and who holds it, when
// anyone does.
func (l *Lease) holder(ctx context.Context) (uint64, leaseValue, bool) {
	var v leaseValue
	e, err := l.kv.Get(ctx, leaseKey)
	if err != nil || e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &v) != nil {
		return 0, leaseValue{}, false
	}
	return e.Revision(), v, true
}

// campaignBound bounds the requests of one campaign, each under the
// client's default timeout of 5 s.
const campaignBound = 4 * 5 * time.Second

// beat tells Beat, when set, that the loop beats again within d.
func (l *Lease) beat(d time.Duration) {
	if l.cfg.Beat != nil {
		l.cfg.Beat(time.Now().Add(d))
	}
}

// term holds the lease from the write sent at sent that took it (or, when
// resumed, resumed it) at rev, until it is lost or ctx ends.
//
// It leads at once. A former leader stood down on its own clock before the
// server let its key expire (9/10 of a TTL after its last renewal was sent,
// against a TTL after the server stored it), and one that was paused past
// that finds, on waking, that every write it tries asks the lease first
// (Check) and is refused: waiting a renewal before leading, as earlier
// versions did, protects against neither more than that.
func (l *Lease) term(ctx context.Context, value []byte, rev uint64, sent time.Time, resumed bool, lead func(context.Context)) {
	renewEvery := l.cfg.TTL / 3
	if resumed {
		l.logger.Info("resuming the lease this replica held before it lost touch")
	}
	// The lease runs from when the write was sent, not answered.
	left := l.cfg.TTL*9/10 - time.Since(sent)
	if left <= 0 {
		l.logger.Info("the renewal came back too late to lead on")
		return
	}
	l.renewed(sent.Add(l.cfg.TTL * 9 / 10))
	l.logger.Info("leading")
	l.beat(renewEvery + l.cfg.TTL)

	lctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	last := sent // when the last good renewal was sent
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
			l.beat(renewEvery + l.cfg.TTL)
			at := time.Now()
			next, err := l.renew(lctx, value, rev, last.Add(l.cfg.TTL*9/10))
			if err != nil {
				cancel(fmt.Errorf("%w: renewing the lease: %w", watcher.ErrFenced, err))
				return
			}
			rev, last = next, at
			l.renewed(at.Add(l.cfg.TTL * 9 / 10))
			deadline.Reset(l.cfg.TTL*9/10 - time.Since(at))
		}
	})
	lead(lctx)
	cancel(nil)
	wg.Wait()
	l.setLeader(false)
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

// renew renews the lease held at rev and returns its new revision. A
// renewal that fails for a passing reason (a timeout, no responders, a
// leader election in the cluster) is tried again until by, the leader's
// own deadline; one the bucket refuses because the key moved on or went
// away ends the term at once, unless the key still holds this run's
// value: then the answer to an earlier try was lost, and it landed.
func (l *Lease) renew(ctx context.Context, value []byte, rev uint64, by time.Time) (uint64, error) {
	retry := backoff.Backoff{Base: l.cfg.TTL / 30, Max: l.cfg.TTL / 10}
	adopted := false
	for attempt := 1; ; attempt++ {
		until := time.Now().Add(l.cfg.TTL / 3)
		if by.Before(until) {
			until = by
		}
		actx, cancel := context.WithDeadline(ctx, until)
		next, err := l.kv.Update(actx, leaseKey, value, rev)
		cancel()
		switch {
		case err == nil:
			if attempt > 1 {
				l.logger.Info("lease renewed after retries", "attempts", attempt)
			}
			return next, nil
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyNotFound):
			held, v, ok := l.holder(ctx)
			if !ok || v != l.self() || adopted {
				return 0, err
			}
			rev, adopted = held, true
			continue
		}
		// The last try goes out just before the deadline, however the
		// backoff falls.
		wait := min(retry.Next(), time.Until(by)-l.cfg.TTL/100)
		if ctx.Err() != nil || wait <= 0 {
			return 0, err
		}
		l.logger.Debug("lease renewal failed; retrying", "attempt", attempt, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, err
		case <-t.C:
		}
	}
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
