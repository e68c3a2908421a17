package kvstore

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/jsensure"
)

// Config configures the state bucket.
type Config struct {
	// Bucket is the key-value bucket's name.
	Bucket string
	// Prefix starts every key of this store, such as "acme.", so that
	// the watchers of several accounts keep their states apart in one
	// bucket; see ValidPrefix. Empty for the keys of a single watcher.
	Prefix string
	// Replicas is the bucket's replica count when Open creates it; 0
	// means 1.
	Replicas int
	// DuplicateWindow is the event stream's duplicate window: the delete
	// marker of an ended meeting's key stays that long, so that a meeting
	// listed again within it gets a new incarnation, and events JetStream
	// does not drop. 0 means an hour.
	DuplicateWindow time.Duration
	// Guard, when set, is asked before every write, and an error it
	// returns stops the write: the lease's check that this replica still
	// leads by its own clock.
	Guard func() error
	// Logger hears of loads that stalled and started again; nil discards.
	Logger *slog.Logger
	// Conflict, when set, hears of each setting of an existing bucket
	// that keeps the state from a guarantee and that Open leaves as the
	// operator set it, as a sentence for the readiness probe.
	Conflict func(msg string)
}

// Open opens the state bucket, creating it when it is missing. An existing
// bucket keeps the settings an operator gave it: only per-message TTLs are
// added when it lacks them, since without them the markers of ended
// meetings would stay for good and every start-up would read them all. A
// TTL, or a discard policy that drops old values at a limit, is kept too,
// but logged at WARN and reported to Conflict: either lets the key of a
// meeting still going on vanish, and the meeting be announced again.
//
// The poll's writes go out as asynchronous publishes through js, at most
// pubwindow.Window unacknowledged: give it the context the events go
// through (publish.Publisher.JetStream), whose cap covers that window and
// whose acknowledgement timeout fails a write that gets no answer.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if err := ValidPrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "state")
	markerTTL := cfg.DuplicateWindow
	if markerTTL <= 0 {
		markerTTL = time.Hour
	}
	kv, bucket, err := openMarked(ctx, js, markedBucket{
		use: "state", name: cfg.Bucket, description: "meetwatch: the last committed snapshot, one key per meeting",
		replicas: cfg.Replicas, markerTTL: markerTTL,
		expiry:    "keys not written for that long expire, and meetings still going on are announced as started again",
		discarded: "the keys of meetings still going on may go, and those meetings be announced as started again",
	}, logger, cfg.Conflict)
	if err != nil {
		return nil, err
	}
	s := newStore(js, kv, cfg.Bucket, cfg.Prefix, cfg.Guard, logger)
	if bucket.AllowMsgTTL { // a bucket that refuses per-message TTLs keeps its markers
		s.markerTTL = markerTTL
	}
	return s, nil
}

// WithPrefix returns a store of the same bucket under another key prefix
// (see Config.Prefix), asking guard before every write, logging to logger
// and writing through js: what the runner of many accounts gives each
// account's watcher, the bucket opened once. js should be the context the
// account's events go through, as for Open, so that one window covers
// the writes of its polls; logger nil discards.
func (s *Store) WithPrefix(prefix string, js jetstream.JetStream, guard func() error, logger *slog.Logger) (*Store, error) {
	if err := ValidPrefix(prefix); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	bucket := strings.TrimPrefix(s.stream, "KV_")
	a := newStore(js, s.kv, bucket, prefix, guard, logger.With("component", "state"))
	a.markerTTL = s.markerTTL
	return a, nil
}

func newStore(js jetstream.JetStream, kv jetstream.KeyValue, bucket, prefix string, guard func() error, logger *slog.Logger) *Store {
	return &Store{kv: kv, js: js, subjects: "$KV." + bucket + "." + prefix, meta: prefix + metaKey, stream: "KV_" + bucket,
		guard: guard, logger: logger, seed: maphash.MakeSeed()}
}

// ValidPrefix reports what is wrong with a key prefix, if anything: it is
// empty, or one token of letters, digits, - and _ followed by a dot
// ("acme."), so that it can neither widen the subject filter a load reads
// with nor hold the keys of another prefix. "m." and "e." are refused: a
// store without a prefix would read their keys (m.meta) as its own.
func ValidPrefix(prefix string) error {
	tok, ok := strings.CutSuffix(prefix, ".")
	switch {
	case prefix == "":
		return nil
	case !ok || tok == "" || events.Token(tok) != tok:
		return fmt.Errorf("state key prefix %q: want one token of letters, digits, - and _, followed by a dot", prefix)
	case tok+"." == meetingPrefix || tok+"." == missingPrefix:
		return fmt.Errorf("state key prefix %q: the keys would read as a meeting's in a state without a prefix", prefix)
	}
	return nil
}

// markedBucket is a bucket of one value per key whose delete markers
// expire: the state and the view.
type markedBucket struct {
	use, name, description string
	replicas               int
	markerTTL              time.Duration
	// expiry and discarded say what a TTL, and a discard of old values at
	// a limit, cost: the warnings of settings kept.
	expiry, discarded string
}

// openMarked opens b, creating it when it is missing. An existing bucket
// keeps the settings an operator gave it: only per-message TTLs are added
// when it lacks them, since without them the markers of ended meetings
// would stay for good. A TTL, or a discard policy that drops old values at
// a limit, is kept too, but logged at WARN and reported to conflict:
// either lets the key of a meeting still going on vanish.
func openMarked(ctx context.Context, js jetstream.JetStream, b markedBucket, logger *slog.Logger, conflict func(string)) (jetstream.KeyValue, jetstream.StreamConfig, error) {
	kv, bucket, err := jsensure.Bucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:         b.name,
		Description:    b.description,
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       max(b.replicas, 1),
		LimitMarkerTTL: b.markerTTL,
	}, func(c *jetstream.StreamConfig) []string {
		if c.AllowMsgTTL {
			return nil
		}
		c.AllowMsgTTL = true
		return []string{"per-message TTLs"}
	}, logger)
	if err != nil {
		return nil, jetstream.StreamConfig{}, fmt.Errorf("opening %s bucket %s: %w", b.use, b.name, err)
	}
	var conflicts []string
	if bucket.MaxAge > 0 {
		conflicts = append(conflicts, fmt.Sprintf("%s bucket %s has a TTL of %s: %s", b.use, b.name, bucket.MaxAge, b.expiry))
	}
	if bucket.Discard == jetstream.DiscardOld && (bucket.MaxBytes > 0 || bucket.MaxMsgs > 0) {
		conflicts = append(conflicts, fmt.Sprintf("%s bucket %s discards old values at its limits (max bytes %d, max values %d): %s", b.use, b.name, bucket.MaxBytes, bucket.MaxMsgs, b.discarded))
	}
	for _, c := range conflicts {
		logger.Warn("the "+b.use+" bucket's settings let a meeting's key vanish; keeping them", "bucket", b.name, "conflict", c)
		if conflict != nil {
			conflict(c)
		}
	}
	return kv, bucket, nil
}
