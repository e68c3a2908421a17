package redact

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
)

// Placeholder is what every printed form of a Secret shows instead of its
// value, so that a log line or an error that carries one by mistake still
// reads sensibly and leaks nothing.
const Placeholder = "[redacted]"

// Secret holds a credential, such as the API access token. Every way of
// printing it (fmt, %#v, JSON, slog) shows Placeholder, so a secret that
// reaches a log line or an error by mistake still does not leak. Only
// Reveal returns the value, and only the code that sends it calls Reveal.
type Secret struct{ v string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{v: s} }

// Reveal returns the secret's value, to put it on the wire.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == "" }

// String implements fmt.Stringer.
func (s Secret) String() string { return Placeholder }

// Format implements fmt.Formatter, so that every verb, %d and %x
// included, prints Placeholder.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, Placeholder) }

// GoString implements fmt.GoStringer, for %#v.
func (s Secret) GoString() string { return Placeholder }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(Placeholder) }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Placeholder) }

// UnmarshalText reads the secret from configuration.
func (s *Secret) UnmarshalText(b []byte) error {
	s.v = string(b)
	return nil
}
