package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/meetwatch/meetwatch/watcher"
)

// NATSAuth is how meetwatch proves who it is to a secured NATS server at
// MEETWATCH_NATS_URL, and how it checks that server's certificate.
//
// The settings apply to `run` and `tail` only when MEETWATCH_NATS_URL is
// set. Without it, `run` starts its own embedded server, which listens on
// loopback without TLS or users, and `tail` reads from that server: a
// client asking it for TLS or signing with an nkey would fail to connect, so
// the settings are ignored there rather than checked.
//
// The type is exported because config embeds it, and the env package skips
// an unexported embedded field without a word, which would leave every
// setting empty. The field names carry a NATS prefix because config already
// has a Password (the meeting API's): a promoted field of the same name would
// be hidden, and varName could not name its variable.
type NATSAuth struct {
	NATSCreds    string         `env:"NATS_CREDS"`
	NATSNKey     string         `env:"NATS_NKEY"`
	NATSUser     string         `env:"NATS_USER"`
	NATSPassword watcher.Secret `env:"NATS_PASSWORD"`
	NATSToken    watcher.Secret `env:"NATS_TOKEN"`
	NATSCA       string         `env:"NATS_CA"`
	NATSCert     string         `env:"NATS_CERT"`
	NATSKey      string         `env:"NATS_KEY"`
}

// validate checks the settings, so that a wrong path or a mismatched key
// stops meetwatch at once with exit code 2, instead of surfacing as a
// connection that keeps failing. Files are read and parsed here: a seed or a
// key that does not parse would otherwise fail only at the first handshake.
func (a NATSAuth) validate() error {
	var ways []string
	if a.NATSCreds != "" {
		ways = append(ways, varName("NATSCreds"))
	}
	if a.NATSNKey != "" {
		ways = append(ways, varName("NATSNKey"))
	}
	if a.NATSUser != "" {
		ways = append(ways, varName("NATSUser"))
	}
	if !a.NATSToken.IsZero() {
		ways = append(ways, varName("NATSToken"))
	}
	switch {
	case len(ways) > 1:
		return &configError{Var: strings.Join(ways, ", "), Msg: "more than one way to authenticate to NATS is set: keep at most one"}
	case !a.NATSPassword.IsZero() && a.NATSUser == "":
		return bad("NATSUser", "required with %s", varName("NATSPassword"))
	case a.NATSCert != "" && a.NATSKey == "":
		return bad("NATSKey", "required with %s: a client certificate needs its private key", varName("NATSCert"))
	case a.NATSCert == "" && a.NATSKey != "":
		return bad("NATSCert", "required with %s: a private key needs its client certificate", varName("NATSKey"))
	}

	if a.NATSCreds != "" {
		b, err := readFile("NATSCreds", a.NATSCreds)
		if err != nil {
			return err
		}
		if jwt, _ := nkeys.ParseDecoratedJWT(b); strings.Count(jwt, ".") != 2 {
			return bad("NATSCreds", "%s holds no user JWT: want a .creds file", a.NATSCreds)
		}
		if _, err := nkeys.ParseDecoratedUserNKey(b); err != nil {
			return bad("NATSCreds", "%s: %v", a.NATSCreds, err)
		}
	}
	if a.NATSNKey != "" {
		if _, err := readFile("NATSNKey", a.NATSNKey); err != nil {
			return err
		}
		if _, err := nats.NkeyOptionFromSeed(a.NATSNKey); err != nil {
			return bad("NATSNKey", "%s: %v", a.NATSNKey, err)
		}
	}
	if a.NATSCA != "" {
		b, err := readFile("NATSCA", a.NATSCA)
		if err != nil {
			return err
		}
		if !x509.NewCertPool().AppendCertsFromPEM(b) {
			return bad("NATSCA", "%s holds no PEM certificate", a.NATSCA)
		}
	}
	if a.NATSCert != "" {
		if _, err := readFile("NATSCert", a.NATSCert); err != nil {
			return err
		}
		if _, err := readFile("NATSKey", a.NATSKey); err != nil {
			return err
		}
		if _, err := tls.LoadX509KeyPair(a.NATSCert, a.NATSKey); err != nil {
			return bad("NATSCert", "%s with %s: %v", a.NATSCert, a.NATSKey, err)
		}
	}
	return nil
}

// readFile reads a file a setting names, reporting a failure against that
// setting's variable.
func readFile(field, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, bad(field, "%v", err)
	}
	return b, nil
}

// options returns the nats.Connect options for the settings; validate has
// checked them. The password and the token leave their Secret only here, on
// their way into the connection.
func (a NATSAuth) options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case a.NATSCreds != "":
		opts = append(opts, nats.UserCredentials(a.NATSCreds))
	case a.NATSNKey != "":
		o, err := nats.NkeyOptionFromSeed(a.NATSNKey)
		if err != nil {
			return nil, fmt.Errorf("reading nats nkey seed %s: %w", a.NATSNKey, err)
		}
		opts = append(opts, o)
	case a.NATSUser != "":
		opts = append(opts, nats.UserInfo(a.NATSUser, a.NATSPassword.Reveal()))
	case !a.NATSToken.IsZero():
		opts = append(opts, nats.Token(a.NATSToken.Reveal()))
	}
	if a.NATSCA != "" {
		opts = append(opts, nats.RootCAs(a.NATSCA))
	}
	if a.NATSCert != "" {
		opts = append(opts, nats.ClientCert(a.NATSCert, a.NATSKey))
	}
	return opts, nil
}

// set returns the variables of the settings that are set.
func (a NATSAuth) set() []string {
	var names []string
	for _, f := range []struct {
		field string
		on    bool
	}{
		{"NATSCreds", a.NATSCreds != ""}, {"NATSNKey", a.NATSNKey != ""}, {"NATSUser", a.NATSUser != ""},
		{"NATSPassword", !a.NATSPassword.IsZero()}, {"NATSToken", !a.NATSToken.IsZero()},
		{"NATSCA", a.NATSCA != ""}, {"NATSCert", a.NATSCert != ""}, {"NATSKey", a.NATSKey != ""},
	} {
		if f.on {
			names = append(names, varName(f.field))
		}
	}
	return names
}

// natsSecurity returns the security options for connecting to
// MEETWATCH_NATS_URL, or none when it is empty: then the server is the
// embedded one, which takes no credentials and speaks no TLS (see
// NATSAuth). Settings left over in that case are named in a warning, since
// they suggest MEETWATCH_NATS_URL was meant to be set.
func natsSecurity(cfg config, logger *slog.Logger) ([]nats.Option, error) {
	if cfg.NATSURL == "" {
		if names := cfg.set(); len(names) > 0 {
			logger.Warn("nats security settings ignored: they apply only with "+varName("NATSURL"), "vars", strings.Join(names, ","))
		}
		return nil, nil
	}
	return cfg.NATSAuth.options()
}
