package ha

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/watcher"
)

// Placement shares units of work (accounts, or groups of accounts that
// move as one) out among the replicas of a deployment, so that each unit
// is led by at most one replica at a time and every replica carries its
// share.
//
// Each unit is held through a lease of its own, the Lease of a single
// account under the key unit.<name>, in the one lease bucket, with the
// same fencing: the holder renews it every third of a TTL and stops on its
// own clock 9/10 of a TTL after its last good renewal, before the server
// can let the key go. Each replica also keeps a member key,
// member.<replica>, which the server lets go a TTL after the replica last
// wrote it. Every look (a tenth of a TTL, at least every half second),
// a replica lists the bucket: the live members, R, and who holds which of
// the A units. It takes free units while it holds fewer than its share,
// ceil(A/R), and gives one back per look while it holds more, so that the
// replicas settle on ceil(A/R) or floor(A/R) each, with no coordinator but
// the bucket.
type Placement struct {
	kv     placementBucket
	cfg    PlacementConfig
	logger *slog.Logger
	// run is what this run's member key and unit keys hold.
	run leaseValue
	// member is this replica's member key.
	member string
	// scores rank the units in this replica's order of preference (see
	// score); only Run's goroutine uses it.
	scores map[string]uint64

	mu    sync.Mutex
	units []string // as SetUnits last set them, sorted
	// leases holds the lease of each unit this replica has campaigned for
	// and that is still configured or led: one per unit, across its
	// terms, as Check reads it.
	leases    map[string]*Lease
	lastCheck time.Time
}

// PlacementConfig configures a Placement.
type PlacementConfig struct {
	// Bucket is the lease bucket; Replicas its replica count and TTL its
	// TTL when OpenPlacement creates it, as for a Lease. Every lease and
	// member key lasts one TTL, the bucket's.
	Bucket   string
	Replicas int
	TTL      time.Duration
	// ID names this replica in the bucket and in logs. Replicas need ids
	// of their own: two with one id count as one member.
	ID string
	// Units names the units to share out, each matching
	// [a-z0-9][a-z0-9-]{0,31}, so that it can stand in a key.
	Units []string
	// Logger receives the units taken and given back; nil discards them.
	Logger *slog.Logger
	// Beat, when set, hears that the placement's loop is alive and when
	// it will beat again at the latest, as LeaseConfig.Beat.
	Beat func(until time.Time)
	// Conflict, when set, hears of a lease bucket whose TTL differs from
	// TTL, as LeaseConfig.Conflict.
	Conflict func(msg string)
}

// placementBucket is what a Placement uses of the lease bucket: a lease's
// requests, a put for its member key, and the value of every live key.
type placementBucket interface {
	keyValue
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	Live(ctx context.Context) (map[string][]byte, error)
}

// The keys of a placement in the lease bucket.
const (
	memberPrefix = "member."
	unitPrefix   = "unit."
)

var (
	_ placementBucket = jsBucket{}

	unitName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	// notInKey is what a replica id may hold that a key may not.
	notInKey = regexp.MustCompile(`[^A-Za-z0-9_-]`)
)

// OpenPlacement opens the lease bucket as OpenLease does, creating it when
// it is missing, and returns a Placement of cfg.Units in it. The bucket's
// TTL wins over cfg.TTL, as for a Lease.
func OpenPlacement(ctx context.Context, js jetstream.JetStream, cfg PlacementConfig) (*Placement, error) {
	logger := slog.New(slog.DiscardHandler)
	if cfg.Logger != nil {
		logger = cfg.Logger.With("component", "placement", "replica", cfg.ID)
	}
	if err := checkUnits(cfg.Units); err != nil {
		return nil, err
	}
	kv, ttl, err := openLeaseBucket(ctx, js, cfg.Bucket, cfg.Replicas, cfg.TTL, cfg.Conflict, logger)
	if err != nil {
		return nil, err
	}
	cfg.TTL = ttl
	return newPlacement(jsBucket{KeyValue: kv, nc: js.Conn(), bucket: cfg.Bucket}, cfg)
}

// jsBucket is the lease bucket on a NATS server.
type jsBucket struct {
	jetstream.KeyValue
	nc     *nats.Conn
	bucket string
}

// listWait bounds a listing that gets no answer.
const listWait = 5 * time.Second

// Live returns the live keys of the bucket (see LiveKeys).
func (b jsBucket) Live(ctx context.Context) (map[string][]byte, error) {
	return LiveKeys(ctx, b.nc, b.bucket)
}

// LiveKeys returns every live key of the key-value bucket with its value,
// read in one batched direct get that the stream answers itself: a
// placement's every look would otherwise make and delete a consumer, each
// a proposal to the cluster's meta leader. The server answers at most
// 1,024 keys a request, far more than a deployment's replicas and units.
func LiveKeys(ctx context.Context, nc *nats.Conn, bucket string) (map[string][]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, listWait)
		defer cancel()
	}
	subjects := "$KV." + bucket + "."
	req, err := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
	}{[]string{subjects + ">"}})
	if err != nil {
		return nil, err
	}
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest("$JS.API.DIRECT.GET.KV_"+bucket, inbox, req); err != nil {
		return nil, err
	}
	live := map[string][]byte{}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, err
		}
		switch status := m.Header.Get("Status"); status {
		case "":
			if m.Header.Get("KV-Operation") == "" { // a delete or purge marker is no live key
				live[strings.TrimPrefix(m.Header.Get("Nats-Subject"), subjects)] = m.Data
			}
		case "204", "404": // the end of the keys, or none
			return live, nil
		case "503":
			return nil, nats.ErrNoResponders
		default:
			return nil, fmt.Errorf("%s %s", status, m.Header.Get("Description"))
		}
	}
}

// newPlacement returns a Placement of cfg.Units in kv, a bucket whose TTL
// is cfg.TTL.
func newPlacement(kv placementBucket, cfg PlacementConfig) (*Placement, error) {
	if err := checkUnits(cfg.Units); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Placement{
		kv:     kv,
		cfg:    cfg,
		logger: cfg.Logger.With("component", "placement", "replica", cfg.ID),
		run:    newRun(cfg.ID),
		member: memberPrefix + notInKey.ReplaceAllString(cmp.Or(cfg.ID, "replica"), "_"),
		scores: map[string]uint64{},
		leases: map[string]*Lease{},
	}
	p.units = sortedUnits(cfg.Units)
	return p, nil
}

// checkUnits returns an error naming the first unit name that cannot
// stand in a key.
func checkUnits(units []string) error {
	for _, u := range units {
		if !unitName.MatchString(u) {
			return fmt.Errorf("unit %q: a name is 1 to 32 of a-z, 0-9 and '-', starting with a letter or digit", u)
		}
	}
	return nil
}

func sortedUnits(units []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(units)))
}

// SetUnits replaces the units to share out, as a reload of the
// configuration does: an added unit is campaigned for from the next look
// on, and a removed one that this replica leads is given back at the next
// look, its term ended first.
func (p *Placement) SetUnits(units []string) error {
	if err := checkUnits(units); err != nil {
		return err
	}
	units = sortedUnits(units)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.units = units
	return nil
}

// Held returns the units this replica leads now, sorted; empty, not nil,
// when it leads none, so that it encodes as a JSON array either way.
func (p *Placement) Held() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	held := []string{}
	for unit, l := range p.leases {
		if l.Leader() {
			held = append(held, unit)
		}
	}
	slices.Sort(held)
	return held
}

// Leader reports whether this replica leads at least one unit, for the
// probes' role and for metrics.
func (p *Placement) Leader() bool { return len(p.Held()) > 0 }

// LastCheck is when this replica last listed the lease bucket.
func (p *Placement) LastCheck() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastCheck
}

// TTL is the length of every lease: the lease bucket's TTL.
func (p *Placement) TTL() time.Duration { return p.cfg.TTL }

// Check returns nil while this replica leads unit by its own clock, and an
// error wrapping watcher.ErrFenced otherwise, as Lease.Check does for the
// one lease: the writes of a unit's term ask it first.
func (p *Placement) Check(unit string) error {
	p.mu.Lock()
	l := p.leases[unit]
	p.mu.Unlock()
	if l == nil {
		return fmt.Errorf("%w: this replica does not lead %s", watcher.ErrFenced, unit)
	}
	if err := l.Check(); err != nil {
		return fmt.Errorf("unit %s: %w", unit, err)
	}
	return nil
}

// lookEvery is how often a replica lists the bucket, as often as a
// standby looks at the lease of a single account, so that a unit let go
// is taken as quickly.
func (p *Placement) lookEvery() time.Duration { return min(p.cfg.TTL/10, 500*time.Millisecond) }

// unitTerm is one term of a unit this replica leads.
type unitTerm struct {
	cancel context.CancelFunc
	done   chan struct{}
	// leaving is set once the term is ended to give the unit back: it no
	// longer counts as held.
	leaving bool
}

// placeState is what Run's loop keeps between looks.
type placeState struct {
	terms map[string]*unitTerm
	wg    sync.WaitGroup
	// memberRev is the revision of this replica's member key as it last
	// wrote it, and memberAt when; zero until it did.
	memberRev uint64
	memberAt  time.Time
	// resting holds the units this replica gave back to a member below
	// its share, and until when it leaves them to that member.
	resting map[string]time.Time
	// failures counts the looks in a row that the bucket did not answer.
	failures int
	// members and units are the counts last logged.
	members, units int
}

// Run shares the units out until ctx ends. For every unit this replica
// takes, it calls lead in a goroutine of its own, with a context that
// ends as soon as the unit's lease may be lost (as Lease.Run's lead's
// does) or the unit is given back. lead must stop the unit's work and
// return when its context ends; a lead that returns on its own ends the
// term, and the unit is given up. Only once lead returned is the unit's
// key deleted, so that the next holder loads what this term committed.
//
// When ctx ends, every term ends, every unit is given up at once and the
// member key deleted, so that the other replicas share the units out at
// their next look; Run returns once all that is done.
func (p *Placement) Run(ctx context.Context, lead func(ctx context.Context, unit string)) error {
	s := &placeState{terms: map[string]*unitTerm{}, resting: map[string]time.Time{}, members: -1, units: -1}
	defer func() {
		for _, t := range s.terms {
			t.cancel()
		}
		s.wg.Wait()
		p.reap(s)
		p.leave(s)
	}()
	// The first look waits one interval, so that replicas that start
	// together see one another before they campaign.
	for first := true; ; first = false {
		p.beat(p.lookEvery() + campaignTimeout)
		p.reap(s)
		lctx, cancel := context.WithTimeout(ctx, campaignTimeout)
		p.keepMember(lctx, s)
		if !first {
			p.look(ctx, lctx, s, lead)
		}
		cancel()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(p.lookEvery()):
		}
	}
}

// beat tells Beat, when set, that the loop beats again within d.
func (p *Placement) beat(d time.Duration) {
	if p.cfg.Beat != nil {
		p.cfg.Beat(time.Now().Add(d))
	}
}

// keepMember writes this replica's member key when it is due: at first,
// and then every third of a TTL, so that it outlives a write that fails.
func (p *Placement) keepMember(ctx context.Context, s *placeState) {
	if !s.memberAt.IsZero() && time.Since(s.memberAt) < p.cfg.TTL/3 {
		return
	}
	value, _ := json.Marshal(p.run) // two strings always encode
	at := time.Now()
	rev, err := p.kv.Put(ctx, p.member, value)
	if err != nil {
		p.logger.Debug("member key not written; trying again at the next look", "err", err)
		return
	}
	s.memberRev, s.memberAt = rev, at
}

// leave deletes this replica's member key, if it still is as this
// replica last wrote it.
func (p *Placement) leave(s *placeState) {
	if s.memberRev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.kv.Delete(ctx, p.member, jetstream.LastRevision(s.memberRev)); err != nil {
		p.logger.Debug("member key not deleted; it lapses on its own", "err", err)
		return
	}
	p.logger.Info("left the placement")
}

// reap forgets the terms that ended, and the leases of units no longer
// configured whose terms are over.
func (p *Placement) reap(s *placeState) {
	for unit, t := range s.terms {
		select {
		case <-t.done:
			delete(s.terms, unit)
		default:
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for unit := range p.leases {
		if _, running := s.terms[unit]; !running && !slices.Contains(p.units, unit) {
			delete(p.leases, unit)
		}
	}
}

// bucketView is what one listing of the lease bucket found.
type bucketView struct {
	// members holds the ids of the live members.
	members map[string]bool
	// holders holds the id of the replica whose key each held unit is.
	holders map[string]string
}

// list reads every key of the bucket.
func (p *Placement) list(ctx context.Context) (bucketView, error) {
	v := bucketView{members: map[string]bool{}, holders: map[string]string{}}
	live, err := p.kv.Live(ctx)
	if err != nil {
		return v, fmt.Errorf("listing the lease bucket: %w", err)
	}
	for key, value := range live {
		var holder leaseValue
		_ = json.Unmarshal(value, &holder) // a value that is not meetwatch's names no one
		switch {
		case strings.HasPrefix(key, memberPrefix) && holder.ID != "":
			v.members[holder.ID] = true
		case strings.HasPrefix(key, unitPrefix):
			v.holders[strings.TrimPrefix(key, unitPrefix)] = cmp.Or(holder.ID, "?") // held, by no member
		}
	}
	return v, nil
}

// look lists the bucket, then takes and gives back units as placement
// asks. Its requests go within lctx; the terms it starts last until ctx
// ends.
func (p *Placement) look(ctx, lctx context.Context, s *placeState, lead func(context.Context, string)) {
	p.mu.Lock()
	units := p.units
	p.mu.Unlock()
	// A unit no longer configured is given back at once, whether the
	// bucket answers or not.
	for unit, t := range s.terms {
		if !t.leaving && !slices.Contains(units, unit) {
			p.giveBack(s, unit, "no longer configured", nil)
		}
	}

	v, err := p.list(lctx)
	if err != nil {
		p.unreachable(lctx, s, err)
		return
	}
	p.mu.Lock()
	p.lastCheck = time.Now()
	p.mu.Unlock()
	if s.failures > 0 {
		p.logger.Info("lease bucket reachable again", "failed_attempts", s.failures)
		s.failures = 0
	}
	v.members[p.cfg.ID] = true

	for unit, until := range s.resting {
		if !time.Now().Before(until) || v.holders[unit] != "" {
			delete(s.resting, unit)
		}
	}

	d := p.decide(v, units, s)
	if len(v.members) != s.members || len(units) != s.units {
		s.members, s.units = len(v.members), len(units)
		p.logger.Info("sharing units", "members", s.members, "units", s.units, "share", d.share)
	}
	if d.giveBack != "" {
		p.giveBack(s, d.giveBack, d.why, []any{"held", d.held, "share", d.share})
		if d.why == whyFloor {
			s.resting[d.giveBack] = time.Now().Add(p.cfg.TTL)
		}
	}
	need := d.share - d.held
	for _, unit := range d.take {
		if need <= 0 {
			break
		}
		taken, err := p.campaign(ctx, lctx, s, unit, lead)
		if err != nil {
			p.unreachable(lctx, s, err)
			return
		}
		if taken {
			need--
		}
	}
}

// unreachable notes a look the bucket did not answer: said once an
// outage. Until it answers again this replica takes nothing, and what it
// leads lasts as long as its leases do.
func (p *Placement) unreachable(ctx context.Context, s *placeState, err error) {
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return // stopping
	}
	if s.failures == 0 {
		p.logger.Warn("cannot reach the lease bucket; taking no units until it answers", "err", err)
	}
	s.failures++
}

// The reasons a unit is given back, as logged.
const (
	whyOver  = "more than its share"
	whyFloor = "another member holds fewer than A/R"
)

// decision is what one look decides.
type decision struct {
	// held is how many configured units this replica leads, and share
	// how many it may: ceil(A/R).
	held, share int
	// take lists the free units, this replica's preferred first, to
	// campaign for until it holds its share.
	take []string
	// giveBack names a unit to give back, and why; empty: none.
	giveBack, why string
}

// decide shares the configured units out as v shows the bucket.
//
// A replica takes free units while it holds fewer than ceil(A/R), and
// gives back the unit it least prefers while it holds more: no replica
// holds more than ceil(A/R) once the members agree on R. When A is not a
// multiple of R, a replica may still be left below floor(A/R) with no
// unit free (its peers took the remainder first); then the first of the
// members at ceil(A/R), by id, gives one back, and leaves it to the
// others for a TTL. Each replica prefers the units in an order of its own
// (see score), so that replicas starting together campaign mostly for
// different units.
func (p *Placement) decide(v bucketView, units []string, s *placeState) decision {
	d := decision{}
	var mine []string
	for unit, t := range s.terms {
		if !t.leaving && slices.Contains(units, unit) {
			mine = append(mine, unit)
		}
	}
	d.held = len(mine)
	a, r := len(units), len(v.members)
	d.share = (a + r - 1) / r
	floor := a / r

	counts := map[string]int{}
	for id := range v.members {
		counts[id] = 0
	}
	for _, unit := range units {
		if id := v.holders[unit]; id != "" && id != p.cfg.ID && v.members[id] {
			counts[id]++
		}
	}
	counts[p.cfg.ID] = d.held

	free := 0
	for _, unit := range units {
		if _, running := s.terms[unit]; v.holders[unit] != "" || running {
			continue
		}
		free++
		if _, resting := s.resting[unit]; !resting {
			d.take = append(d.take, unit)
		}
	}
	slices.SortFunc(d.take, func(x, y string) int { return cmp.Compare(p.score(x), p.score(y)) })

	belowFloor := false
	for _, n := range counts {
		belowFloor = belowFloor || n < floor
	}
	switch {
	case d.held > d.share:
		d.why = whyOver
	case d.held == d.share && d.share > floor && free == 0 && belowFloor && p.firstAtShare(counts, d.share):
		d.why = whyFloor
	default:
		return d
	}
	d.giveBack = slices.MaxFunc(mine, func(x, y string) int { return cmp.Compare(p.score(x), p.score(y)) })
	return d
}

// firstAtShare reports whether this replica comes first, by id, among the
// members that hold share units.
func (p *Placement) firstAtShare(counts map[string]int, share int) bool {
	for id, n := range counts {
		if n == share && id < p.cfg.ID {
			return false
		}
	}
	return true
}

// score ranks unit in this replica's order of preference, lowest first:
// a hash of the replica's id and the unit, so that every replica ranks
// the units differently, and the same replica the same way every time.
func (p *Placement) score(unit string) uint64 {
	if s, ok := p.scores[unit]; ok {
		return s
	}
	sum := sha256.Sum256([]byte(p.cfg.ID + "\x00" + unit))
	s := binary.BigEndian.Uint64(sum[:8])
	p.scores[unit] = s
	return s
}

// giveBack ends the term of unit; the term deletes the unit's key once
// lead returned, so that the next holder loads what this one committed.
func (p *Placement) giveBack(s *placeState, unit, why string, attrs []any) {
	t := s.terms[unit]
	t.leaving = true
	t.cancel()
	p.logger.Info("giving a unit back", append([]any{"unit", unit, "reason", why}, attrs...)...)
}

// campaign tries to take unit, which the bucket showed free, within lctx,
// and leads it until ctx ends when it did. It reports false when another
// replica was quicker, and an error when the bucket did not answer.
func (p *Placement) campaign(ctx, lctx context.Context, s *placeState, unit string, lead func(context.Context, string)) (bool, error) {
	l := p.lease(unit)
	sent := time.Now()
	rev, err := p.kv.Create(lctx, l.cfg.Key, l.value)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("taking unit %s: %w", unit, err)
	}
	tctx, cancel := context.WithCancel(ctx)
	t := &unitTerm{cancel: cancel, done: make(chan struct{})}
	s.terms[unit] = t
	s.wg.Go(func() {
		defer close(t.done)
		defer cancel()
		l.term(tctx, rev, sent, func(lctx context.Context) { lead(lctx, unit) })
	})
	return true, nil
}

// lease returns the lease of unit, made at its first campaign.
func (p *Placement) lease(unit string) *Lease {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.leases[unit]
	if l == nil {
		cfg := LeaseConfig{Bucket: p.cfg.Bucket, TTL: p.cfg.TTL, Key: unitPrefix + unit, ID: p.cfg.ID}
		l = leaseOn(p.kv, cfg, p.run, p.cfg.Logger.With("component", "lease", "replica", p.cfg.ID, "unit", unit))
		p.leases[unit] = l
	}
	return l
}
