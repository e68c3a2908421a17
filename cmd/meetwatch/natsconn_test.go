package main

// These tests run meetwatch against real nats-servers that demand what a
// production one does: TLS, client certificates, a user held to the
// permissions docs/security.md documents, a token, an nkey. The certificates and
// keys are made at test time, so that no key is ever committed.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot/redact"
)

// pki is a throwaway certificate authority with a server certificate for
// 127.0.0.1 and a client certificate, as PEM files.
type pki struct {
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// newPKI writes a fresh pki into a temporary directory.
func newPKI(tb testing.TB) pki {
	tb.Helper()
	dir := tb.TempDir()
	now := time.Now()
	caKey := newKey(tb)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "meetwatch test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(tb, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(tb, err)
	p := pki{CA: filepath.Join(dir, "ca.pem")}
	writePEM(tb, p.CA, "CERTIFICATE", caDER)

	issue := func(name string, serial int64, usage x509.ExtKeyUsage, ips []net.IP) (certFile, keyFile string) {
		key := newKey(tb)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "meetwatch test " + name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		require.NoError(tb, err)
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(tb, err)
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(tb, certFile, "CERTIFICATE", der)
		writePEM(tb, keyFile, "PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	p.ServerCert, p.ServerKey = issue("server", 2, x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	p.ClientCert, p.ClientKey = issue("client", 3, x509.ExtKeyUsageClientAuth, nil)
	return p
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	return k
}

func writePEM(tb testing.TB, path, typ string, der []byte) {
	tb.Helper()
	require.NoError(tb, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

// writeFile writes content to a new file in dir and returns its path.
func writeFile(tb testing.TB, dir, name string, content []byte) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	require.NoError(tb, os.WriteFile(path, content, 0o600))
	return path
}

// newUserNKey returns a fresh user nkey's public key and its seed.
func newUserNKey(tb testing.TB) (string, []byte) {
	tb.Helper()
	kp, err := nkeys.CreateUser()
	require.NoError(tb, err)
	pub, err := kp.PublicKey()
	require.NoError(tb, err)
	seed, err := kp.Seed()
	require.NoError(tb, err)
	return pub, seed
}

// newCreds returns a .creds file's content: a user JWT signed by a fresh
// account, and the user's seed.
func newCreds(tb testing.TB) []byte {
	tb.Helper()
	account, err := nkeys.CreateAccount()
	require.NoError(tb, err)
	pub, seed := newUserNKey(tb)
	token, err := jwt.NewUserClaims(pub).Encode(account)
	require.NoError(tb, err)
	creds, err := jwt.FormatUserConfig(token, seed)
	require.NoError(tb, err)
	return creds
}

// startNATS runs an in-process JetStream server on a free loopback port,
// configured further by configure, and shuts it down when the test ends.
func startNATS(tb testing.TB, configure func(*server.Options)) *server.Server {
	tb.Helper()
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  tb.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}
	configure(opts)
	s, err := server.NewServer(opts)
	require.NoError(tb, err, "configuring nats-server")
	go s.Start()
	require.True(tb, s.ReadyForConnections(10*time.Second), "nats-server did not start")
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// startTLSNATS runs a server that speaks only TLS with p's server
// certificate; with verify, it also demands a client certificate signed by
// p's CA.
func startTLSNATS(tb testing.TB, p pki, verify bool) *server.Server {
	tb.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.ServerCert, KeyFile: p.ServerKey, CaFile: p.CA, Verify: verify})
	require.NoError(tb, err)
	return startNATS(tb, func(o *server.Options) {
		o.TLSConfig = tc
		o.TLSVerify = verify
		o.TLSTimeout = 10 // seconds: the default 2 is tight for a loaded test machine
	})
}

// The users of a permissioned server.
const (
	adminUser     = "admin"
	adminPassword = "admin-pw-2c1f"
	mwUser        = "meetwatch"
	mwPassword    = "Nats-pw-8e41a7d2"
)

// startPermissionedNATS runs a server with the user meetwatch held to
// perms, an admin allowed everything for the test's own reads, and the
// other users given.
func startPermissionedNATS(tb testing.TB, perms *server.Permissions, others ...*server.User) *server.Server {
	tb.Helper()
	return startNATS(tb, func(o *server.Options) {
		o.Users = append([]*server.User{
			{Username: adminUser, Password: adminPassword},
			{Username: mwUser, Password: mwPassword, Permissions: perms},
		}, others...)
	})
}

// readerUser is a NATS user that may publish only to publish (requests
// to the JetStream API, acknowledgements) and take replies on _INBOX.>:
// what docs/security.md lists for the commands that only read.
func readerUser(name, password string, publish ...string) *server.User {
	return &server.User{Username: name, Password: password, Permissions: &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: publish},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}}
}

// readmePermissions returns the permissions docs/security.md documents for
// the meetwatch user, parsed by nats-server itself, so that the tests prove the
// documented list rather than a copy of it.
func readmePermissions(tb testing.TB) *server.Permissions {
	tb.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "security.md"))
	require.NoError(tb, err)
	_, section, ok := strings.Cut(string(doc), "\n## NATS security\n")
	require.True(tb, ok, "docs/security.md has no NATS security section")
	section, _, _ = strings.Cut(section, "\n## ")
	_, snippet, ok := strings.Cut(section, "```text\n")
	require.True(tb, ok, "the NATS security section has no text block")
	snippet, _, ok = strings.Cut(snippet, "```")
	require.True(tb, ok, "the text block is not closed")
	opts, err := server.ProcessConfigFile(writeFile(tb, tb.TempDir(), "nats.conf", []byte(snippet)))
	require.NoError(tb, err, "the documented server configuration")
	for _, u := range opts.Users {
		if u.Username == mwUser {
			require.NotNil(tb, u.Permissions, "the documented meetwatch user has no permissions")
			return u.Permissions
		}
	}
	require.FailNow(tb, "the documented configuration has no meetwatch user")
	return nil
}

// connectNATS connects with opts and closes the connection when the test
// ends.
func connectNATS(tb testing.TB, url string, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name(tb.Name()), nats.Timeout(10 * time.Second)}, opts...)...)
	require.NoError(tb, err, "connecting to %s", url)
	tb.Cleanup(nc.Close)
	return nc
}

// authFiles are valid and broken files for each setting.
type authFiles struct {
	pki
	creds, seed, accountSeed, garbage, dir, missing string
}

func newAuthFiles(tb testing.TB) authFiles {
	tb.Helper()
	dir := tb.TempDir()
	_, seed := newUserNKey(tb)
	account, err := nkeys.CreateAccount()
	require.NoError(tb, err)
	accountSeed, err := account.Seed()
	require.NoError(tb, err)
	return authFiles{
		pki:         newPKI(tb),
		creds:       writeFile(tb, dir, "user.creds", newCreds(tb)),
		seed:        writeFile(tb, dir, "user.nk", seed),
		accountSeed: writeFile(tb, dir, "account.nk", accountSeed),
		garbage:     writeFile(tb, dir, "garbage", []byte("not a key\n")),
		dir:         dir,
		missing:     filepath.Join(dir, "missing"),
	}
}

func TestNATSAuthValidate(t *testing.T) {
	t.Parallel()
	f := newAuthFiles(t)
	secret := redact.NewSecret
	tests := []struct {
		name    string
		auth    NATSAuth
		wantVar string // empty: valid
	}{
		{name: "nothing set", auth: NATSAuth{}},
		{name: "creds", auth: NATSAuth{NATSCreds: f.creds}},
		{name: "nkey", auth: NATSAuth{NATSNKey: f.seed}},
		{name: "user and password", auth: NATSAuth{NATSUser: "u", NATSPassword: secret("p")}},
		{name: "user alone", auth: NATSAuth{NATSUser: "u"}},
		{name: "token", auth: NATSAuth{NATSToken: secret("t")}},
		{name: "server-verified TLS", auth: NATSAuth{NATSCA: f.CA}},
		{name: "mutual TLS", auth: NATSAuth{NATSCA: f.CA, NATSCert: f.ClientCert, NATSKey: f.ClientKey}},
		{name: "client certificate with system roots", auth: NATSAuth{NATSCert: f.ClientCert, NATSKey: f.ClientKey}},
		{name: "user over mutual TLS", auth: NATSAuth{NATSUser: "u", NATSPassword: secret("p"), NATSCA: f.CA, NATSCert: f.ClientCert, NATSKey: f.ClientKey}},

		{name: "creds and user", auth: NATSAuth{NATSCreds: f.creds, NATSUser: "u"}, wantVar: "MEETWATCH_NATS_CREDS, MEETWATCH_NATS_USER"},
		{name: "nkey and token", auth: NATSAuth{NATSNKey: f.seed, NATSToken: secret("t")}, wantVar: "MEETWATCH_NATS_NKEY, MEETWATCH_NATS_TOKEN"},
		{name: "user and token", auth: NATSAuth{NATSUser: "u", NATSToken: secret("t")}, wantVar: "MEETWATCH_NATS_USER, MEETWATCH_NATS_TOKEN"},
		{name: "all four", auth: NATSAuth{NATSCreds: f.creds, NATSNKey: f.seed, NATSUser: "u", NATSToken: secret("t")},
			wantVar: "MEETWATCH_NATS_CREDS, MEETWATCH_NATS_NKEY, MEETWATCH_NATS_USER, MEETWATCH_NATS_TOKEN"},
		{name: "password without user", auth: NATSAuth{NATSPassword: secret("p")}, wantVar: "MEETWATCH_NATS_USER"},
		{name: "cert without key", auth: NATSAuth{NATSCert: f.ClientCert}, wantVar: "MEETWATCH_NATS_KEY"},
		{name: "key without cert", auth: NATSAuth{NATSKey: f.ClientKey}, wantVar: "MEETWATCH_NATS_CERT"},

		{name: "creds missing", auth: NATSAuth{NATSCreds: f.missing}, wantVar: "MEETWATCH_NATS_CREDS"},
		{name: "creds a directory", auth: NATSAuth{NATSCreds: f.dir}, wantVar: "MEETWATCH_NATS_CREDS"},
		{name: "creds without a JWT", auth: NATSAuth{NATSCreds: f.seed}, wantVar: "MEETWATCH_NATS_CREDS"},
		{name: "creds garbage", auth: NATSAuth{NATSCreds: f.garbage}, wantVar: "MEETWATCH_NATS_CREDS"},
		{name: "nkey missing", auth: NATSAuth{NATSNKey: f.missing}, wantVar: "MEETWATCH_NATS_NKEY"},
		{name: "nkey garbage", auth: NATSAuth{NATSNKey: f.garbage}, wantVar: "MEETWATCH_NATS_NKEY"},
		{name: "nkey of an account", auth: NATSAuth{NATSNKey: f.accountSeed}, wantVar: "MEETWATCH_NATS_NKEY"},
		{name: "ca missing", auth: NATSAuth{NATSCA: f.missing}, wantVar: "MEETWATCH_NATS_CA"},
		{name: "ca not PEM", auth: NATSAuth{NATSCA: f.garbage}, wantVar: "MEETWATCH_NATS_CA"},
		{name: "cert missing", auth: NATSAuth{NATSCert: f.missing, NATSKey: f.ClientKey}, wantVar: "MEETWATCH_NATS_CERT"},
		{name: "key missing", auth: NATSAuth{NATSCert: f.ClientCert, NATSKey: f.missing}, wantVar: "MEETWATCH_NATS_KEY"},
		{name: "key of another certificate", auth: NATSAuth{NATSCert: f.ClientCert, NATSKey: f.ServerKey}, wantVar: "MEETWATCH_NATS_CERT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.auth.Validate()
			if tt.wantVar == "" {
				require.NoError(t, err)
				_, err := tt.auth.Options()
				assert.NoError(t, err, "options of a valid configuration")
				return
			}
			var ce *configError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tt.wantVar, ce.Var)
			assert.NotContains(t, ce.Error(), "\n", "a one-line message")
		})
	}
}

func TestNATSAuthOptions(t *testing.T) {
	t.Parallel()
	f := newAuthFiles(t)
	nkeyOpt, err := nats.NkeyOptionFromSeed(f.seed)
	require.NoError(t, err)
	var wantNkey nats.Options
	require.NoError(t, nkeyOpt(&wantNkey))

	tests := []struct {
		name  string
		auth  NATSAuth
		check func(t *testing.T, o nats.Options)
	}{
		{name: "nothing", auth: NATSAuth{}, check: func(t *testing.T, o nats.Options) {
			assert.Equal(t, nats.GetDefaultOptions().Secure, o.Secure)
			assert.Empty(t, o.User)
			assert.Empty(t, o.Token)
			assert.Empty(t, o.Nkey)
			assert.Nil(t, o.UserJWT)
		}},
		{name: "creds", auth: NATSAuth{NATSCreds: f.creds}, check: func(t *testing.T, o nats.Options) {
			require.NotNil(t, o.UserJWT)
			userJWT, err := o.UserJWT()
			require.NoError(t, err)
			assert.Equal(t, 2, strings.Count(userJWT, "."), "the user JWT")
			assert.NotNil(t, o.SignatureCB)
		}},
		{name: "nkey", auth: NATSAuth{NATSNKey: f.seed}, check: func(t *testing.T, o nats.Options) {
			assert.Equal(t, wantNkey.Nkey, o.Nkey)
			assert.True(t, strings.HasPrefix(o.Nkey, "U"), "a user's public key")
			assert.NotNil(t, o.SignatureCB)
		}},
		{name: "user", auth: NATSAuth{NATSUser: "u", NATSPassword: redact.NewSecret("p")}, check: func(t *testing.T, o nats.Options) {
			assert.Equal(t, "u", o.User)
			assert.Equal(t, "p", o.Password)
		}},
		{name: "token", auth: NATSAuth{NATSToken: redact.NewSecret("t")}, check: func(t *testing.T, o nats.Options) {
			assert.Equal(t, "t", o.Token)
		}},
		{name: "mutual TLS", auth: NATSAuth{NATSCA: f.CA, NATSCert: f.ClientCert, NATSKey: f.ClientKey}, check: func(t *testing.T, o nats.Options) {
			assert.True(t, o.Secure)
			assert.NotNil(t, o.RootCAsCB)
			assert.NotNil(t, o.TLSCertCB)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.NoError(t, tt.auth.Validate())
			opts, err := tt.auth.Options()
			require.NoError(t, err)
			o := nats.GetDefaultOptions()
			for _, opt := range opts {
				require.NoError(t, opt(&o))
			}
			tt.check(t, o)
		})
	}
}

func TestNATSAuthFromEnvironment(t *testing.T) {
	t.Parallel()
	f := newAuthFiles(t)
	const password, token = "env-pw-5b0e", "env-token-93d1"
	environ := map[string]string{
		"MEETWATCH_NATS_URL":      "nats://127.0.0.1:4222",
		"MEETWATCH_NATS_USER":     "mw",
		"MEETWATCH_NATS_PASSWORD": password,
		"MEETWATCH_NATS_CA":       f.CA,
		"MEETWATCH_NATS_CERT":     f.ClientCert,
		"MEETWATCH_NATS_KEY":      f.ClientKey,
	}
	cfg, err := loadConfig(environ, false)
	require.NoError(t, err)
	assert.Equal(t, NATSAuth{
		NATSUser: "mw", NATSPassword: redact.NewSecret(password),
		NATSCA: f.CA, NATSCert: f.ClientCert, NATSKey: f.ClientKey,
	}, cfg.NATSAuth, "the embedded settings are read")
	assert.NotContains(t, fmt.Sprintf("%+v %#v", cfg, cfg), password)

	environ["MEETWATCH_NATS_TOKEN"] = token
	_, err = loadConfig(environ, false)
	var ce *configError
	require.ErrorAs(t, err, &ce, "tail checks the settings too")
	assert.Equal(t, "MEETWATCH_NATS_USER, MEETWATCH_NATS_TOKEN", ce.Var)
	assert.NotContains(t, err.Error(), token)

	delete(environ, "MEETWATCH_NATS_URL")
	_, err = loadConfig(environ, false)
	assert.NoError(t, err, "ignored with the embedded server")

	help := envHelp()
	for field, want := range map[string]string{
		"NATSCreds": "MEETWATCH_NATS_CREDS", "NATSNKey": "MEETWATCH_NATS_NKEY",
		"NATSUser": "MEETWATCH_NATS_USER", "NATSPassword": "MEETWATCH_NATS_PASSWORD",
		"NATSToken": "MEETWATCH_NATS_TOKEN", "NATSCA": "MEETWATCH_NATS_CA",
		"NATSCert": "MEETWATCH_NATS_CERT", "NATSKey": "MEETWATCH_NATS_KEY",
	} {
		assert.Equal(t, want, varName(field), "varName finds the promoted field")
		assert.Contains(t, help, "  "+want+" ", "run --help lists it")
	}
	assert.Contains(t, help, "MEETWATCH_NATS_URL")
	assert.Contains(t, help, "MEETWATCH_POLL_INTERVAL")
	assert.NotContains(t, help, "NATSAuth")
}

func TestNATSSecurityIgnoredWithEmbeddedServer(t *testing.T) {
	t.Parallel()
	f := newAuthFiles(t)
	cfg := config{NATSAuth: NATSAuth{NATSCA: f.CA, NATSToken: redact.NewSecret("ignored-token-1")}}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))

	opts, err := natsSecurity(cfg, logger)
	require.NoError(t, err)
	assert.Empty(t, opts, "no security options for the embedded server")
	assert.Contains(t, logs.String(), "nats security settings ignored")
	assert.Contains(t, logs.String(), "MEETWATCH_NATS_TOKEN,MEETWATCH_NATS_CA")
	assert.NotContains(t, logs.String(), "ignored-token-1")

	logs.Reset()
	cfg.NATSURL = "nats://127.0.0.1:4222"
	opts, err = natsSecurity(cfg, logger)
	require.NoError(t, err)
	assert.Len(t, opts, 2, "token and CA")
	assert.Empty(t, logs.String())
}

func TestNATSTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	tlsOnly := startTLSNATS(t, p, false)
	mutual := startTLSNATS(t, p, true)
	tests := []struct {
		name    string
		srv     *server.Server
		auth    NATSAuth
		wantErr bool
	}{
		{name: "server-verified TLS", srv: tlsOnly, auth: NATSAuth{NATSCA: p.CA}},
		{name: "mutual TLS", srv: mutual, auth: NATSAuth{NATSCA: p.CA, NATSCert: p.ClientCert, NATSKey: p.ClientKey}},
		{name: "mutual TLS without a client certificate", srv: mutual, auth: NATSAuth{NATSCA: p.CA}, wantErr: true},
		{name: "server certificate from an unknown CA", srv: tlsOnly, auth: NATSAuth{}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.NoError(t, tt.auth.Validate())
			opts, err := tt.auth.Options()
			require.NoError(t, err)
			nc, err := nats.Connect(tt.srv.ClientURL(), append(opts, nats.Timeout(10*time.Second))...)
			if tt.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			defer nc.Close()
			assert.True(t, nc.TLSRequired())
			_, err = nc.TLSConnectionState()
			assert.NoError(t, err, "the connection is TLS")
			assert.NoError(t, nc.Flush())
		})
	}
}

// TestNATSPermissionsDeny checks that the documented permissions are narrow:
// the meetwatch user may not publish elsewhere, nor make other streams.
func TestNATSPermissionsDeny(t *testing.T) {
	t.Parallel()
	srv := startPermissionedNATS(t, readmePermissions(t))
	admin := connectNATS(t, srv.ClientURL(), nats.UserInfo(adminUser, adminPassword))

	opts, err := NATSAuth{NATSUser: mwUser, NATSPassword: redact.NewSecret(mwPassword)}.Options()
	require.NoError(t, err)
	asyncErrs := make(chan error, 16)
	nc := connectNATS(t, srv.ClientURL(), append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case asyncErrs <- err:
		default:
		}
	}))...)
	nextViolation := func(subject string) {
		t.Helper()
		select {
		case err := <-asyncErrs:
			assert.ErrorIs(t, err, nats.ErrPermissionViolation)
			assert.Contains(t, err.Error(), fmt.Sprintf("Publish to %q", subject))
		case <-time.After(5 * time.Second):
			assert.Fail(t, "no permissions violation", "publishing to %s", subject)
		}
	}

	require.NoError(t, nc.Publish("other.subject", []byte("x")))
	require.NoError(t, nc.Flush())
	nextViolation("other.subject")

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}})
	assert.Error(t, err, "creating another stream")
	nextViolation("$JS.API.STREAM.CREATE.OTHER")

	adminJS, err := jetstream.New(admin)
	require.NoError(t, err)
	_, err = adminJS.Stream(t.Context(), "OTHER")
	assert.ErrorIs(t, err, jetstream.ErrStreamNotFound)
}

// securedNATS is a running server and what it takes to use it.
type securedNATS struct {
	url     string
	env     map[string]string // the MEETWATCH_NATS_* settings for meetwatch
	admin   []nats.Option     // the test's own connection
	secrets []string          // never to be printed
}

func mutualTLSNATS(tb testing.TB) securedNATS {
	tb.Helper()
	p := newPKI(tb)
	srv := startTLSNATS(tb, p, true)
	return securedNATS{
		url:   srv.ClientURL(),
		env:   map[string]string{"MEETWATCH_NATS_CA": p.CA, "MEETWATCH_NATS_CERT": p.ClientCert, "MEETWATCH_NATS_KEY": p.ClientKey},
		admin: []nats.Option{nats.RootCAs(p.CA), nats.ClientCert(p.ClientCert, p.ClientKey)},
	}
}

func userNATS(tb testing.TB) securedNATS {
	tb.Helper()
	srv := startPermissionedNATS(tb, readmePermissions(tb))
	return securedNATS{
		url:     srv.ClientURL(),
		env:     map[string]string{"MEETWATCH_NATS_USER": mwUser, "MEETWATCH_NATS_PASSWORD": mwPassword},
		admin:   []nats.Option{nats.UserInfo(adminUser, adminPassword)},
		secrets: []string{mwPassword},
	}
}

func tokenNATS(tb testing.TB) securedNATS {
	tb.Helper()
	const token = "Nats-token-4f9c0b6e"
	srv := startNATS(tb, func(o *server.Options) { o.Authorization = token })
	return securedNATS{
		url:     srv.ClientURL(),
		env:     map[string]string{"MEETWATCH_NATS_TOKEN": token},
		admin:   []nats.Option{nats.Token(token)},
		secrets: []string{token},
	}
}

func nkeyNATS(tb testing.TB) securedNATS {
	tb.Helper()
	pub, seed := newUserNKey(tb)
	adminPub, adminSeed := newUserNKey(tb)
	dir := tb.TempDir()
	seedFile := writeFile(tb, dir, "meetwatch.nk", seed)
	adminOpt, err := nats.NkeyOptionFromSeed(writeFile(tb, dir, "admin.nk", adminSeed))
	require.NoError(tb, err)
	srv := startNATS(tb, func(o *server.Options) {
		o.Nkeys = []*server.NkeyUser{{Nkey: pub}, {Nkey: adminPub}}
	})
	return securedNATS{
		url:     srv.ClientURL(),
		env:     map[string]string{"MEETWATCH_NATS_NKEY": seedFile},
		admin:   []nats.Option{adminOpt},
		secrets: []string{string(seed)},
	}
}

// stateLoaded is the line meetwatch logs once it has read n committed
// meetings from the state bucket.
func stateLoaded(n int) string {
	return fmt.Sprintf(`msg="state loaded" component=watcher meetings=%d committed=true`, n)
}

// bigState is a number of meetings whose state (about 1.5 kB each) is more
// than the 2 MiB a JetStream consumer sends before it waits for flow
// control, so that loading it at start needs the flow-control replies.
const bigState = 2000

func TestRunSecuredNATS(t *testing.T) {
	t.Parallel()
	const token = "secured-api-token"
	tests := []struct {
		name     string
		start    func(testing.TB) securedNATS
		meetings int
		tail     bool // also run `meetwatch tail` with the same settings
		restart  bool // restart, and check that the committed state is read back
	}{
		{name: "mutual TLS", start: mutualTLSNATS, meetings: 3, tail: true},
		{name: "permissioned user", start: userNATS, meetings: bigState, restart: true},
		{name: "token", start: tokenNATS, meetings: 3},
		{name: "nkey", start: nkeyNATS, meetings: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sec := tt.start(t)
			nc := connectNATS(t, sec.url, sec.admin...)
			api := startAPI(t, token, tt.meetings)
			env := runEnv(api.URL, token, sec.url)
			env["MEETWATCH_LOG_LEVEL"] = "debug"
			maps.Copy(env, sec.env)
			var procs []*process

			var tail *process
			if tt.tail {
				tailEnv := maps.Clone(sec.env)
				tailEnv["MEETWATCH_NATS_URL"] = sec.url
				tail = startMeetwatch(t, tailEnv, "tail", "meetings.started.>")
				procs = append(procs, tail)
				require.Eventually(t, func() bool { return strings.Contains(tail.stderr.String(), "meetwatch tail:") },
					eventWait, tick, "waiting for tail to subscribe")
			}

			mw := startMeetwatch(t, env, "run")
			procs = append(procs, mw)
			msgs := waitForMessages(t, nc, "MEETINGS", tt.meetings)
			var gotIDs []string
			for _, m := range msgs {
				assert.Equal(t, "meetwatch.meeting.started", m.Event.Type)
				gotIDs = append(gotIDs, m.Event.Subject)
			}
			assert.ElementsMatch(t, api.Sim.UUIDs(), gotIDs, "one started event per meeting")

			if tail != nil {
				require.Eventually(t, func() bool { return len(tail.stdout.Lines()) >= tt.meetings },
					eventWait, tick, "waiting for tail to print %d events", tt.meetings)
				for _, l := range tail.stdout.Lines() {
					assert.Contains(t, l, "started")
				}
			}

			if tt.restart {
				// Stop once a snapshot is committed: a poll cut short (a
				// lease lost on a loaded machine) commits nothing.
				st := newStateView(t, nc)
				require.Eventually(t, func() bool { rev, _ := st.meta(); return rev != 0 },
					eventWait, tick, "waiting for a committed snapshot")
				pages := (tt.meetings + 499) / 500
				mw.stop(t, syscall.SIGTERM)
				mw = startMeetwatch(t, env, "run")
				procs = append(procs, mw)
				require.Eventually(t, func() bool { return strings.Contains(mw.stderr.String(), stateLoaded(tt.meetings)) },
					eventWait, tick, "waiting for the state to load")
				waitForPolls(t, api.Sim, pages+1)
				assert.Equal(t, tt.meetings, streamLen(nc, "MEETINGS"), "nothing published again after the restart")
			}

			mw.stop(t, syscall.SIGTERM)
			if tail != nil {
				tail.stop(t, syscall.SIGTERM)
			}
			for _, p := range procs {
				assert.NotContains(t, p.stderr.String(), "Permissions Violation")
				for _, s := range append(sec.secrets, token) {
					assert.NotContains(t, p.stderr.String(), s)
					assert.NotContains(t, p.stdout.String(), s)
				}
			}
		})
	}
}

// violation matches the error nats-server sends for a denied subject, as
// meetwatch logs it (its quotes escaped in a text log).
var violation = regexp.MustCompile(`Permissions Violation for (?:Publish|Subscription) to \\?"([^"\\]+)\\?"`)

// TestRunNeedsEveryPermission removes each entry of the documented
// permissions in turn, and checks that meetwatch then hits it: the list has
// nothing it does not use.
func TestRunNeedsEveryPermission(t *testing.T) {
	t.Parallel()
	const token = "perm-api-token"
	perms := readmePermissions(t)
	type entry struct {
		kind    string // "publish" or "subscribe"
		subject string
	}
	var entries []entry
	for _, s := range perms.Publish.Allow {
		entries = append(entries, entry{"publish", s})
	}
	for _, s := range perms.Subscribe.Allow {
		entries = append(entries, entry{"subscribe", s})
	}
	require.NotEmpty(t, entries)
	for _, e := range entries {
		t.Run(e.kind+" "+e.subject, func(t *testing.T) {
			t.Parallel()
			reduced := &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: slices.Clone(perms.Publish.Allow)},
				Subscribe: &server.SubjectPermission{Allow: slices.Clone(perms.Subscribe.Allow)},
			}
			list := &reduced.Publish.Allow
			if e.kind == "subscribe" {
				list = &reduced.Subscribe.Allow
			}
			*list = slices.DeleteFunc(*list, func(s string) bool { return s == e.subject })
			if len(reduced.Subscribe.Allow) == 0 {
				reduced.Subscribe = &server.SubjectPermission{Deny: []string{">"}} // an empty list would allow everything
			}
			// Flow control is asked for only while a large state loads at
			// start: another user with every permission commits one first.
			const seeder, seederPassword = "seeder", "seeder-pw-77"
			srv := startPermissionedNATS(t, reduced, &server.User{Username: seeder, Password: seederPassword, Permissions: perms})
			flowControl := strings.HasPrefix(e.subject, "$JS.FC.")
			// Reading the lease is needed by a standby: another replica,
			// with every permission, holds the lease while this one runs.
			standby := strings.HasPrefix(e.subject, "$JS.API.DIRECT.GET.KV_meetwatch-lease")
			meetings := 3
			if flowControl {
				meetings = bigState
			}
			api := startAPI(t, token, meetings)
			env := runEnv(api.URL, token, srv.ClientURL())
			if flowControl {
				nc := connectNATS(t, srv.ClientURL(), nats.UserInfo(adminUser, adminPassword))
				env["MEETWATCH_NATS_USER"], env["MEETWATCH_NATS_PASSWORD"] = seeder, seederPassword
				seed := startMeetwatch(t, env, "run")
				waitForMessages(t, nc, "MEETINGS", meetings)
				waitForPolls(t, api.Sim, (meetings+499)/500+1)
				seed.stop(t, syscall.SIGTERM)
			}
			if standby {
				nc := connectNATS(t, srv.ClientURL(), nats.UserInfo(adminUser, adminPassword))
				env["MEETWATCH_NATS_USER"], env["MEETWATCH_NATS_PASSWORD"] = seeder, seederPassword
				startMeetwatch(t, env, "run") // leads until the test ends
				waitForMessages(t, nc, "MEETINGS", meetings)
			}
			env["MEETWATCH_NATS_USER"], env["MEETWATCH_NATS_PASSWORD"] = mwUser, mwPassword

			mw := startMeetwatch(t, env, "run")
			denied := func() []string {
				var subjects []string
				for _, m := range violation.FindAllStringSubmatch(mw.stderr.String(), -1) {
					subjects = append(subjects, m[1])
				}
				return subjects
			}
			isDenied := func() bool {
				return slices.ContainsFunc(denied(), func(s string) bool { return server.SubjectMatchesFilter(s, e.subject) })
			}
			require.Eventually(t, isDenied, eventWait, tick, "waiting for meetwatch to be denied what %s allows", e.subject)
			// A denied request waits for its timeout before meetwatch sees
			// the signal, so the exit is not held to the usual 5 s.
			require.NoError(t, mw.cmd.Process.Signal(syscall.SIGTERM))
			assert.Equal(t, 0, mw.wait(t, eventWait), "exit code")
			assert.NotContains(t, mw.stderr.String(), mwPassword)
		})
	}
}

func TestNATSSecurityBadConfigurationExits2(t *testing.T) {
	t.Parallel()
	f := newAuthFiles(t)
	tests := []struct {
		name     string
		command  string
		env      map[string]string
		variable string
	}{
		{name: "cert without key", command: "run", env: map[string]string{"MEETWATCH_NATS_CERT": f.ClientCert}, variable: "MEETWATCH_NATS_KEY"},
		{name: "creds missing", command: "run", env: map[string]string{"MEETWATCH_NATS_CREDS": f.missing}, variable: "MEETWATCH_NATS_CREDS"},
		{name: "nkey and token", command: "run", env: map[string]string{"MEETWATCH_NATS_NKEY": f.seed, "MEETWATCH_NATS_TOKEN": "t0k-e1"}, variable: "MEETWATCH_NATS_NKEY, MEETWATCH_NATS_TOKEN"},
		{name: "tail with a password and no user", command: "tail", env: map[string]string{"MEETWATCH_NATS_PASSWORD": "pw-a81"}, variable: "MEETWATCH_NATS_USER"},
		{name: "tail with a CA that is no certificate", command: "tail", env: map[string]string{"MEETWATCH_NATS_CA": f.garbage}, variable: "MEETWATCH_NATS_CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A URL nobody listens on, in case a bad value were accepted.
			env := map[string]string{
				"MEETWATCH_API_URL":      "http://127.0.0.1:9",
				"MEETWATCH_ACCESS_TOKEN": "config-token",
				"MEETWATCH_NATS_URL":     "nats://127.0.0.1:9",
			}
			maps.Copy(env, tt.env)
			stderr := rejectsConfiguration(t, env, tt.command).stderr.String()
			assert.Contains(t, stderr, tt.variable)
			for k, v := range tt.env {
				if strings.Contains(k, "TOKEN") || strings.Contains(k, "PASSWORD") {
					assert.NotContains(t, stderr, v)
				}
			}
		})
	}
}
