package watcher_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
)

// The engine's ports in memory, for tests inside a synctest bubble, where a
// real NATS server's sockets would stop fake time. The JetStream adapters
// keep their own tests (events, kvstore), and the tests of this package
// that do not depend on time run on a real NATS server.

var (
	_ watcher.Publisher  = (*memPublisher)(nil)
	_ watcher.StateStore = (*memStore)(nil)
	_ watcher.Health     = (*memHealth)(nil)
)

// memPublisher is a watcher.Publisher that keeps what it is given and, like
// JetStream with a duplicate window, stores an id once.
type memPublisher struct {
	// hold, when set, runs first in Publish, which fails with its error,
	// or goes on if it returns nil: a test's control over acknowledgements.
	hold func(ctx context.Context) error

	mu  sync.Mutex
	evs []events.Event
	ids map[string]bool
}

func (p *memPublisher) Send(ctx context.Context, msgs []events.Message) (events.PublishResult, error) {
	if p.hold != nil {
		if err := p.hold(ctx); err != nil {
			return events.PublishResult{}, fmt.Errorf("waiting for acks: %w", err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ids == nil {
		p.ids = map[string]bool{}
	}
	var res events.PublishResult
	for _, m := range msgs {
		e, err := events.Decode(m.Body)
		if err != nil {
			return res, err
		}
		if p.ids[e.ID] {
			res.Duplicates++
			continue
		}
		p.ids[e.ID] = true
		p.evs = append(p.evs, e)
		res.Stored++
	}
	return res, nil
}

// events returns every event stored, in the order published.
func (p *memPublisher) events() []events.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.evs)
}

// memStore is a watcher.StateStore in memory with kvstore.Store's
// contract: Intend writes the started and changed meetings about to be
// announced as intents, Record the outcome once announced, Commit the
// missing meetings and then the meta, and Load returns the intents as
// Pending.
type memStore struct {
	mu        sync.Mutex
	snap      snapshot.Snapshot
	intents   map[string]snapshot.Change // written by Intend, not yet by Record
	observed  time.Time
	committed bool
	missing   map[string]time.Time
	commits   []time.Time       // when each commit landed
	revs      map[string]uint64 // each key's last write, numbered from 1
	seq       uint64
	// failCommit, when set, is asked before the i-th call of Commit
	// (0-based) lands; an error fails that call, which writes nothing.
	failCommit func(i int) error
	calls      int
}

func (s *memStore) Load(context.Context) (watcher.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := watcher.State{Snapshot: maps.Clone(s.snap), ObservedAt: s.observed, Committed: s.committed, Missing: maps.Clone(s.missing)}
	if st.Snapshot == nil {
		st.Snapshot = snapshot.Snapshot{}
	}
	for _, c := range s.intents {
		st.Pending = append(st.Pending, c)
		if c.Kind == snapshot.Changed {
			st.Snapshot[c.Key] = c.Old
		}
		if !s.committed && st.ObservedAt.IsZero() {
			st.ObservedAt = s.observed
		}
	}
	slices.SortFunc(st.Pending, func(a, b snapshot.Change) int { return strings.Compare(a.Key, b.Key) })
	return st, nil
}

func (s *memStore) Intend(ctx context.Context, changes []snapshot.Change, observedAt time.Time) error {
	if err := ctx.Err(); err != nil {
		return err // as JetStream's writes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.intents == nil {
		s.intents = map[string]snapshot.Change{}
	}
	if !s.committed && s.observed.IsZero() {
		s.observed = observedAt
	}
	for i, c := range changes {
		switch c.Kind {
		case snapshot.Started:
			changes[i].Incarnation = 1
			s.intents[c.Key] = changes[i]
		case snapshot.Changed:
			s.intents[c.Key] = c
		default:
			continue
		}
		s.wrote(c.Key)
	}
	return nil
}

func (s *memStore) Record(ctx context.Context, changes []snapshot.Change, _ time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap == nil {
		s.snap = snapshot.Snapshot{}
	}
	for _, c := range changes {
		delete(s.intents, c.Key)
		if c.Kind == snapshot.Ended {
			delete(s.snap, c.Key)
			delete(s.revs, c.Key)
			continue
		}
		s.snap[c.Key] = c.New
		s.wrote(c.Key)
	}
	return nil
}

func (s *memStore) Commit(_ context.Context, commit watcher.Commit) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.failCommit != nil {
		if err := s.failCommit(s.calls - 1); err != nil {
			return err
		}
	}
	for _, id := range commit.Settled {
		delete(s.missing, id)
	}
	for id, at := range commit.Missed {
		if s.missing == nil {
			s.missing = map[string]time.Time{}
		}
		s.missing[id] = at
	}
	s.observed, s.committed = commit.ObservedAt, true
	s.commits = append(s.commits, time.Now())
	return nil
}

// ReadAhead reads nothing: the memory holds every key at hand.
func (s *memStore) ReadAhead(ctx context.Context, _ <-chan string) { <-ctx.Done() }

// wrote numbers a write of key; call it with s.mu held.
func (s *memStore) wrote(key string) {
	if s.revs == nil {
		s.revs = map[string]uint64{}
	}
	s.seq++
	s.revs[key] = s.seq
}

func (s *memStore) Revision(confUUID string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revs[confUUID]
}

// commitTimes returns when each commit landed.
func (s *memStore) commitTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.commits)
}

// memHealth is a watcher.Health that keeps the loop's heartbeats: the
// deadline each one announced, as fake time since t0.
type memHealth struct {
	t0 time.Time

	mu    sync.Mutex
	beats []time.Duration
}

func (h *memHealth) NewTerm()           {}
func (h *memHealth) Polled(_ time.Time) {}
func (h *memHealth) PollFailed(error)   {}

// Alive is the heartbeat Run sends when its Health listens.
func (h *memHealth) Alive(until time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.beats = append(h.beats, until.Sub(h.t0))
}

// heard returns the deadlines announced so far.
func (h *memHealth) heard() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.beats)
}
