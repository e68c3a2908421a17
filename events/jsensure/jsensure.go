// Package jsensure makes sure that a JetStream stream or key-value bucket
// meetwatch works with exists, without overwriting the settings of one
// that does.
//
// An operator may have sized an existing stream, given it a discard
// policy, a longer retention or a placement, and a replica started with
// other settings must not reconfigure it for the others. So a missing
// stream is created with meetwatch's configuration, and an existing one is
// read and left as it is, but for what meetwatch cannot work without: that
// is added, with an update of the configuration as read, and logged.
package jsensure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Mend adds to cfg, the configuration of an existing stream, what
// meetwatch cannot work without, and returns what it added, a short
// description each, for the log. It changes nothing else: the stream is
// updated with cfg, and only when something was added.
type Mend func(cfg *jetstream.StreamConfig) (added []string)

// Stream makes sure the stream want.Name exists, created with want when it
// is missing and mended by mend (which may be nil) when it is not, and
// returns its configuration.
func Stream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, mend Mend, logger *slog.Logger) (jetstream.StreamConfig, error) {
	create := func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, want)
		return err
	}
	return ensure(ctx, js, "stream", want.Name, want.Name, create, mend, logger)
}

// Bucket makes sure the key-value bucket want.Bucket exists, created with
// want when it is missing and mended by mend (which may be nil) when it is
// not, and returns it with the configuration of its stream.
func Bucket(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig, mend Mend, logger *slog.Logger) (jetstream.KeyValue, jetstream.StreamConfig, error) {
	create := func(ctx context.Context) error {
		_, err := js.CreateKeyValue(ctx, want)
		return err
	}
	cfg, err := ensure(ctx, js, "bucket", want.Bucket, "KV_"+want.Bucket, create, mend, logger)
	if err != nil {
		return nil, jetstream.StreamConfig{}, err
	}
	kv, err := js.KeyValue(ctx, want.Bucket)
	if err != nil {
		return nil, jetstream.StreamConfig{}, fmt.Errorf("opening bucket %s: %w", want.Bucket, err)
	}
	return kv, cfg, nil
}

// ensure reads the stream named stream (the kind called name, for errors
// and logs), creates it when it is missing, and mends it when it is not.
//
// A stream is read before it is made rather than made and its error read:
// a create with other settings than the stream's fails, and then reading
// it is needed anyway. Another replica may make it between the read and
// the create, with settings of its own: then it is read again, and those
// settings are the ones kept.
func ensure(ctx context.Context, js jetstream.JetStream, kind, name, stream string, create func(context.Context) error, mend Mend, logger *slog.Logger) (jetstream.StreamConfig, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	for attempt := 1; ; attempt++ {
		s, err := js.Stream(ctx, stream)
		switch {
		case err == nil:
			return mended(ctx, js, kind, name, s.CachedInfo().Config, mend, logger)
		case !errors.Is(err, jetstream.ErrStreamNotFound) || attempt == 3:
			return jetstream.StreamConfig{}, fmt.Errorf("reading %s %s: %w", kind, name, err)
		}
		err = create(ctx)
		switch {
		case err == nil:
			logger.Info("created "+kind, kind, name)
		case !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
			return jetstream.StreamConfig{}, fmt.Errorf("creating %s %s: %w", kind, name, err)
		}
	}
}

// mended applies mend to cfg, the configuration of an existing stream,
// and updates the stream when mend added anything.
func mended(ctx context.Context, js jetstream.JetStream, kind, name string, cfg jetstream.StreamConfig, mend Mend, logger *slog.Logger) (jetstream.StreamConfig, error) {
	if mend == nil {
		return cfg, nil
	}
	added := mend(&cfg)
	if len(added) == 0 {
		return cfg, nil
	}
	s, err := js.UpdateStream(ctx, cfg)
	if err != nil {
		return jetstream.StreamConfig{}, fmt.Errorf("adding %s to %s %s: %w", strings.Join(added, ", "), kind, name, err)
	}
	logger.Info("added what meetwatch needs to an existing "+kind+"; its other settings are kept", kind, name, "added", added)
	return s.CachedInfo().Config, nil
}

// Covers reports whether the subject filter have takes in every subject
// that want does: whether a stream with the subject have stores what is
// published to want.
func Covers(have, want string) bool {
	h, w := strings.Split(have, "."), strings.Split(want, ".")
	for i, t := range h {
		switch {
		case t == ">":
			return len(w) > i
		case i >= len(w), w[i] == ">":
			return false
		case t == "*":
		case w[i] == "*", w[i] != t:
			return false
		}
	}
	return len(h) == len(w)
}
