package ha

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher"
)

// Health answers the /healthz and /readyz probes, so that an orchestrator
// restarts a replica whose own loops are stuck, and knows which replicas
// are ready. The two ask different questions:
//
//   - /healthz, liveness: should this process be restarted? It is 200
//     while every loop of the process (the poll loop of a leader, the
//     lease's campaign and renewals, the set-up of NATS) has beaten within
//     LoopGrace of the deadline it gave at its last beat. A loop beats
//     whether its work succeeded or not, so an outage of NATS or of the
//     API never fails it: a restart would mend neither, and would lose
//     the process's place in the lease.
//   - /readyz, readiness: is this replica doing its job now? It is 200
//     once NATS is connected, the stream and buckets are open, and this
//     replica either leads with a snapshot committed in this term, or
//     stands by having looked at the lease within LeaseMaxAge.
//
// With many accounts (Accounts set), each account this replica polls has
// a poll loop of its own (see Account): liveness watches each, and
// readiness asks that every one of them committed in its term, or, when
// the replica polls none, that it looked at the lease bucket within
// LeaseMaxAge. The reports list the accounts polled.
//
// Both answer JSON, with the reason when they are not 200 and the error
// behind the current trouble (last_error, credentials removed). Health is
// usable from the process's first moment, before NATS is connected:
// SetConnection and SetLease (or SetPlacement) attach what it reads once
// they exist.
type Health struct {
	// LoopGrace is how far past its own deadline a loop may be while
	// healthy: publishing and committing have no deadline of their own,
	// and a loaded machine runs late.
	LoopGrace time.Duration
	// LeaseMaxAge is how old a standby's last look at the lease may be
	// while it is ready; 0 means three of the lease's TTLs.
	LeaseMaxAge time.Duration
	// Explain, when set, says an error as last_error shows it; nil means
	// its own text. Either way the credentials of URLs are removed.
	Explain func(error) string
	// Accounts says that this replica polls the accounts of an accounts
	// file, each through Account: the reports carry "accounts", the
	// names it polls now, an empty list when none. Set it before the
	// probes are served.
	Accounts bool

	mu        sync.Mutex
	connected func() bool
	lease     elector
	lastPoll  time.Time
	committed bool
	// loops holds each loop's deadline from its last beat.
	loops map[string]time.Time
	// errs holds the error of each source (nats, setup, poll) that has
	// not recovered since.
	errs map[string]timedError
	// warnings are settings an operator should see (see SetWarnings).
	warnings []string
	// polled holds the accounts this replica polls now, each with the
	// state of its term (see Account).
	polled map[string]*accountTerm
	// grace, when set, replaces LoopGrace (see SetLoopGrace).
	grace time.Duration
}

// accountTerm is one term of an account's poll loop.
type accountTerm struct {
	lastPoll  time.Time
	committed bool
}

var _ watcher.Health = (*Health)(nil)

// elector is what the probes read of a Lease or a Placement: whether this
// replica leads (one unit at least), and when it last heard from the
// lease bucket.
type elector interface {
	Leader() bool
	LastCheck() time.Time
	TTL() time.Duration
}

var (
	_ elector = (*Lease)(nil)
	_ elector = (*Placement)(nil)
)

type timedError struct {
	at  time.Time
	msg string
}

// The loops Health watches, and the sources of last_error.
const (
	// LoopPoll is the leader's poll loop; it counts only while this
	// replica leads.
	LoopPoll = "poll"
	// LoopLease is the lease's campaigns and renewals.
	LoopLease = "lease"
	// LoopSetup is the connection to NATS and the opening of the stream
	// and buckets, retried until they succeed.
	LoopSetup = "setup"

	// SourceNATS is the NATS connection.
	SourceNATS = "nats"
)

// SetConnection attaches the NATS connection's state.
func (h *Health) SetConnection(connected func() bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.connected = connected
}

// SetLease attaches the lease, once the stream and buckets are open.
func (h *Health) SetLease(l *Lease) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lease = nil
	if l != nil {
		h.lease = l
	}
}

// SetPlacement attaches the placement of many units, in place of a lease:
// the replica leads while it holds at least one unit, and stands by while
// it holds none.
func (h *Health) SetPlacement(p *Placement) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lease = nil
	if p != nil {
		h.lease = p
	}
}

// SetWarnings replaces the warnings both probes show: settings of the
// stream or buckets that keep a guarantee from holding, which meetwatch
// leaves as their operator set them. They change neither probe's status:
// the replica works, and a restart would not mend them.
func (h *Health) SetWarnings(msgs []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.warnings = slices.Clone(msgs)
}

// Connected reports whether NATS is connected, for metrics.
func (h *Health) Connected() bool {
	h.mu.Lock()
	connected := h.connected
	h.mu.Unlock()
	return connected != nil && connected()
}

// Leader reports whether this replica leads, for metrics.
func (h *Health) Leader() bool {
	h.mu.Lock()
	lease := h.lease
	h.mu.Unlock()
	return lease != nil && lease.Leader()
}

// SetLoopGrace replaces LoopGrace while the probes are served: a reload
// of the accounts file may bring a longer poll interval.
func (h *Health) SetLoopGrace(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.grace = d
}

// Beat records that loop is alive and will beat again by until.
func (h *Health) Beat(loop string, until time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.loops == nil {
		h.loops = make(map[string]time.Time)
	}
	h.loops[loop] = until
}

// Done records that loop ended as it should: it is watched no more.
func (h *Health) Done(loop string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.loops, loop)
}

// Failed records the error of source (SourceNATS, LoopSetup, LoopPoll),
// shown as last_error until Recovered(source).
func (h *Health) Failed(source string, err error) {
	if err == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.errs == nil {
		h.errs = make(map[string]timedError)
	}
	msg := err.Error()
	if h.Explain != nil {
		msg = h.Explain(err)
	}
	h.errs[source] = timedError{at: time.Now(), msg: redact.Text(msg)}
}

// Recovered records that source works again.
func (h *Health) Recovered(source string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.errs, source)
}

// NewTerm forgets the last term's polls and heartbeats: a replica that
// leads again is not ready until it has committed in this term.
func (h *Health) NewTerm() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastPoll, h.committed = time.Time{}, false
	delete(h.loops, LoopPoll)
}

// Alive records a heartbeat of the poll loop: it is alive, and its own
// deadline of the moment is until.
func (h *Health) Alive(until time.Time) {
	if h == nil {
		return
	}
	h.Beat(LoopPoll, until)
}

// Polled records a complete, committed poll.
func (h *Health) Polled(at time.Time) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastPoll, h.committed = at, true
	delete(h.errs, LoopPoll)
}

// PollFailed records the error of a poll, shown as last_error until a
// poll commits.
func (h *Health) PollFailed(err error) {
	if h == nil {
		return
	}
	h.Failed(LoopPoll, err)
}

// Report is the probes' JSON body. Accounts, set only with
// Health.Accounts, are the accounts this replica polls now, sorted: an
// empty list when none.
type Report struct {
	Status         string     `json:"status"`
	Role           string     `json:"role"`
	Accounts       []string   `json:"accounts,omitzero"`
	Reason         string     `json:"reason,omitempty"`
	NATSConnected  bool       `json:"nats_connected"`
	LastPoll       *time.Time `json:"last_poll,omitempty"`
	LastLeaseCheck *time.Time `json:"last_lease_check,omitempty"`
	LastError      string     `json:"last_error,omitempty"`
	LastErrorAt    *time.Time `json:"last_error_at,omitempty"`
	Warnings       []string   `json:"warnings,omitempty"`
}

// Check returns the readiness and liveness reports.
func (h *Health) Check(now time.Time) (ready, healthy Report) {
	h.mu.Lock()
	connected, lease := h.connected, h.lease
	lastPoll, committed := h.lastPoll, h.committed
	loops := maps.Clone(h.loops)
	warnings := slices.Clone(h.warnings)
	errs := maps.Clone(h.errs)
	grace := cmp.Or(h.grace, h.LoopGrace)
	var polled []string
	var uncommitted []string
	var oldest time.Time
	if h.Accounts {
		polled = make([]string, 0, len(h.polled))
		for name, t := range h.polled {
			polled = append(polled, name)
			switch {
			case !t.committed:
				uncommitted = append(uncommitted, name)
			case oldest.IsZero() || t.lastPoll.Before(oldest):
				oldest = t.lastPoll
			}
		}
		slices.Sort(polled)
		slices.Sort(uncommitted)
		lastPoll = oldest
	}
	h.mu.Unlock()

	base := Report{Role: "standby", NATSConnected: connected != nil && connected(), Warnings: warnings, Accounts: polled}
	if !lastPoll.IsZero() {
		base.LastPoll = &lastPoll
	}
	leader := false
	var lastCheck time.Time
	maxAge := h.LeaseMaxAge
	if lease != nil {
		leader, lastCheck = lease.Leader(), lease.LastCheck()
		if maxAge == 0 {
			maxAge = 3 * lease.TTL()
		}
		if !lastCheck.IsZero() {
			base.LastLeaseCheck = &lastCheck
		}
	}
	if leader {
		base.Role = "leader"
	}
	if lease != nil && !leader {
		// A former term's: a standby does not poll.
		delete(errs, LoopPoll)
		delete(loops, LoopPoll)
	}
	var last timedError
	for _, e := range errs {
		if e.at.After(last.at) {
			last = e
		}
	}
	if last.msg != "" {
		base.LastError, base.LastErrorAt = last.msg, &last.at
	}

	ready, healthy = base, base
	switch {
	case !base.NATSConnected:
		ready.Reason = "nats is not connected"
	case lease == nil:
		ready.Reason = "opening the stream and buckets"
	case h.Accounts && len(uncommitted) > 0:
		ready.Reason = "no snapshot committed yet in this term for " + accountList(uncommitted)
	case h.Accounts && len(polled) == 0 && (lastCheck.IsZero() || now.Sub(lastCheck) > maxAge):
		ready.Reason = "no recent lease check"
	case h.Accounts:
	case leader && !committed:
		ready.Reason = "no snapshot committed yet"
	case !leader && (lastCheck.IsZero() || now.Sub(lastCheck) > maxAge):
		ready.Reason = "no recent lease check"
	}
	for _, name := range slices.Sorted(maps.Keys(loops)) {
		if now.Sub(loops[name]) > grace {
			healthy.Reason = "the " + name + " loop is more than " + grace.String() + " past its own deadline"
			break
		}
	}
	for _, r := range []*Report{&ready, &healthy} {
		r.Status = "ok"
		if r.Reason != "" {
			r.Status = "unavailable"
		}
	}
	return ready, healthy
}

// accountList names accounts in a reason: the first few, and how many
// more.
func accountList(names []string) string {
	const shown = 5
	word := "accounts "
	if len(names) == 1 {
		word = "account "
	}
	if len(names) <= shown {
		return word + strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s%s and %d more", word, strings.Join(names[:shown], ", "), len(names)-shown)
}

// Account returns the watcher.Health of one account's poll loop, for a
// replica that polls many: its heartbeats are a loop of their own, named
// "poll <name>" in /healthz, and its errors a source of last_error that
// names the account. NewTerm counts the account as polled by this
// replica, until End.
func (h *Health) Account(name string) *AccountHealth {
	return &AccountHealth{h: h, name: name, loop: LoopPoll + " " + name}
}

// AccountHealth is the watcher.Health of one account (see Health.Account).
type AccountHealth struct {
	h          *Health
	name, loop string
	// term is the term NewTerm began, which End ends only if it is still
	// the account's.
	term *accountTerm
}

var _ watcher.Health = (*AccountHealth)(nil)

// NewTerm records that this replica polls the account from now on, with
// nothing committed yet in this term.
func (a *AccountHealth) NewTerm() {
	a.h.mu.Lock()
	defer a.h.mu.Unlock()
	if a.h.polled == nil {
		a.h.polled = make(map[string]*accountTerm)
	}
	a.term = &accountTerm{}
	a.h.polled[a.name] = a.term
	delete(a.h.loops, a.loop)
	delete(a.h.errs, a.loop)
}

// Polled records a committed poll of the account.
func (a *AccountHealth) Polled(at time.Time) {
	a.h.mu.Lock()
	defer a.h.mu.Unlock()
	if a.term != nil {
		a.term.lastPoll, a.term.committed = at, true
	}
	delete(a.h.errs, a.loop)
}

// PollFailed records the error of a poll of the account, shown as
// last_error, with the account's name, until a poll commits.
func (a *AccountHealth) PollFailed(err error) {
	if err != nil {
		a.h.Failed(a.loop, fmt.Errorf("account %s: %w", a.name, err))
	}
}

// Alive records a heartbeat of the account's poll loop.
func (a *AccountHealth) Alive(until time.Time) { a.h.Beat(a.loop, until) }

// End records that the term is over: the account is no longer polled
// here, and its loop and its error are forgotten.
func (a *AccountHealth) End() {
	a.h.mu.Lock()
	defer a.h.mu.Unlock()
	if a.term == nil || a.h.polled[a.name] != a.term {
		return // another term of the account began meanwhile
	}
	delete(a.h.polled, a.name)
	delete(a.h.loops, a.loop)
	delete(a.h.errs, a.loop)
	a.term = nil
}

// Polling returns how many accounts this replica polls now, for metrics.
func (h *Health) Polling() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.polled)
}

// Handler serves /readyz and /healthz.
func (h *Health) Handler() http.Handler {
	mux := http.NewServeMux()
	serve := func(pick func(ready, healthy Report) Report) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			r := pick(h.Check(time.Now()))
			w.Header().Set("Content-Type", "application/json")
			if r.Reason != "" {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			_ = json.NewEncoder(w).Encode(r) // a probe that hung up is no error of ours
		}
	}
	mux.HandleFunc("GET /readyz", serve(func(ready, _ Report) Report { return ready }))
	mux.HandleFunc("GET /healthz", serve(func(_, healthy Report) Report { return healthy }))
	return mux
}

// Listen listens for the probes on addr. It is apart from Serve so that
// the probes listen from the process's first moment, before anything
// connects, and a taken port is known at once.
func Listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for probes on %s: %w", addr, err)
	}
	return l, nil
}

// Serve serves h (the probes, and whatever else shares their port) on l
// until ctx ends, then shuts the server down within a second: a probe cut
// short by a stopping process is fine.
func Serve(ctx context.Context, l net.Listener, h http.Handler, logger *slog.Logger) error {
	logger.Info("serving probes", "addr", l.Addr().String())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		return fmt.Errorf("serving probes: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx) // the process is stopping; a probe cut short is fine
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving probes: %w", err)
	}
	return nil
}
