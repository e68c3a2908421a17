package ha_test

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/ha"
)

// An existing lease bucket keeps the settings an operator gave it, its TTL
// among them: the lease takes the bucket's TTL, as every replica does,
// and says so. Nothing is added to it: the lease needs only a TTL.
func TestOpenLeaseKeepsAnExistingBucketsSettings(t *testing.T) {
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t)))
	require.NoError(t, err)
	_, err = js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{
		Bucket: "meetwatch-lease", Description: "sized by the operator", MaxBytes: 1 << 20, History: 1, TTL: 2 * time.Second,
	})
	require.NoError(t, err)
	before, err := js.Stream(t.Context(), "KV_meetwatch-lease")
	require.NoError(t, err)

	var logs bytes.Buffer
	var conflicts []string
	lease, err := ha.OpenLease(t.Context(), js, ha.LeaseConfig{
		Bucket: "meetwatch-lease", TTL: time.Second, ID: "a", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Conflict: func(msg string) { conflicts = append(conflicts, msg) },
	})
	require.NoError(t, err)
	assert.Equal(t, 2*time.Second, lease.TTL(), "the bucket's TTL")
	assert.Equal(t, []string{"lease bucket meetwatch-lease has a TTL of 2s, not the 1s configured: this replica leases with the bucket's, as every replica must"}, conflicts)
	assert.Contains(t, logs.String(), `level=WARN msg="the lease bucket's TTL differs from the configured lease TTL; leasing with the bucket's, as the other replicas do" component=lease replica=a bucket=meetwatch-lease ttl=2s configured_ttl=1s`)
	assert.NotContains(t, logs.String(), "added what meetwatch needs")

	after, err := js.Stream(t.Context(), "KV_meetwatch-lease")
	require.NoError(t, err)
	assert.Equal(t, ownSettings(before.CachedInfo().Config), ownSettings(after.CachedInfo().Config), "left as it is")

	// The lease works on it.
	ctx, cancel := context.WithCancel(t.Context())
	led := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- lease.Run(ctx, func(lctx context.Context) {
			close(led)
			<-lctx.Done()
		})
	}()
	select {
	case <-led:
	case <-time.After(5 * time.Second):
		assert.Fail(t, "the lease was never taken")
	}
	cancel()
	require.NoError(t, <-done)
}

// A lease bucket without a TTL would keep a dead leader's lease for good:
// meetwatch does not lead on it, and says why.
func TestOpenLeaseRefusesABucketWithoutTTL(t *testing.T) {
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t)))
	require.NoError(t, err)
	_, err = js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "meetwatch-lease", History: 1})
	require.NoError(t, err)
	_, err = ha.OpenLease(t.Context(), js, ha.LeaseConfig{Bucket: "meetwatch-lease", TTL: time.Second, ID: "a"})
	require.ErrorContains(t, err, "lease bucket meetwatch-lease has a TTL of 0s: a lease needs one of at least 1s")
	s, err := js.Stream(t.Context(), "KV_meetwatch-lease")
	require.NoError(t, err)
	assert.Zero(t, s.CachedInfo().Config.MaxAge, "left as it is")
}

// ownSettings returns cfg without the metadata the server keeps itself
// (its version, and the API level the settings require).
func ownSettings(cfg jetstream.StreamConfig) jetstream.StreamConfig {
	cfg.Metadata = maps.Clone(cfg.Metadata)
	maps.DeleteFunc(cfg.Metadata, func(k, _ string) bool { return strings.HasPrefix(k, "_nats.") })
	return cfg
}
