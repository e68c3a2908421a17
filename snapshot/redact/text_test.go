package redact_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/meetwatch/meetwatch/snapshot/redact"
)

func TestURL(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"user and password", "nats://meetwatch:hunter2@nats.internal:4222", "nats://[redacted]@nats.internal:4222"},
		{"a password that does not parse", "nats://meetwatch:hunter2%zz@nats.internal:4222", "nats://[redacted]@nats.internal:4222"},
		{"a token as the user", "tls://s3cr3t@127.0.0.1:4222", "tls://[redacted]@127.0.0.1:4222"},
		{"an unescaped slash in the password", "nats://u:pa/ss@host:4222", "nats://[redacted]@host:4222"},
		{"https with userinfo and a path", "https://admin:pw@api.example/v1/x?offset=0", "https://[redacted]@api.example/v1/x?offset=0"},
		{"a key in the query", "https://qyapi.example/cgi-bin/webhook/send?key=abc-123", "https://qyapi.example/cgi-bin/webhook/send?key=[redacted]"},
		{"a token among other values", "https://oapi.example/robot/send?x=1&access_token=tok&timestamp=5&sign=s%2F1", "https://oapi.example/robot/send?x=1&access_token=[redacted]&timestamp=5&sign=[redacted]"},
		{"an @ in the query stays", "https://h.example/p?email=a@b.example", "https://h.example/p?email=a@b.example"},
		{"nothing to hide", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"not a URL", "127.0.0.1:4222", "127.0.0.1:4222"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, redact.URL(tt.in))
		})
	}
	assert.Equal(t, "nats://[redacted]@a:4222, nats://b:4222", redact.URLs("nats://u:p@a:4222, nats://b:4222"))
}

func TestText(t *testing.T) {
	_, err := url.Parse("nats://meetwatch:hunter2%zz@nats.internal:4222")
	got := redact.Text(fmt.Sprintf("connecting: %v; also see https://u:pw@x.example/a?token=t1 (and wss://y.example)", err))
	assert.NotContains(t, got, "hunter2")
	assert.NotContains(t, got, "pw@")
	assert.NotContains(t, got, "t1")
	assert.Contains(t, got, "nats.internal:4222")
	assert.Contains(t, got, "wss://y.example")
	assert.Equal(t, "no url here", redact.Text("no url here"))
}

type stringer string

func (s stringer) String() string { return string(s) }

func TestHandler(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			var h slog.Handler = slog.NewTextHandler(&buf, nil)
			if format == "json" {
				h = slog.NewJSONHandler(&buf, nil)
			}
			log := slog.New(redact.Handler(h)).With("server", "nats://u:with-attrs@h:1")
			log.WithGroup("g").Info("dialing nats://u:in-message@h:1",
				"err", errors.New(`parse "nats://u:in-error%zz@h:1": invalid URL escape`),
				"url", "https://h.example/hook?key=in-query",
				"peer", stringer("wss://tok-in-stringer@h:1"),
				slog.Group("inner", "u", "nats://u:in-group@h:1"),
				"secret", redact.NewSecret("in-secret"),
				"count", 3)
			out := buf.String()
			for _, leak := range []string{"with-attrs", "in-message", "in-error", "in-query", "tok-in-stringer", "in-group", "in-secret"} {
				assert.NotContains(t, out, leak)
			}
			assert.Contains(t, out, "h.example/hook")
			assert.Contains(t, out, "3")
		})
	}
}
