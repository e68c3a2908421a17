package redact_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot/redact"
)

const secretValue = "t0ken-value-123"

func TestSecretNeverPrints(t *testing.T) {
	s := redact.NewSecret(secretValue)
	type holder struct {
		Token redact.Secret
		Ptr   *redact.Secret
	}
	h := holder{Token: s, Ptr: &s}
	tests := []struct {
		name  string
		print func() string
	}{
		{name: "String", print: s.String},
		{name: "GoString", print: s.GoString},
		{name: "%v", print: func() string { return fmt.Sprintf("%v", s) }},
		{name: "%+v", print: func() string { return fmt.Sprintf("%+v", s) }},
		{name: "%s", print: func() string { return fmt.Sprintf("%s", s) }},
		{name: "%q", print: func() string { return fmt.Sprintf("%q", s) }},
		{name: "%x", print: func() string { return fmt.Sprintf("%x", s) }},
		{name: "%d", print: func() string { return fmt.Sprintf("%d", s) }},
		{name: "pointer", print: func() string { return fmt.Sprintf("%v", &s) }},
		{name: "in a struct, %+v", print: func() string { return fmt.Sprintf("%+v", h) }},
		{name: "in a struct, %#v", print: func() string { return fmt.Sprintf("%#v", h) }},
		{name: "in an error", print: func() string { return fmt.Errorf("login with %v: %w", s, errors.New("denied")).Error() }},
		{name: "JSON", print: func() string {
			b, err := json.Marshal(h)
			require.NoError(t, err)
			return string(b)
		}},
		{name: "slog text", print: func() string {
			var b bytes.Buffer
			slog.New(slog.NewTextHandler(&b, nil)).Info("login", "token", s, "holder", h)
			return b.String()
		}},
		{name: "slog JSON", print: func() string {
			var b bytes.Buffer
			slog.New(slog.NewJSONHandler(&b, nil)).Info("login", "token", s)
			return b.String()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.print()
			assert.NotContains(t, got, secretValue)
			assert.Contains(t, got, redact.Placeholder)
		})
	}
}

func TestSecretValue(t *testing.T) {
	s := redact.NewSecret(secretValue)
	assert.Equal(t, secretValue, s.Reveal())
	assert.False(t, s.IsZero())
	assert.True(t, redact.Secret{}.IsZero())
	assert.True(t, redact.NewSecret("").IsZero())

	var got redact.Secret
	require.NoError(t, got.UnmarshalText([]byte(secretValue)))
	assert.Equal(t, secretValue, got.Reveal(), "configuration sets the value")
	assert.Equal(t, s, got)
}

func ExampleSecret() {
	token := redact.NewSecret("t0ken")
	fmt.Printf("token %v, %s\n", token, fmt.Errorf("login: %v rejected", token))
	// Output: token [redacted], login: [redacted] rejected
}
