package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/publish"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/ha"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/metrics"
)

// watchAccounts runs the watchers of the accounts of an accounts file
// until ctx ends: one NATS connection, stream, state bucket and lease
// bucket for them all, and a placement that shares their units (budget
// groups, and accounts without one) out among the replicas. For each unit
// this replica takes it runs one watcher per account of the unit. SIGHUP
// reads the file again.
func watchAccounts(ctx context.Context, cfg config, logger *slog.Logger) error {
	accounts, err := loadAccounts(cfg)
	if err != nil {
		return err
	}
	// From here on, SIGHUP reads the file again rather than end the
	// process; one that comes before the placement is open is heard once
	// it is.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	health := &ha.Health{LoopGrace: accountsLoopGrace(cfg, accounts), Accounts: true}
	link, logger := linkedLogger(logger, health)
	mx := metrics.New(metrics.Sources{Leader: health.Leader, Connected: health.Connected, Accounts: health.Polling})
	f := newFleet(cfg, accounts, health, mx, link, logger)
	defer f.closeIdle()

	return serve(ctx, cfg, mx, health, logger, func(ctx context.Context, natsURL string) error {
		pipe, err := openPipelineOf(ctx, natsURL, cfg, nil, f.unitNames(), health, link, logger)
		if err != nil || pipe == nil {
			return err // nil, nil: stopped while NATS was unreachable
		}
		defer pipe.close()
		return f.run(ctx, pipe, hup)
	})
}

// accountsLoopGrace is config.loopGrace for the slowest of the accounts.
func accountsLoopGrace(cfg config, accounts []account) time.Duration {
	for _, a := range accounts {
		cfg.PollInterval = max(cfg.PollInterval, a.PollInterval)
		cfg.PollTimeout = max(cfg.PollTimeout, a.PollTimeout)
	}
	return cfg.loopGrace()
}

// fleet runs the watchers of the accounts of an accounts file: for each
// unit the placement gives this replica, a watcher per account of the
// unit, each with its own login, client, state prefix, publisher and
// logger, and a budget shared by the unit.
type fleet struct {
	cfg    config
	health *ha.Health
	mx     *metrics.Metrics
	link   *natsLink
	logger *slog.Logger
	policy *redact.Policy
	ignore snapshot.FieldSet
	zone   *time.Location // of the API's startTime
	// transport carries every account's requests, so that they share
	// one pool of connections; each account counts its own on top.
	transport http.RoundTripper
	// slots bounds the accounts' listings in flight (see slotLister).
	slots chan struct{}
	wakes wakes

	// pipe is set once NATS, the stream and the buckets are open, before
	// any unit is led.
	pipe       *pipeline
	maxPayload int64

	mu       sync.Mutex
	accounts map[string]account // as the file last read well says
	// budgets holds each unit's request budget and gate, shared by its
	// accounts: a budget group spends one budget, and a pause the API
	// asks of one of its accounts holds them all.
	budgets map[string]*unitBudget
	// changed is closed, and replaced, whenever accounts changes, so that
	// the units led start, stop and restart their accounts' watchers.
	changed chan struct{}
	// terms holds, for each account, a channel closed once the last term
	// of it that this replica began is over, so that two terms of one
	// account never overlap here (an account that moved from one unit to
	// another).
	terms map[string]chan struct{}
}

// unitBudget is the request budget and gate of one unit.
type unitBudget struct {
	rate    int // requests a minute; 0 for none
	limiter *rate.Limiter
	gate    *meetingapi.Gate
}

func newFleet(cfg config, accounts []account, health *ha.Health, mx *metrics.Metrics, link *natsLink, logger *slog.Logger) *fleet {
	policy, _ := redact.Parse(cfg.Redact) // validated with the configuration
	if key, _ := cfg.sealKey(); key != nil {
		policy = policy.WithKey(key)
	} else if policy != nil {
		logger.Warn("the digests of secrets in the state bucket are not keyed: anyone who can read the bucket can test guesses of a short password against them; set MEETWATCH_SEAL_KEY or MEETWATCH_SEAL_KEY_FILE")
	}
	ignore, _ := snapshot.ParseFieldSet(cfg.IgnoreFields) // validated with the configuration
	zone, _ := cfg.apiZone()                              // validated with the configuration
	// Each account's listing keeps up to PageConcurrency connections
	// busy, and AccountConcurrency listings run at once: the pool keeps
	// as many idle between polls, rather than dial them again.
	conns := min(cfg.PageConcurrency*cfg.AccountConcurrency, 4096)
	f := &fleet{
		cfg: cfg, health: health, mx: mx, link: link, logger: logger, policy: policy, ignore: ignore, zone: zone,
		transport: meetingapi.NewHTTPClient(conns, cfg.RequestTimeout).Transport,
		slots:     make(chan struct{}, cfg.AccountConcurrency),
		accounts:  map[string]account{},
		budgets:   map[string]*unitBudget{},
		changed:   make(chan struct{}),
		terms:     map[string]chan struct{}{},
	}
	f.set(accounts)
	return f
}

// closeIdle closes the connections to the API that no request uses, once
// the watchers stopped, rather than leave them to the server's timeout.
func (f *fleet) closeIdle() {
	if t, ok := f.transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// unitNames returns the units of the accounts, sorted.
func (f *fleet) unitNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return unitsOf(f.accounts)
}

func unitsOf(accounts map[string]account) []string {
	units := []string{}
	for _, a := range accounts {
		units = append(units, a.unit())
	}
	slices.Sort(units)
	return slices.Compact(units)
}

// set makes accounts the accounts to run, and returns the names of those
// added, removed and changed since the last set.
func (f *fleet) set(accounts []account) (added, removed, changed []string) {
	next := make(map[string]account, len(accounts))
	for _, a := range accounts {
		next[a.Name] = a
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, a := range next {
		switch old, ok := f.accounts[name]; {
		case !ok:
			added = append(added, name)
		case old != a:
			changed = append(changed, name)
		}
	}
	for name := range f.accounts {
		if _, ok := next[name]; !ok {
			removed = append(removed, name)
		}
	}
	f.accounts = next
	// A unit's budget is made anew when its rate changes; its accounts'
	// settings changed with it, so they restart on the new one.
	rates := map[string]int{}
	for _, a := range next {
		rates[a.unit()] = a.APIRate
	}
	for unit, perMinute := range rates {
		if b := f.budgets[unit]; b == nil || b.rate != perMinute {
			f.budgets[unit] = newUnitBudget(perMinute, f.cfg.PageConcurrency)
		}
	}
	for unit := range f.budgets {
		if _, ok := rates[unit]; !ok {
			delete(f.budgets, unit)
		}
	}
	close(f.changed)
	f.changed = make(chan struct{})
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	return added, removed, changed
}

func newUnitBudget(perMinute, burst int) *unitBudget {
	b := &unitBudget{rate: perMinute, gate: &meetingapi.Gate{}}
	if perMinute > 0 {
		b.limiter = meetingapi.NewBudget(perMinute, burst)
	}
	return b
}

// unit returns the accounts of unit and its budget as they are now, and
// the channel closed at their next change.
func (f *fleet) unit(unit string) (map[string]account, *unitBudget, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	in := map[string]account{}
	for name, a := range f.accounts {
		if a.unit() == unit {
			in[name] = a
		}
	}
	return in, f.budgets[unit], f.changed
}

// run shares the units out with the other replicas and leads those this
// replica takes, reading the file again at each SIGHUP, until ctx ends.
func (f *fleet) run(ctx context.Context, pipe *pipeline, hup <-chan os.Signal) error {
	f.pipe = pipe
	// The server's max payload bounds every event and state value, as
	// for one account (see lead).
	f.maxPayload = pipe.nc.MaxPayload()
	f.logger.Info("size limits", "max_payload", f.maxPayload,
		"max_event_bytes", events.MaxEventBytes(f.maxPayload), "max_record_bytes", events.MaxRecordBytes(f.maxPayload))
	f.mu.Lock()
	n := len(f.accounts)
	f.mu.Unlock()
	units := f.unitNames()
	f.logger.Info("watching accounts", "accounts_file", f.cfg.AccountsFile, "accounts", n, "units", len(units),
		"account_concurrency", f.cfg.AccountConcurrency, "stream", f.cfg.Stream, "subjects", f.cfg.SubjectPrefix+".<account>.>",
		"state_bucket", f.cfg.StateBucket, "replica", f.cfg.replicaID(), "lease_bucket", f.cfg.LeaseBucket, "lease_ttl", pipe.placement.TTL())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-f.link.connected:
				f.wakes.wake()
			case <-hup:
				f.reload(ctx)
			}
		}
	})
	err := pipe.placement.Run(ctx, f.lead)
	cancel()
	wg.Wait()
	return err
}

// reload reads the accounts file again. A file that is good replaces the
// accounts: an added one is campaigned for at the placement's next look,
// a removed one stops (its state stays in the bucket), and one whose
// settings changed starts a new term with them. A bad one is logged, and
// the accounts run on as they were.
func (f *fleet) reload(ctx context.Context) {
	accounts, err := loadAccounts(f.cfg)
	if err != nil {
		f.mx.Reloaded(false)
		f.logger.Error("the accounts file was not reloaded; the accounts read before run on unchanged", "file", f.cfg.AccountsFile, "err", err)
		return
	}
	added, removed, changed := f.set(accounts)
	units := f.unitNames()
	if err := f.pipe.placement.SetUnits(units); err != nil {
		// The file's names are checked as the placement's units are.
		f.logger.Error("the accounts file's units were not taken", "file", f.cfg.AccountsFile, "err", err)
	}
	f.health.SetLoopGrace(accountsLoopGrace(f.cfg, accounts))
	f.mx.Reloaded(true)
	f.logger.Info("accounts file reloaded", "file", f.cfg.AccountsFile, "accounts", len(accounts), "units", len(units),
		"added", strings.Join(added, ","), "removed", strings.Join(removed, ","), "changed", strings.Join(changed, ","))
	for _, name := range removed {
		f.clearView(ctx, name)
	}
}

// lead runs the unit's accounts, each its own watcher, until ctx ends:
// the unit's term is over, or this replica stops. As the accounts file
// changes, it starts the accounts added to the unit, stops those removed
// and restarts those whose settings changed. A watcher fenced ends the
// whole unit's term: its lease is lost, or another replica wrote the
// account's state.
func (f *fleet) lead(ctx context.Context, unit string) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type running struct {
		a    account
		stop context.CancelFunc
		done chan struct{}
	}
	terms := map[string]*running{}
	defer func() {
		for _, r := range terms {
			r.stop()
		}
		for _, r := range terms {
			<-r.done
		}
	}()
	for {
		want, budget, changed := f.unit(unit)
		for _, name := range slices.Sorted(maps.Keys(terms)) {
			r := terms[name]
			if a, ok := want[name]; ok && a == r.a {
				continue
			}
			r.stop()
			<-r.done
			delete(terms, name)
		}
		for _, name := range slices.Sorted(maps.Keys(want)) {
			if _, ok := terms[name]; ok {
				continue
			}
			a := want[name]
			actx, stop := context.WithCancel(ctx)
			r := &running{a: a, stop: stop, done: make(chan struct{})}
			terms[name] = r
			go func() {
				defer close(r.done)
				defer stop()
				if err := f.runAccount(actx, unit, a, budget); errors.Is(err, watcher.ErrFenced) {
					cancel()
				}
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// guard is what every event, state and view write of the unit's accounts
// asks: that NATS is connected, so that its failure names the cause, and
// that this replica still leads the unit by its own clock.
func (f *fleet) guard(unit string) func() error {
	return func() error {
		if !f.pipe.nc.IsConnected() {
			return f.link.explain(nats.ErrConnectionReconnecting)
		}
		return f.pipe.placement.Check(unit)
	}
}

// clearView deletes the view's keys of an account removed from the file,
// once its last term on this replica is over: no watcher will keep them
// true. A replica that did not poll it leaves them to the one that did.
// Each delete expects the revision read, so a replica that polls the
// account still (its file not yet reloaded) keeps its keys, and its next
// write puts back any that went.
func (f *fleet) clearView(ctx context.Context, name string) {
	f.mu.Lock()
	done := f.terms[name]
	f.mu.Unlock()
	if done == nil || f.pipe.view == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.RequestTimeout)
	defer cancel()
	select {
	case <-done:
	case <-ctx.Done():
		return
	}
	f.mu.Lock()
	_, back := f.accounts[name]
	f.mu.Unlock()
	if back {
		return
	}
	logger := f.logger.With("account", name)
	connected := func() error {
		if !f.pipe.nc.IsConnected() {
			return f.link.explain(nats.ErrConnectionReconnecting)
		}
		return nil
	}
	view := f.pipe.view.WithAccount(name, f.pipe.publisher.JetStream(), connected, logger)
	if err := view.Reconcile(ctx, nil, nil); err != nil {
		logger.Warn("the view keeps the keys of the removed account; delete them by hand", "err", err)
		return
	}
	logger.Info("removed the account's meetings from the view")
}

// runAccount runs one term of the account's watcher until ctx ends or a
// write is fenced. The term loads the account's state afresh: what the
// replica that polled it before committed.
func (f *fleet) runAccount(ctx context.Context, unit string, a account, budget *unitBudget) error {
	done := make(chan struct{})
	defer close(done)
	f.mu.Lock()
	prev := f.terms[a.Name]
	f.terms[a.Name] = done
	f.mu.Unlock()
	if prev != nil {
		select {
		case <-prev:
		case <-ctx.Done():
			return nil
		}
	}

	logger := f.logger.With("account", a.Name)
	c := a.settings(f.cfg)
	am := f.mx.Account(a.Name)
	defer am.Forget()
	hc := &http.Client{Transport: am.Transport(f.transport, meetingapi.Endpoints()...), Timeout: c.RequestTimeout}
	tokens := tokenSource(c, hc, budget.limiter, budget.gate, logger)
	defer tokens.Close()
	am.SetTokenExpiry(tokens.Expiry)
	client, err := newAPIClient(c, tokens, budget.limiter, budget.gate, hc, logger)
	if err != nil {
		logger.Error("not watching the account", "err", err)
		return err
	}
	guard := f.guard(unit)
	pub, err := publish.New(f.pipe.nc, publish.Config{
		Stream: f.cfg.Stream, Prefix: f.cfg.SubjectPrefix, Account: a.Name, Duplicates: f.cfg.DuplicateWindow,
		MaxAge: f.cfg.StreamMaxAge, Replicas: f.cfg.Replicas, Logger: logger, Guard: guard, Stored: am.Stored,
	})
	if err != nil {
		logger.Error("not watching the account", "err", err)
		return err
	}
	defer pub.Close()
	store, err := f.pipe.store.WithPrefix(a.statePrefix(), pub.JetStream(), guard, logger)
	if err != nil {
		logger.Error("not watching the account", "err", err)
		return err
	}
	var view watcher.View
	if f.pipe.view != nil {
		view = f.pipe.view.WithAccount(a.Name, pub.JetStream(), guard, logger)
	}
	wake := f.wakes.add()
	defer f.wakes.remove(wake)
	h := f.health.Account(a.Name)
	h.NewTerm()
	defer h.End()

	w := watcher.New(watcher.Config{
		Lister:    slotLister{Lister: client, slots: f.slots},
		Publisher: pub,
		Store:     store,
		View:      view,
		Builder: events.Builder{
			Source: events.AccountSource(client.Host(), a.Name), Prefix: f.cfg.SubjectPrefix, Account: a.Name,
			Redact: f.policy, Ignore: f.ignore, MaxBytes: events.MaxEventBytes(f.maxPayload), Zone: f.zone,
		},
		Redact:             f.policy,
		MaxRecordBytes:     events.MaxRecordBytes(f.maxPayload),
		Interval:           c.PollInterval,
		PollTimeout:        c.PollTimeout,
		ConfirmConcurrency: c.PageConcurrency,
		Wake:               wake,
		Logger:             logger,
		Health:             h,
		Observer:           am,
	})
	logger.Info("watching", "unit", unit, "api", redact.URL(c.APIURL), "interval", c.PollInterval,
		"subjects", f.cfg.SubjectPrefix+"."+a.Name+".>", "state_prefix", a.statePrefix(), "api_rate_per_min", c.APIRate)
	return w.Run(ctx)
}

// slotLister takes one of the listing slots every account shares for
// each listing, so that at most MEETWATCH_ACCOUNT_CONCURRENCY listings
// run at once. The wait for a slot counts against the poll's own
// deadline: an account whose API hangs holds one slot until its deadline
// at most, and one that waits too long for a slot fails that poll rather
// than hold up its next.
type slotLister struct {
	watcher.Lister
	slots chan struct{}
}

func (l slotLister) List(ctx context.Context, read snapshot.ReadFunc, planned func(watcher.Plan)) (snapshot.Snapshot, error) {
	select {
	case l.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for one of the %d listing slots (%s): %w", cap(l.slots), varName("AccountConcurrency"), context.Cause(ctx))
	}
	defer func() { <-l.slots }()
	return l.Lister.List(ctx, read, planned)
}

// wakes hands the news that NATS is back to the watcher of every account,
// each on a channel of its own: a failing poll then goes again at once.
type wakes struct {
	mu sync.Mutex
	to map[chan struct{}]bool
}

func (w *wakes) add() chan struct{} {
	c := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.to == nil {
		w.to = map[chan struct{}]bool{}
	}
	w.to[c] = true
	return c
}

func (w *wakes) remove(c chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.to, c)
}

func (w *wakes) wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for c := range w.to {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}
