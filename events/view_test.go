package events_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

// A view entry holds what an event of the meeting would: its record with
// the secrets removed, when it started in the API's zone, its incarnation
// and account; and its key keeps accounts apart.
func TestViewValue(t *testing.T) {
	policy, err := redact.Parse("")
	require.NoError(t, err)
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	require.NoError(t, err)
	m, err := snapshot.ParseMeeting([]byte(`{"confUUID":"u/1","subject":"Review","startTime":"2026-12-07 17:00","chairJoinUri":"https://x/secret"}`))
	require.NoError(t, err)
	tests := []struct {
		name    string
		b       events.Builder
		inc     int
		want    string
		wantKey string
	}{
		{name: "one account", b: events.Builder{Redact: policy}, inc: 0,
			want:    `{"conference":{"confUUID":"u/1","subject":"Review","startTime":"2026-12-07 17:00"},"startedAt":"2026-12-07T17:00:00Z","incarnation":1}`,
			wantKey: events.Token("u/1")},
		{name: "an account, in its zone, again", b: events.Builder{Redact: policy, Account: "acme", Zone: shanghai}, inc: 2,
			want:    `{"conference":{"confUUID":"u/1","subject":"Review","startTime":"2026-12-07 17:00"},"startedAt":"2026-12-07T09:00:00Z","incarnation":2,"account":"acme"}`,
			wantKey: "acme." + events.Token("u/1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.b.ViewValue(m, tt.inc)
			require.NoError(t, err)
			assert.JSONEq(t, tt.want, string(got))
			assert.Equal(t, tt.wantKey, events.ViewKey(tt.b.Account, m.UUID))
			again, err := tt.b.ViewValue(m, tt.inc)
			require.NoError(t, err)
			assert.Equal(t, got, again, "the same bytes for the same record")
		})
	}
}
