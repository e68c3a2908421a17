package audit

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLineOf pins down "one line of JSON": valid JSON with no '\n' or '\r'
// byte is its own line; every other body is an audit_unreadable line.
func TestLineOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want string // "" for the body itself
	}{
		{name: "an event", body: `{"id":"a","type":"t"}`},
		{name: "escaped newlines in a string", body: `{"text":"one\ntwo\r\n"}`},
		{name: "spaces and tabs between tokens", body: " {\"a\":\t1} "},
		{name: "a JSON string", body: `"x"`},
		{name: "pretty-printed", body: "{\n  \"a\": 1\n}",
			want: `{"audit_unreadable":{"seq":7,"subject":"meetings.x&y","body_base64":"ewogICJhIjogMQp9"}}`},
		{name: "a trailing CRLF", body: "{\"a\":1}\r\n",
			want: `{"audit_unreadable":{"seq":7,"subject":"meetings.x&y","body_base64":"eyJhIjoxfQ0K"}}`},
		{name: "a lone CR between tokens", body: "{\"a\":\r1}",
			want: `{"audit_unreadable":{"seq":7,"subject":"meetings.x&y","body_base64":"eyJhIjoNMX0="}}`},
		{name: "not JSON", body: "free text",
			want: `{"audit_unreadable":{"seq":7,"subject":"meetings.x&y","body_base64":"ZnJlZSB0ZXh0"}}`},
		{name: "empty", body: "",
			want: `{"audit_unreadable":{"seq":7,"subject":"meetings.x&y","body_base64":""}}`},
		{name: "two JSON values", body: `{"a":1}{"b":2}`,
			want: `{"audit_unreadable":{"seq":7,"subject":"meetings.x&y","body_base64":"eyJhIjoxfXsiYiI6Mn0="}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, readable, err := lineOf(7, "meetings.x&y", []byte(tt.body))
			require.NoError(t, err)
			if tt.want == "" {
				assert.True(t, readable)
				assert.Equal(t, tt.body, string(got))
				return
			}
			assert.False(t, readable)
			assert.Equal(t, tt.want, string(got))
			assert.Equal(t, "audit_unreadable, stream sequence 7", describe(got))
		})
	}
}
