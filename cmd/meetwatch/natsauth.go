package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/meetwatch/meetwatch/snapshot/redact"
)

// NATSAuth is how meetwatch proves who it is to a secured NATS server at
// MEETWATCH_NATS_URL, and how it checks that server's certificate.
//
// The daemon, `meetwatch tail` and any consumer share it: its env tags are
// the MEETWATCH_ variables without their prefix. The settings apply to `run`
// and `tail` only when MEETWATCH_NATS_URL is set. Without it, `run` starts its own embedded server, which listens on
// loopback without TLS or users, and `tail` reads from that server: a
// client asking it for TLS or signing with an nkey would fail to connect, so
// the settings are ignored there rather than checked.
//
// Each field's desc tag says what its variable means, for the help that
// lists the variables.
//
// The field names carry a NATS prefix because the daemon's configuration,
// which embeds this struct, already has a Password (the meeting API's): a
// promoted field of the same name would be hidden.
type NATSAuth struct {
	NATSCreds    string        `env:"NATS_CREDS" desc:"a .creds file (user JWT and nkey seed), for servers in operator (JWT) mode"`
	NATSNKey     string        `env:"NATS_NKEY" desc:"a file holding a user nkey seed (SU...)"`
	NATSUser     string        `env:"NATS_USER" desc:"a NATS user, with MEETWATCH_NATS_PASSWORD"`
	NATSPassword redact.Secret `env:"NATS_PASSWORD" desc:"the NATS user's password"`
	NATSToken    redact.Secret `env:"NATS_TOKEN" desc:"a NATS authorization token"`
	NATSCA       string        `env:"NATS_CA" desc:"PEM CA certificate(s) that the server's certificate must chain to: TLS"`
	NATSCert     string        `env:"NATS_CERT" desc:"a client certificate, for servers that verify clients (mutual TLS), with MEETWATCH_NATS_KEY"`
	NATSKey      string        `env:"NATS_KEY" desc:"the client certificate's key"`
}

// Validate checks the settings, so that a wrong path or a mismatched key
// stops meetwatch at once, instead of surfacing as a connection that keeps
// failing. Files are read and parsed here: a seed or a key that does not
// parse would otherwise fail only at the first handshake. Its errors are
// *configError, naming the variables.
func (a NATSAuth) Validate() error {
	var ways []string
	if a.NATSCreds != "" {
		ways = append(ways, "NATSCreds")
	}
	if a.NATSNKey != "" {
		ways = append(ways, "NATSNKey")
	}
	if a.NATSUser != "" {
		ways = append(ways, "NATSUser")
	}
	if !a.NATSToken.IsZero() {
		ways = append(ways, "NATSToken")
	}
	switch {
	case len(ways) > 1:
		return &configError{Var: strings.Join(varNames(ways), ", "), Msg: "more than one way to authenticate to NATS is set: keep at most one"}
	case !a.NATSPassword.IsZero() && a.NATSUser == "":
		return bad("NATSUser", "required with the password")
	case a.NATSCert != "" && a.NATSKey == "":
		return bad("NATSKey", "required with a client certificate: it needs its private key")
	case a.NATSCert == "" && a.NATSKey != "":
		return bad("NATSCert", "required with a private key: it needs its client certificate")
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

// Options returns the nats.Connect options for the settings; call Validate
// first for errors that name the setting. The password and the token leave their Secret only here, on
// their way into the connection.
func (a NATSAuth) Options() ([]nats.Option, error) {
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

// Set returns the names of the fields that are set.
func (a NATSAuth) Set() []string {
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
			names = append(names, f.field)
		}
	}
	return names
}
