package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Health answers the /healthz and /readyz probes from what the watcher and
// the lease report, so that an orchestrator restarts a stuck replica and
// routes nothing to one that is not ready.
//
//   - /readyz is 200 once NATS is connected and this replica is either the
//     leader with a committed snapshot, or a standby that heard from the
//     lease recently.
//   - /healthz is 200 while the poll loop is alive (leader) or the last
//     lease check is recent (standby). The loop tells Alive its own
//     deadline of the moment, at each poll's start, each time the poll's
//     deadline moves, and at the start of each wait; it is alive while
//     that deadline is at most LoopGrace past. A long but healthy poll (a
//     first listing of ten minutes under the request budget) says so, and
//     stays healthy; a failing poll that backs off is alive too, since a
//     restart would not mend it. A leader whose loop has not beaten yet
//     this term is healthy while its lease renewals are recent.
//
// Both answer JSON with the reason when they are not 200.
type Health struct {
	// Connected reports whether NATS is connected; nil means always.
	Connected func() bool
	// Lease tells leader from standby; nil means a single replica that
	// always leads.
	Lease *Lease
	// LoopGrace is how far past its own deadline the poll loop may be
	// while healthy: publishing and committing have no deadline of their
	// own, and a loaded machine runs late.
	LoopGrace time.Duration
	// LeaseMaxAge is how old the last lease check may be while healthy.
	LeaseMaxAge time.Duration

	mu         sync.Mutex
	lastPoll   time.Time
	committed  bool
	aliveUntil time.Time // the loop's deadline, from its last heartbeat
	warnings   []string
}

// Warn adds msg to the warnings both probes show: a setting that keeps
// meetwatch from a guarantee, which an operator should see, but which
// leaves it working, so the probes' status does not change for it.
func (h *Health) Warn(msg string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.warnings = append(h.warnings, msg)
}

// NewTerm forgets the last term's polls and heartbeats: a replica that
// leads again is not ready until it has committed in this term.
func (h *Health) NewTerm() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastPoll, h.committed, h.aliveUntil = time.Time{}, false, time.Time{}
}

// Alive records a heartbeat of the poll loop: it is alive, and its own
// deadline of the moment is until.
func (h *Health) Alive(until time.Time) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.aliveUntil = until
}

// Polled records a complete, committed poll.
func (h *Health) Polled(at time.Time) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastPoll, h.committed = at, true
}

// Report is the probes' JSON body.
type Report struct {
	Status         string     `json:"status"`
	Role           string     `json:"role"`
	Reason         string     `json:"reason,omitempty"`
	NATSConnected  bool       `json:"nats_connected"`
	LastPoll       *time.Time `json:"last_poll,omitempty"`
	LastLeaseCheck *time.Time `json:"last_lease_check,omitempty"`
	Warnings       []string   `json:"warnings,omitempty"`
}

// Check returns the readiness and liveness reports.
func (h *Health) Check(now time.Time) (ready, healthy Report) {
	h.mu.Lock()
	lastPoll, committed, aliveUntil := h.lastPoll, h.committed, h.aliveUntil
	warnings := slices.Clone(h.warnings)
	h.mu.Unlock()

	base := Report{Role: "leader", NATSConnected: h.Connected == nil || h.Connected(), Warnings: warnings}
	if !lastPoll.IsZero() {
		base.LastPoll = &lastPoll
	}
	leader := true
	var lastCheck time.Time
	if h.Lease != nil {
		leader, lastCheck = h.Lease.Leader(), h.Lease.LastCheck()
		if !lastCheck.IsZero() {
			base.LastLeaseCheck = &lastCheck
		}
		if !leader {
			base.Role = "standby"
		}
	}
	fresh := func(t time.Time, maxAge time.Duration) bool { return !t.IsZero() && now.Sub(t) <= maxAge }

	ready, healthy = base, base
	switch {
	case !base.NATSConnected:
		ready.Reason = "nats is not connected"
	case leader && !committed:
		ready.Reason = "no snapshot committed yet"
	case !leader && !fresh(lastCheck, h.LeaseMaxAge):
		ready.Reason = "no recent lease check"
	}
	switch {
	case leader && !aliveUntil.IsZero() && now.Sub(aliveUntil) > h.LoopGrace:
		healthy.Reason = "the poll loop is more than " + h.LoopGrace.String() + " past its own deadline"
	case leader && aliveUntil.IsZero() && h.Lease != nil && !fresh(lastCheck, h.LeaseMaxAge):
		healthy.Reason = "no recent lease renewal"
	case !leader && !fresh(lastCheck, h.LeaseMaxAge):
		healthy.Reason = "no recent lease check"
	}
	for _, r := range []*Report{&ready, &healthy} {
		r.Status = "ok"
		if r.Reason != "" {
			r.Status = "unavailable"
		}
	}
	return ready, healthy
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

// Serve serves h (the probes, and whatever else shares their port) on
// addr until ctx ends, then shuts the server down within a second: a probe
// cut short by a stopping process is fine.
func Serve(ctx context.Context, addr string, h http.Handler, logger *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for probes on %s: %w", addr, err)
	}
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
