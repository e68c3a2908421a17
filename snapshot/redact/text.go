package redact

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
)

// URL-shaped text, found without parsing: a URL that does not parse (a
// password with a stray %) is the one most likely to be echoed whole in an
// error, so redaction must not depend on it parsing. A URL ends at
// whitespace, a quote or an angle bracket, as Go's errors quote them.
var (
	urlPattern = regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://[^\s"'<>` + "`" + `]+`)
	// queryParam is one key=value of a query, with what precedes it.
	queryParam = regexp.MustCompile(`([?&;])([^=&;#]+)=([^&;#]*)`)
)

// secretKeys are the parts of a query key that mark its value as a
// credential: access_token, key, sign, signature, password, sessionId...
var secretKeys = []string{"token", "key", "secret", "sign", "sig", "pass", "pwd", "auth", "cred", "session", "ticket"}

// URL returns raw, a URL, with its user information (user name, password,
// or a NATS token in the user part) and the values of its query's
// credentials replaced by Placeholder, whether or not it parses. The
// scheme, host, path and other query values stay, so that the line still
// says where meetwatch went. A credential carried in the path (a Slack
// webhook) looks like any path: callers that know of one print less.
func URL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	// The user information ends at the last @ before the query: a
	// password with an unescaped / still goes whole, at the cost of a path
	// that holds an @ losing its host in the printed form.
	q := strings.IndexAny(rest, "?#")
	if q < 0 {
		q = len(rest)
	}
	before, query := rest[:q], rest[q:]
	if at := strings.LastIndexByte(before, '@'); at >= 0 {
		before = Placeholder + before[at:]
	}
	return scheme + "://" + before + queryParam.ReplaceAllStringFunc(query, redactParam)
}

// URLs applies URL to each of a comma-separated list of URLs, as
// MEETWATCH_NATS_URL holds them.
func URLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		parts[i] = URL(p)
	}
	return strings.Join(parts, ",")
}

func redactParam(param string) string {
	m := queryParam.FindStringSubmatch(param)
	key := strings.ToLower(m[2])
	for _, s := range secretKeys {
		if strings.Contains(key, s) {
			return m[1] + m[2] + "=" + Placeholder
		}
	}
	return param
}

// Text returns s with every URL in it passed through URL: what an error or
// a log message says of a connection, a request or a webhook, printed
// without the credentials any of them carried.
func Text(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return urlPattern.ReplaceAllStringFunc(s, URL)
}

// Handler returns a slog.Handler that passes the message and every
// attribute of each record through Text before h sees it: whatever a line
// carries (an error that quotes a URL, a URL given as an attribute), no
// credential of a URL reaches the log. Values other than strings, errors
// and fmt.Stringers are left as they are.
func Handler(h slog.Handler) slog.Handler { return textHandler{h} }

type textHandler struct{ h slog.Handler }

func (t textHandler) Enabled(ctx context.Context, l slog.Level) bool { return t.h.Enabled(ctx, l) }

func (t textHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, Text(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(textAttr(a))
		return true
	})
	return t.h.Handle(ctx, out)
}

func (t textHandler) WithAttrs(as []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(as))
	for i, a := range as {
		clean[i] = textAttr(a)
	}
	return textHandler{t.h.WithAttrs(clean)}
}

func (t textHandler) WithGroup(name string) slog.Handler { return textHandler{t.h.WithGroup(name)} }

func textAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, Text(v.String()))
	case slog.KindGroup:
		g := v.Group()
		clean := make([]any, len(g))
		for i, ga := range g {
			clean[i] = textAttr(ga)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case Secret:
			return slog.Attr{Key: a.Key, Value: v}
		case error:
			if s := x.Error(); strings.Contains(s, "://") {
				return slog.String(a.Key, Text(s))
			}
		case fmt.Stringer:
			if s := x.String(); strings.Contains(s, "://") {
				return slog.String(a.Key, Text(s))
			}
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
