package jsensure

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
)

func TestCovers(t *testing.T) {
	tests := []struct {
		have, want string
		covers     bool
	}{
		{"meetings.>", "meetings.>", true},
		{">", "meetings.>", true},
		{"*.>", "meetings.>", true},
		{"a.>", "a.b.>", true},
		{"a.*.>", "a.b.>", true},
		{"a.*", "a.b", true},
		{"a.b", "a.b", true},
		{"meetings.*", "meetings.>", false},
		{"meetings.started.>", "meetings.>", false},
		{"meetings", "meetings.>", false},
		{"meetings.>", "meetings", false},
		{"other.>", "meetings.>", false},
		{"a.b", "a.*", false},
		{"a.b", "a.>", false},
		{"a.*.c", "a.b.>", false},
		{"a.b.c", "a.b", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.covers, Covers(tt.have, tt.want), "does %s cover %s", tt.have, tt.want)
	}
}

func newJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t)))
	require.NoError(t, err)
	return js
}

// addSubject is a Mend that adds subject unless the stream has it.
func addSubject(subject string) Mend {
	return func(cfg *jetstream.StreamConfig) []string {
		for _, s := range cfg.Subjects {
			if Covers(s, subject) {
				return nil
			}
		}
		cfg.Subjects = append(cfg.Subjects, subject)
		return []string{"subjects " + subject}
	}
}

func TestStreamCreatesWhatIsMissing(t *testing.T) {
	js := newJS(t)
	var logs bytes.Buffer
	want := jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Duplicates: time.Hour, MaxAge: 2 * time.Hour, Description: "ours"}
	got, err := Stream(t.Context(), js, want, addSubject("s.>"), slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	assert.Equal(t, []string{"s.>"}, got.Subjects)
	assert.Equal(t, time.Hour, got.Duplicates)
	assert.Equal(t, 2*time.Hour, got.MaxAge)
	assert.Equal(t, "ours", got.Description)
	assert.Contains(t, logs.String(), `msg="created stream" stream=S`)
	assert.NotContains(t, logs.String(), "added")
}

// An existing stream keeps every setting but what the mend adds, and the
// addition is logged.
func TestStreamKeepsAnExistingOnesSettings(t *testing.T) {
	js := newJS(t)
	_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: "S", Subjects: []string{"other.>"}, Description: "the operator's", MaxBytes: 1 << 20,
		Discard: jetstream.DiscardNew, MaxAge: 1000 * time.Hour, Duplicates: 5 * time.Minute, Storage: jetstream.MemoryStorage,
	})
	require.NoError(t, err)
	before, err := js.Stream(t.Context(), "S")
	require.NoError(t, err)

	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	want := jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Duplicates: time.Hour, MaxAge: time.Hour, Storage: jetstream.FileStorage}
	got, err := Stream(t.Context(), js, want, addSubject("s.>"), logger)
	require.NoError(t, err)
	assert.Equal(t, []string{"other.>", "s.>"}, got.Subjects)
	assert.Contains(t, logs.String(), `msg="added what meetwatch needs to an existing stream; its other settings are kept" stream=S added="[subjects s.>]"`)

	after, err := js.Stream(t.Context(), "S")
	require.NoError(t, err)
	wantCfg := before.CachedInfo().Config
	wantCfg.Subjects = []string{"other.>", "s.>"}
	assert.Equal(t, wantCfg, after.CachedInfo().Config, "nothing but the subjects changed")

	// Once it has them, the stream is not written again.
	logs.Reset()
	_, err = Stream(t.Context(), js, want, addSubject("s.>"), logger)
	require.NoError(t, err)
	assert.Empty(t, logs.String())
	again, err := js.Stream(t.Context(), "S")
	require.NoError(t, err)
	assert.Equal(t, after.CachedInfo().Created, again.CachedInfo().Created)
	assert.Equal(t, after.CachedInfo().Config, again.CachedInfo().Config)
}

// A stream made by another replica between the read and the create is
// read again, and its settings are the ones kept.
func TestStreamMadeMeanwhileIsKept(t *testing.T) {
	js := newJS(t)
	theirs := jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Duplicates: 2 * time.Hour}
	create := func(ctx context.Context) error {
		if _, err := js.CreateStream(ctx, theirs); err != nil {
			return err
		}
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Duplicates: time.Hour})
		return err
	}
	got, err := ensure(t.Context(), js, "stream", "S", "S", create, addSubject("s.>"), nil)
	require.NoError(t, err)
	assert.Equal(t, 2*time.Hour, got.Duplicates)
}

func TestBucketKeepsAnExistingOnesSettings(t *testing.T) {
	js := newJS(t)
	_, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "b", Description: "the operator's", MaxBytes: 1 << 20, History: 3})
	require.NoError(t, err)
	mend := func(cfg *jetstream.StreamConfig) []string {
		if cfg.AllowMsgTTL {
			return nil
		}
		cfg.AllowMsgTTL = true
		return []string{"per-message TTLs"}
	}
	kv, got, err := Bucket(t.Context(), js, jetstream.KeyValueConfig{Bucket: "b", Description: "ours", History: 1, LimitMarkerTTL: time.Hour}, mend, nil)
	require.NoError(t, err)
	assert.True(t, got.AllowMsgTTL, "added")
	assert.Equal(t, "the operator's", got.Description)
	assert.Equal(t, int64(1<<20), got.MaxBytes)
	assert.Equal(t, int64(3), got.MaxMsgsPerSubject)
	assert.Zero(t, got.SubjectDeleteMarkerTTL, "only what the mend added")
	st, err := kv.Status(t.Context())
	require.NoError(t, err)
	assert.Equal(t, int64(3), st.History(), "the bucket returned is the one stored")
	assert.Equal(t, got, st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config)

	_, err = kv.Put(t.Context(), "k", []byte("v"))
	require.NoError(t, err)
	require.NoError(t, kv.Purge(t.Context(), "k", jetstream.PurgeTTL(time.Hour)), "a purge with a TTL, which the bucket refused before")

	_, created, err := Bucket(t.Context(), js, jetstream.KeyValueConfig{Bucket: "new", History: 1, LimitMarkerTTL: time.Hour}, mend, nil)
	require.NoError(t, err)
	assert.Equal(t, time.Hour, created.SubjectDeleteMarkerTTL, "a missing bucket is made as asked")
}
