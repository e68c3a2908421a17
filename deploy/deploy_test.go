package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/errgroup"

	"github.com/meetwatch/meetwatch/events/jsensure"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/ha"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
)

// The passwords the NATS configuration reads from the server's environment.
const (
	meetwatchPasswordVar = "NATS_MEETWATCH_PASSWORD"
	readerPasswordVar    = "NATS_READER_PASSWORD"
	meetwatchPassword    = "mw-deploy-test-8c1f"
	readerPassword       = "reader-deploy-test-27d0"
)

// The names meetwatch uses with its default settings.
const (
	streamName  = "MEETINGS"
	stateBucket = "meetwatch-state"
	leaseBucket = "meetwatch-lease"
	viewBucket  = "meetings-now"
)

var natsConfigs = []string{"nats/nats-1.conf", "nats/nats-2.conf", "nats/nats-3.conf"}

// loadNATSConfig parses a configuration file as nats-server does.
func loadNATSConfig(tb testing.TB, path string) *server.Options {
	tb.Helper()
	opts, err := server.ProcessConfigFile(path)
	require.NoError(tb, err, "parsing %s", path)
	return opts
}

// natsUser returns the user named name in opts.
func natsUser(tb testing.TB, opts *server.Options, name string) *server.User {
	tb.Helper()
	for _, u := range opts.Users {
		if u.Username == name {
			return u
		}
	}
	require.FailNow(tb, "no such user", "user %q", name)
	return nil
}

// The meetwatch user's permissions in the shipped configuration are the
// ones docs/security.md lists, which the daemon's own tests run it with
// (cmd/meetwatch): a list kept in two places drifts.
func TestNATSConfigGrantsWhatTheDocsList(t *testing.T) {
	t.Setenv(meetwatchPasswordVar, meetwatchPassword)
	t.Setenv(readerPasswordVar, readerPassword)
	shipped := natsUser(t, loadNATSConfig(t, natsConfigs[0]), "meetwatch").Permissions

	doc, err := os.ReadFile(filepath.Join("..", "docs", "security.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(doc), "\n## NATS security\n")
	require.True(t, ok, "docs/security.md has no NATS security section")
	_, snippet, ok := strings.Cut(section, "```text\n")
	require.True(t, ok)
	snippet, _, ok = strings.Cut(snippet, "```")
	require.True(t, ok)
	path := filepath.Join(t.TempDir(), "documented.conf")
	require.NoError(t, os.WriteFile(path, []byte(snippet), 0o600))
	documented := natsUser(t, loadNATSConfig(t, path), "meetwatch").Permissions
	// The shipped configuration serves an accounts file too: it grants the
	// entries docs/security.md adds for one.
	_, accounts, ok := strings.Cut(section, "- With an accounts file,")
	require.True(t, ok, "docs/security.md says nothing of an accounts file's permissions")
	_, accounts, ok = strings.Cut(accounts, "```text\n")
	require.True(t, ok)
	accounts, _, ok = strings.Cut(accounts, "```")
	require.True(t, ok)
	for _, l := range strings.Split(accounts, "\n") {
		if l = strings.Trim(strings.TrimSpace(l), `"`); l != "" {
			documented.Publish.Allow = append(documented.Publish.Allow, l)
		}
	}

	assert.ElementsMatch(t, documented.Publish.Allow, shipped.Publish.Allow, "publish")
	assert.ElementsMatch(t, documented.Subscribe.Allow, shipped.Subscribe.Allow, "subscribe")
}

func TestNATSConfig(t *testing.T) {
	t.Setenv(meetwatchPasswordVar, meetwatchPassword)
	t.Setenv(readerPasswordVar, readerPassword)

	t.Run("files", func(t *testing.T) {
		for i, path := range natsConfigs {
			t.Run(filepath.Base(path), func(t *testing.T) {
				opts := loadNATSConfig(t, path)
				assert.Equal(t, fmt.Sprintf("nats-%d", i+1), opts.ServerName)
				assert.Equal(t, "0.0.0.0", opts.Host)
				assert.Equal(t, 4222, opts.Port)
				assert.Equal(t, 8222, opts.HTTPPort)
				assert.True(t, opts.JetStream, "jetstream")
				assert.Equal(t, "/data", opts.StoreDir)
				assert.Positive(t, opts.JetStreamMaxStore, "max_file_store")
				assert.Equal(t, "meetwatch", opts.Cluster.Name)
				assert.Equal(t, 6222, opts.Cluster.Port)
				var routes []string
				for _, r := range opts.Routes {
					routes = append(routes, r.Host)
				}
				assert.Equal(t, []string{"nats-1:6222", "nats-2:6222", "nats-3:6222"}, routes)

				accounts := map[string]bool{}
				for _, a := range opts.Accounts {
					accounts[a.Name] = true
				}
				assert.True(t, accounts["MEETWATCH"], "account MEETWATCH")
				assert.True(t, accounts["READERS"], "account READERS")

				mw := natsUser(t, opts, "meetwatch")
				assert.Equal(t, "MEETWATCH", mw.Account.Name)
				assert.Equal(t, meetwatchPassword, mw.Password, "from $%s", meetwatchPasswordVar)
				require.NotNil(t, mw.Permissions)
				assert.Contains(t, mw.Permissions.Publish.Allow, "meetings.>")
				assert.Equal(t, []string{"_INBOX.>"}, mw.Permissions.Subscribe.Allow)
				for _, s := range mw.Permissions.Publish.Allow {
					for _, wide := range []string{"other.subject", "$JS.API.STREAM.CREATE.OTHER", "$JS.API.STREAM.DELETE.MEETINGS", "$KV.other.key"} {
						assert.False(t, server.SubjectMatchesFilter(wide, s), "%s allows %s", s, wide)
					}
				}

				rd := natsUser(t, opts, "reader")
				assert.Equal(t, "READERS", rd.Account.Name, "readers are kept out of the daemon's account")
				assert.Equal(t, readerPassword, rd.Password, "from $%s", readerPasswordVar)
				require.NotNil(t, rd.Permissions)
				assert.Contains(t, rd.Permissions.Subscribe.Allow, "meetings.>")
				for _, s := range rd.Permissions.Publish.Allow {
					assert.False(t, server.SubjectMatchesFilter("meetings.started.x", s), "the reader may publish events with %s", s)
				}
			})
		}
	})

	t.Run("passwords", func(t *testing.T) {
		// Without its password a server does not start.
		t.Setenv(meetwatchPasswordVar, "")
		require.NoError(t, os.Unsetenv(meetwatchPasswordVar))
		_, err := server.ProcessConfigFile(natsConfigs[0])
		assert.ErrorContains(t, err, meetwatchPasswordVar)

		// A bcrypt hash in its place checks the password.
		hash, err := bcrypt.GenerateFromPassword([]byte(meetwatchPassword), bcrypt.MinCost)
		require.NoError(t, err)
		t.Setenv(meetwatchPasswordVar, string(hash))
		opts := loadNATSConfig(t, natsConfigs[0])
		standalone(opts, t.TempDir())
		s := startServer(t, opts)
		nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("meetwatch", meetwatchPassword))
		require.NoError(t, err, "the password against its hash")
		nc.Close()
		_, err = nats.Connect(s.ClientURL(), nats.UserInfo("meetwatch", string(hash)))
		assert.Error(t, err, "the hash is not the password")
	})

	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		testCluster(t)
	})

	t.Run("every permission is used", func(t *testing.T) {
		t.Parallel()
		testEveryPermissionUsed(t)
	})
}

// testCluster starts a three-node cluster from the configuration files,
// and checks that the meetwatch user can do all that meetwatch does, and
// nothing else, and that readers can read the events, and nothing else.
func testCluster(t *testing.T) {
	start := time.Now()
	servers := startCluster(t)
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.ClientURL())
	}
	url := strings.Join(urls, ",")

	mwViolations := &violations{}
	mw := connect(t, url, "meetwatch", meetwatchPassword, mwViolations)
	js, err := jetstream.New(mw)
	require.NoError(t, err)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		assert.NoError(c, err)
	}, 20*time.Second, 100*time.Millisecond, "waiting for jetstream")
	t.Logf("jetstream ready after %s", time.Since(start).Round(time.Millisecond))

	// Right after the meta leader is elected, a replicated stream may still
	// lack peers: retry the first call, as meetwatch does.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := jsensure.Stream(ctx, js, meetingsStream(3), nil, nil)
		assert.NoError(c, err)
	}, 20*time.Second, 250*time.Millisecond, "creating the stream")

	require.NoError(t, meetwatchCalls(t.Context(), mw, callsConfig{replicas: 3, step: 10 * time.Second, keys: flowControlKeys}))
	assert.Empty(t, mwViolations.all(), "permissions violations")

	acc, err := servers[0].LookupAccount("MEETWATCH")
	require.NoError(t, err)
	assert.True(t, acc.JetStreamEnabled(), "jetstream in the MEETWATCH account")
	for _, s := range servers {
		d, err := s.JszAccount(&server.JSzOptions{Account: "MEETWATCH", Streams: true, Config: true})
		require.NoError(t, err)
		got := map[string]int{}
		for _, st := range d.Streams {
			got[st.Name] = st.Config.Replicas
		}
		assert.Equal(t, map[string]int{streamName: 3, "KV_" + stateBucket: 3, "KV_" + leaseBucket: 3, "KV_" + viewBucket: 3}, got, "streams on %s", s.Name())
	}

	t.Run("meetwatch denied elsewhere", func(t *testing.T) {
		require.NoError(t, mw.Publish("other.subject", []byte("x")))
		require.NoError(t, mw.Flush())
		mwViolations.wait(t, "other.subject")

		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}})
		assert.Error(t, err, "creating another stream")
		mwViolations.wait(t, "$JS.API.STREAM.CREATE.OTHER")

		d, err := servers[0].JszAccount(&server.JSzOptions{Account: "MEETWATCH", Streams: true})
		require.NoError(t, err)
		for _, st := range d.Streams {
			assert.NotEqual(t, "OTHER", st.Name)
		}
	})

	t.Run("reader", func(t *testing.T) {
		rdViolations := &violations{}
		rd := connect(t, url, "reader", readerPassword, rdViolations)
		publish := func(ctx context.Context, id string) error {
			_, err := js.Publish(ctx, "meetings.started."+id, []byte(`{"id":"`+id+`"}`), jetstream.WithMsgID(id))
			return err
		}
		// Each step gets 20 s: a cluster beside a busy suite answers a
		// consumer's first pull late.
		require.NoError(t, readerCalls(t.Context(), rd, publish, 20*time.Second))
		assert.Empty(t, rdViolations.all(), "permissions violations")

		// What the daemon receives on its inboxes must not reach a reader,
		// even one listening on every inbox: a watch of the state bucket
		// delivers every meeting record there. Another meetwatch
		// connection, in the same account, shows what there is to see.
		spy := connect(t, url, "reader", readerPassword, nil).Subscribe
		mwSpy := connect(t, url, "meetwatch", meetwatchPassword, nil).Subscribe
		var seen, mwSeen sync.Map
		_, err := spy("_INBOX.>", func(m *nats.Msg) { seen.Store(m.Subject, true) })
		require.NoError(t, err)
		_, err = mwSpy("_INBOX.>", func(m *nats.Msg) { mwSeen.Store(m.Subject, true) })
		require.NoError(t, err)
		kv, err := js.KeyValue(t.Context(), stateBucket)
		require.NoError(t, err)
		count := func(m *sync.Map) (n int) {
			m.Range(func(any, any) bool { n++; return true })
			return n
		}
		// Read the state as meetwatch does at start, until the spies'
		// interest has crossed the routes.
		assert.Eventually(t, func() bool {
			if _, err := kv.Get(t.Context(), "meta"); err != nil {
				return false
			}
			w, err := kv.WatchFiltered(t.Context(), []string{"m.>"})
			if err != nil {
				return false
			}
			<-w.Updates()
			_ = w.Stop()
			return count(&mwSeen) > 0
		}, 10*time.Second, 50*time.Millisecond, "a spy in the daemon's account saw nothing: the check below would prove nothing")
		assert.Zero(t, count(&seen), "a reader saw the daemon's inbox traffic")

		require.NoError(t, rd.Publish("meetings.started.forged", []byte("x")))
		require.NoError(t, rd.Flush())
		rdViolations.wait(t, "meetings.started.forged")

		for _, subject := range []string{
			"$JS.API.STREAM.INFO.KV_" + stateBucket,
			"$JS.API.DIRECT.GET.KV_" + stateBucket + ".$KV." + stateBucket + ".meta",
		} {
			_, err := rd.Request(subject, nil, time.Second)
			assert.Error(t, err, "reading the state bucket")
			rdViolations.wait(t, subject)
		}
		_, err = rd.SubscribeSync("$KV." + stateBucket + ".>")
		require.NoError(t, err)
		require.NoError(t, rd.Flush())
		rdViolations.wait(t, "$KV."+stateBucket+".>")
	})

	for _, s := range servers {
		s.Shutdown()
	}
	for _, s := range servers {
		s.WaitForShutdown()
	}
	t.Logf("cluster test took %s", time.Since(start).Round(time.Millisecond))
}

// testEveryPermissionUsed removes each entry of each user's permissions in
// turn, on a single server made from the same file, and checks that the
// user's calls then hit it: the lists hold nothing that is not needed.
//
// The cases run at once, each on its own server: as parallel subtests they
// would run only GOMAXPROCS at a time.
func testEveryPermissionUsed(t *testing.T) {
	opts := loadNATSConfig(t, natsConfigs[0])
	var entries []permEntry
	for _, user := range []string{"meetwatch", "reader"} {
		perms := natsUser(t, opts, user).Permissions
		for _, s := range perms.Publish.Allow {
			entries = append(entries, permEntry{user, "publish", s})
		}
		for _, s := range perms.Subscribe.Allow {
			entries = append(entries, permEntry{user, "subscribe", s})
		}
	}
	type result struct {
		denied []string
		calls  error // what the calls returned: the reason they stopped
		err    error // the case could not run
	}
	results := make([]result, len(entries))
	var wg sync.WaitGroup
	for i, e := range entries {
		wg.Go(func() {
			r := &results[i]
			r.denied, r.calls, r.err = deniedWithout(t, e)
		})
	}
	wg.Wait()
	for i, e := range entries {
		t.Run(e.user+" "+e.kind+" "+e.subject, func(t *testing.T) {
			r := results[i]
			require.NoError(t, r.err)
			assert.True(t, slices.ContainsFunc(r.denied, func(s string) bool { return server.SubjectMatchesFilter(s, e.subject) }),
				"nothing was denied without %s %s, so it is not needed (calls: %v; denied: %v)", e.kind, e.subject, r.calls, r.denied)
		})
	}
}

// permEntry is one entry of a user's permissions.
type permEntry struct{ user, kind, subject string }

// deniedWithout starts a single server from the first configuration file,
// with e taken out of the user's permissions, makes the user's calls until
// one is denied what e allows, and returns what was denied.
func deniedWithout(t *testing.T, e permEntry) (denied []string, calls, err error) {
	opts, err := server.ProcessConfigFile(natsConfigs[0])
	if err != nil {
		return nil, nil, err
	}
	standalone(opts, t.TempDir())
	var p *server.Permissions
	for _, u := range opts.Users {
		if u.Username == e.user {
			p = u.Permissions
		}
	}
	if p == nil {
		return nil, nil, fmt.Errorf("no user %s", e.user)
	}
	list := &p.Publish.Allow
	if e.kind == "subscribe" {
		list = &p.Subscribe.Allow
	}
	*list = slices.DeleteFunc(*list, func(s string) bool { return s == e.subject })
	if len(p.Subscribe.Allow) == 0 {
		p.Subscribe = &server.SubjectPermission{Deny: []string{">"}} // an empty list would allow all
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, nil, err
	}
	go s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		return nil, nil, errors.New("server not ready")
	}

	// Stop the calls as soon as they are denied what e allows.
	v := &violations{}
	hit := func() bool {
		return slices.ContainsFunc(v.all(), func(s string) bool { return server.SubjectMatchesFilter(s, e.subject) })
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for !hit() {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		cancel()
	}()
	dial := func(user, password string, v *violations) (*nats.Conn, error) {
		opts := []nats.Option{nats.UserInfo(user, password), nats.Timeout(5 * time.Second)}
		if v != nil {
			opts = append(opts, nats.ErrorHandler(v.handler))
		}
		nc, err := nats.Connect(s.ClientURL(), opts...)
		if err != nil {
			return nil, fmt.Errorf("connecting as %s: %w", user, err)
		}
		t.Cleanup(nc.Close)
		return nc, nil
	}
	const step = 10 * time.Second
	switch e.user {
	case "meetwatch":
		nc, err := dial("meetwatch", meetwatchPassword, v)
		if err != nil {
			return nil, nil, err
		}
		keys := 3
		if strings.HasPrefix(e.subject, "$JS.FC.") {
			keys = flowControlKeys // only a large watch asks for flow control
		}
		calls = meetwatchCalls(ctx, nc, callsConfig{replicas: 1, step: step, keys: keys})
	case "reader":
		// The daemon, with its full list, makes the stream and publishes.
		mw, err := dial("meetwatch", meetwatchPassword, nil)
		if err != nil {
			return nil, nil, err
		}
		js, err := jetstream.New(mw)
		if err != nil {
			return nil, nil, err
		}
		if _, err := jsensure.Stream(ctx, js, meetingsStream(1), nil, nil); err != nil {
			return nil, nil, err
		}
		publish := func(ctx context.Context, id string) error {
			_, err := js.Publish(ctx, "meetings.started."+id, []byte(`{}`), jetstream.WithMsgID(id))
			return err
		}
		nc, err := dial("reader", readerPassword, v)
		if err != nil {
			return nil, nil, err
		}
		calls = readerCalls(ctx, nc, publish, step)
	}
	// A denial may be reported after the call that caused it returned.
	for deadline := time.Now().Add(time.Second); !hit() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	return v.all(), calls, nil
}

// flowControlKeys is a number of state keys of stateValueSize bytes whose
// total is more than the 2 MiB a watch receives before the server asks for
// flow control.
const (
	flowControlKeys = 1800
	stateValueSize  = 1500
)

type callsConfig struct {
	replicas int
	step     time.Duration // bound of each call
	keys     int           // meetings written to the state, at least 2
}

func meetingsStream(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:       streamName,
		Subjects:   []string{"meetings.>"},
		Storage:    jetstream.FileStorage,
		Duplicates: time.Hour,
		Replicas:   replicas,
	}
}

// meetwatchCalls makes the JetStream calls meetwatch makes, with the
// settings it makes them with: the stream and the two buckets read, and
// created since they are missing, an event published twice under one id,
// the state written, committed, purged and loaded with a watch, and the
// lease taken, renewed, looked at by a standby, released and taken again.
func meetwatchCalls(ctx context.Context, nc *nats.Conn, c callsConfig) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	do := func(what string, f func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(ctx, c.step)
		defer cancel()
		if err := f(ctx); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	var state, lease jetstream.KeyValue
	var view *kvstore.View
	steps := []struct {
		what string
		f    func(ctx context.Context) error
	}{
		{"making sure the stream exists", func(ctx context.Context) error {
			_, err := jsensure.Stream(ctx, js, meetingsStream(c.replicas), nil, nil)
			return err
		}},
		{"publishing an event twice", func(ctx context.Context) error {
			for i, wantDup := range []bool{false, true} {
				ack, err := js.Publish(ctx, "meetings.started.deploytest", []byte(`{"specversion":"1.0"}`), jetstream.WithMsgID("deploy-test-event"))
				if err != nil {
					return err
				}
				if ack.Duplicate != wantDup {
					return fmt.Errorf("publish %d: duplicate %v, want %v", i+1, ack.Duplicate, wantDup)
				}
			}
			return nil
		}},
		{"making sure the state bucket exists", func(ctx context.Context) error {
			var (
				cfg jetstream.StreamConfig
				err error
			)
			state, cfg, err = jsensure.Bucket(ctx, js, jetstream.KeyValueConfig{
				Bucket: stateBucket, History: 1, Storage: jetstream.FileStorage,
				Replicas: c.replicas, LimitMarkerTTL: time.Hour,
			}, nil, nil)
			if err != nil {
				return err
			}
			if !cfg.AllowMsgTTL {
				return errors.New("the state bucket refuses per-message ttls")
			}
			return nil
		}},
		{"making sure the lease bucket exists", func(ctx context.Context) error {
			var err error
			lease, _, err = jsensure.Bucket(ctx, js, jetstream.KeyValueConfig{
				Bucket: leaseBucket, History: 1, TTL: 10 * time.Second, Storage: jetstream.FileStorage,
				Replicas: c.replicas,
			}, nil, nil)
			return err
		}},
		{"writing the state", func(ctx context.Context) error {
			value := []byte(`{"confUUID":"` + strings.Repeat("x", stateValueSize-15) + `"}`)
			g, ctx := errgroup.WithContext(ctx)
			g.SetLimit(64)
			for i := range c.keys {
				g.Go(func() error {
					_, err := state.Put(ctx, fmt.Sprintf("m.%05d", i), value)
					return err
				})
			}
			return g.Wait()
		}},
		{"committing", func(ctx context.Context) error {
			if _, err := state.Get(ctx, "meta"); !errors.Is(err, jetstream.ErrKeyNotFound) {
				return fmt.Errorf("reading meta: %v, want not found", err)
			}
			rev, err := state.Create(ctx, "meta", []byte(`{"meetings":1}`))
			if err != nil {
				return err
			}
			if _, err := state.Update(ctx, "meta", []byte(`{"meetings":2}`), rev); err != nil {
				return err
			}
			if _, err := state.Update(ctx, "meta", []byte(`{"meetings":3}`), rev); !errors.Is(err, jetstream.ErrKeyExists) {
				return fmt.Errorf("stale update: %v, want a revision mismatch", err)
			}
			return nil
		}},
		{"purging an ended meeting", func(ctx context.Context) error {
			if err := state.Purge(ctx, "m.00000", jetstream.PurgeTTL(time.Hour)); err != nil {
				return err
			}
			return eventually(ctx, func() error {
				if _, err := state.Get(ctx, "m.00000"); !errors.Is(err, jetstream.ErrKeyNotFound) {
					return fmt.Errorf("reading a purged key: %v, want not found", err)
				}
				return nil
			})
		}},
		{"loading the state", func(ctx context.Context) error {
			// On a cluster, a watch right after the writes may be served
			// by a replica still applying them, and miss its end: each
			// attempt has a bound.
			return eventually(ctx, func() error {
				ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				w, err := state.WatchFiltered(ctx, []string{"m.>"})
				if err != nil {
					return err
				}
				defer func() { _ = w.Stop() }()
				puts, seen := 0, 0
				for {
					var e jetstream.KeyValueEntry
					select {
					case <-ctx.Done():
						return fmt.Errorf("after %d entries: %w", seen, ctx.Err())
					case e = <-w.Updates():
					}
					if e == nil {
						continue
					}
					seen++
					if e.Operation() == jetstream.KeyValuePut {
						puts++
					}
					if e.Delta() == 0 {
						break
					}
				}
				if puts != c.keys-1 {
					return fmt.Errorf("loaded %d meetings, want %d", puts, c.keys-1)
				}
				return w.Stop()
			})
		}},
		{"making sure the view bucket exists", func(ctx context.Context) error {
			var err error
			view, err = kvstore.OpenView(ctx, js, kvstore.ViewConfig{Bucket: viewBucket, Replicas: c.replicas})
			return err
		}},
		{"writing the view, and reconciling it with the state", func(ctx context.Context) error {
			value := []byte(`{"conference":"` + strings.Repeat("x", stateValueSize-20) + `"}`)
			writes := make([]watcher.ViewWrite, c.keys)
			ids := make([]string, c.keys)
			for i := range writes {
				ids[i] = fmt.Sprintf("v%05d", i)
				writes[i] = watcher.ViewWrite{Meeting: ids[i], Value: value}
			}
			if err := view.Write(ctx, writes); err != nil {
				return err
			}
			// One meeting ended: the reconcile reads the view with a
			// watch, and deletes its key.
			return eventually(ctx, func() error {
				return view.Reconcile(ctx, ids[1:], func(string) ([]byte, error) { return value, nil })
			})
		}},
		{"leading", func(ctx context.Context) error {
			rev, err := lease.Create(ctx, "leader", []byte(`{"id":"a"}`))
			if err != nil {
				return fmt.Errorf("taking the lease: %w", err)
			}
			if rev, err = lease.Update(ctx, "leader", []byte(`{"id":"a"}`), rev); err != nil {
				return fmt.Errorf("renewing the lease: %w", err)
			}
			// A read of a replica a moment behind may not show the lease
			// yet: like a standby's next look, try again.
			if err := eventually(ctx, func() error {
				if _, err := lease.Get(ctx, "leader"); err != nil {
					return fmt.Errorf("a standby's look at the lease: %w", err)
				}
				return nil
			}); err != nil {
				return err
			}
			if err := lease.Delete(ctx, "leader", jetstream.LastRevision(rev)); err != nil {
				return fmt.Errorf("releasing the lease: %w", err)
			}
			// Likewise, it may still show the released lease.
			return eventually(ctx, func() error {
				if _, err := lease.Get(ctx, "leader"); !errors.Is(err, jetstream.ErrKeyNotFound) {
					return fmt.Errorf("a standby's look at a released lease: %v, want not found", err)
				}
				if _, err := lease.Create(ctx, "leader", []byte(`{"id":"b"}`)); err != nil {
					return fmt.Errorf("taking over a released lease: %w", err)
				}
				return nil
			})
		}},
		{"looking at every key of the lease bucket, as a placement of accounts does", func(ctx context.Context) error {
			live, err := ha.LiveKeys(ctx, nc, leaseBucket)
			if err != nil {
				return err
			}
			if _, ok := live["leader"]; !ok {
				return fmt.Errorf("the lease is not among the live keys %v", slices.Collect(maps.Keys(live)))
			}
			return nil
		}},
	}
	for _, s := range steps {
		if err := do(s.what, s.f); err != nil {
			return err
		}
	}
	return nil
}

// eventually calls f until it succeeds or ctx ends. Reads of a replicated
// bucket may be served by a replica a moment behind the write before them.
func eventually(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// readerCalls makes the calls of an event consumer: a live subscription
// (`nats sub`), `meetwatch tail` (an ordered consumer, replaying the
// stream or not) and a bot with a durable consumer that acknowledges.
// publish sends an event as the daemon.
func readerCalls(ctx context.Context, nc *nats.Conn, publish func(ctx context.Context, id string) error, step time.Duration) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	do := func(what string, f func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(ctx, step)
		defer cancel()
		if err := f(ctx); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	if err := do("live", func(ctx context.Context) error {
		sub, err := nc.SubscribeSync("meetings.>")
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
		if err := nc.Flush(); err != nil {
			return err
		}
		// Interest in an imported subject reaches the other servers of a
		// cluster a moment after the subscription: what is published
		// before is not delivered, as to any live subscriber.
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			id := fmt.Sprintf("reader-live-%d", i)
			if err := publish(ctx, id); err != nil {
				return fmt.Errorf("publishing as the daemon: %w", err)
			}
			m, err := sub.NextMsg(200 * time.Millisecond)
			switch {
			case err == nil:
				if !strings.HasPrefix(m.Subject, "meetings.started.reader-live-") {
					return fmt.Errorf("got %s", m.Subject)
				}
				return nil
			case !errors.Is(err, nats.ErrTimeout):
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			default:
			}
		}
	}); err != nil {
		return err
	}
	if err := do("new events", func(ctx context.Context) error {
		// meetwatch tail without --all: a first consumer finds the
		// stream's last event, and the one read starts after it.
		probe, err := js.OrderedConsumer(ctx, streamName, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{"meetings.>"}, DeliverPolicy: jetstream.DeliverNewPolicy, InactiveThreshold: time.Second,
		})
		if err != nil {
			return err
		}
		cons, err := js.OrderedConsumer(ctx, streamName, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{"meetings.>"},
			DeliverPolicy:  jetstream.DeliverByStartSequencePolicy, OptStartSeq: probe.CachedInfo().Delivered.Stream + 1,
		})
		if err != nil {
			return err
		}
		got := make(chan string, 64)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			select {
			case got <- m.Subject():
			default:
			}
		}, jetstream.PullMaxBytes(2<<20))
		if err != nil {
			return err
		}
		defer cc.Stop()
		if err := publish(ctx, "reader-new"); err != nil {
			return fmt.Errorf("publishing as the daemon: %w", err)
		}
		select {
		case s := <-got:
			if s != "meetings.started.reader-new" {
				return fmt.Errorf("got %s", s)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}); err != nil {
		return err
	}
	if err := do("replay", func(ctx context.Context) error {
		if err := publish(ctx, "reader-replay"); err != nil { // two events or more in the stream
			return fmt.Errorf("publishing as the daemon: %w", err)
		}
		cons, err := js.OrderedConsumer(ctx, streamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"meetings.>"}})
		if err != nil {
			return err
		}
		// Several messages answer one pull request.
		got := make(chan string, 64)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			select {
			case got <- m.Subject():
			default:
			}
		})
		if err != nil {
			return err
		}
		defer cc.Stop()
		for range 2 {
			select {
			case <-got:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := do("replay in batches", func(ctx context.Context) error {
		cons, err := js.OrderedConsumer(ctx, streamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"meetings.>"}})
		if err != nil {
			return err
		}
		// Each fetch after the first replaces the consumer, and deletes
		// the one before, as a reset of Consume does.
		// On a cluster, the first pull may reach a server that has not
		// heard of the new consumer yet: "no responders", try again.
		fetch := func() error {
			msgs, err := cons.Fetch(1, jetstream.FetchContext(ctx))
			if err != nil {
				return err
			}
			for range msgs.Messages() {
			}
			return msgs.Error()
		}
		for range 2 {
			err := fetch()
			for errors.Is(err, nats.ErrNoResponders) && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
				err = fetch()
			}
			if err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	return do("durable consumer", func(ctx context.Context) error {
		if _, err := js.CreateOrUpdateConsumer(ctx, streamName, jetstream.ConsumerConfig{
			Durable: "deploy-test-bot", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "meetings.>",
		}); err != nil {
			return err
		}
		cons, err := js.Consumer(ctx, streamName, "deploy-test-bot") // as after a restart
		if err != nil {
			return err
		}
		m, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			return err
		}
		return m.DoubleAck(ctx)
	})
}

// violations collects the subjects a connection was denied.
type violations struct {
	mu       sync.Mutex
	subjects []string
}

var violationRE = regexp.MustCompile(`(?i)permissions violation for (?:publish|subscription) to "([^"]+)"`)

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	m := violationRE.FindStringSubmatch(err.Error())
	if m == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.subjects = append(v.subjects, m[1])
}

func (v *violations) all() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.subjects)
}

func (v *violations) wait(tb testing.TB, subject string) {
	tb.Helper()
	assert.Eventually(tb, func() bool { return slices.Contains(v.all(), subject) },
		5*time.Second, 10*time.Millisecond, "no permissions violation for %s (got %v)", subject, v.all())
}

func connect(tb testing.TB, url, user, password string, v *violations) *nats.Conn {
	tb.Helper()
	opts := []nats.Option{nats.UserInfo(user, password), nats.Name(tb.Name()), nats.Timeout(5 * time.Second)}
	if v != nil {
		opts = append(opts, nats.ErrorHandler(v.handler))
	}
	nc, err := nats.Connect(url, opts...)
	require.NoError(tb, err, "connecting as %s", user)
	tb.Cleanup(nc.Close)
	return nc
}

// standalone makes opts, read from a cluster node's file, those of a single
// server on a loopback port with its files in dir.
func standalone(opts *server.Options, dir string) {
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPPort = 0
	opts.Cluster, opts.Routes = server.ClusterOpts{}, nil
	opts.StoreDir = dir
	opts.NoLog, opts.NoSigs = true, true
}

// startCluster starts the three servers of natsConfigs as one cluster on
// loopback ports. The cluster ports are found free and then released, so
// another process may take one meanwhile: then the cluster is started
// again on others, up to three times.
func startCluster(t *testing.T) []*server.Server {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ports := freePorts(t, 3)
		var routes []string
		for _, p := range ports {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
		}
		var servers []*server.Server
		ready := true
		for i, path := range natsConfigs {
			opts := loadNATSConfig(t, path)
			opts.Host, opts.Port = "127.0.0.1", -1
			opts.HTTPPort = 0
			opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", ports[i]
			opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
			opts.StoreDir = t.TempDir()
			opts.NoLog, opts.NoSigs = true, true
			s, err := server.NewServer(opts)
			require.NoError(t, err)
			go s.Start()
			servers = append(servers, s)
			if !s.ReadyForConnections(10 * time.Second) {
				ready = false
				break
			}
		}
		if ready {
			t.Cleanup(func() {
				for _, s := range servers {
					s.Shutdown()
					s.WaitForShutdown()
				}
			})
			return servers
		}
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
		require.Less(t, attempt, 3, "the cluster did not start on free ports three times")
		t.Logf("a cluster port was taken meanwhile; starting the cluster again (attempt %d)", attempt+1)
	}
}

func startServer(tb testing.TB, opts *server.Options) *server.Server {
	tb.Helper()
	s, err := server.NewServer(opts)
	require.NoError(tb, err)
	go s.Start()
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	require.True(tb, s.ReadyForConnections(10*time.Second), "server %s not ready", opts.ServerName)
	return s
}

// freePorts reserves n loopback ports and frees them for the caller.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(tb, err)
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

var envTag = regexp.MustCompile(`env:"([A-Z0-9_]+)[",]`)

// knownVariables returns every MEETWATCH_* variable meetwatch reads: the
// env tags of the configuration in cmd/meetwatch, and of the NATS
// connection settings it embeds from events.
func knownVariables(tb testing.TB) map[string]bool {
	tb.Helper()
	var files []string
	for _, dir := range []string{filepath.Join("..", "cmd", "meetwatch"), filepath.Join("..", "events")} {
		matches, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(tb, err)
		files = append(files, matches...)
	}
	known := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		require.NoError(tb, err)
		for _, m := range envTag.FindAllStringSubmatch(string(b), -1) {
			known["MEETWATCH_"+m[1]] = true
		}
	}
	require.Contains(tb, known, "MEETWATCH_NATS_URL", "no env tags found in cmd/meetwatch")
	return known
}

// assertKnown checks that every MEETWATCH_* name in names is a variable
// meetwatch reads.
func assertKnown(tb testing.TB, where string, names []string) {
	tb.Helper()
	known := knownVariables(tb)
	n := 0
	for _, name := range names {
		if !strings.HasPrefix(name, "MEETWATCH_") {
			continue
		}
		n++
		assert.True(tb, known[name], "%s sets %s, which meetwatch does not read", where, name)
	}
	assert.Positive(tb, n, "%s sets no MEETWATCH_* variable", where)
}

// k8sObject is what the tests read of a Kubernetes object.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       yaml.Node         `yaml:"spec"`
}

type deploymentSpec struct {
	Replicas int `yaml:"replicas"`
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			SecurityContext securityContext `yaml:"securityContext"`
			Containers      []container     `yaml:"containers"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

type securityContext struct {
	RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
	RunAsUser                *int  `yaml:"runAsUser"`
	ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Args    []string `yaml:"args"`
	EnvFrom []struct {
		ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
		SecretRef    *struct{ Name string } `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext securityContext `yaml:"securityContext"`
}

type probe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

// port resolves a probe's port, a number or the name of a container port.
func (c container) port(tb testing.TB, p *probe) int {
	tb.Helper()
	require.NotNil(tb, p)
	require.NotNil(tb, p.HTTPGet, "an HTTP probe")
	var n int
	if err := p.HTTPGet.Port.Decode(&n); err == nil {
		return n
	}
	for _, cp := range c.Ports {
		if cp.Name == p.HTTPGet.Port.Value {
			return cp.ContainerPort
		}
	}
	require.FailNow(tb, "no such port", "probe port %q", p.HTTPGet.Port.Value)
	return 0
}

// readK8s parses every YAML document under k8s/.
func readK8s(tb testing.TB) []k8sObject {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	require.NoError(tb, err)
	require.NotEmpty(tb, files)
	var objs []k8sObject
	for _, f := range files {
		fh, err := os.Open(f)
		require.NoError(tb, err)
		dec := yaml.NewDecoder(fh)
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(tb, err, "parsing %s", f)
			if o.Kind == "" {
				continue // an empty document
			}
			require.NotEmpty(tb, o.APIVersion, "%s: a %s without apiVersion", f, o.Kind)
			require.NotEmpty(tb, o.Metadata.Name, "%s: a %s without a name", f, o.Kind)
			objs = append(objs, o)
		}
		require.NoError(tb, fh.Close())
	}
	return objs
}

func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	byKind := map[string][]k8sObject{}
	for _, o := range readK8s(t) {
		byKind[o.Kind] = append(byKind[o.Kind], o)
	}
	for _, kind := range []string{"Deployment", "ConfigMap", "Secret", "PodDisruptionBudget"} {
		require.Len(t, byKind[kind], 1, "one %s", kind)
	}
	var names []string

	cm := byKind["ConfigMap"][0]
	for k := range cm.Data {
		names = append(names, k)
	}
	assert.Equal(t, "3", cm.Data["MEETWATCH_REPLICAS"])
	assert.NotEmpty(t, cm.Data["MEETWATCH_NATS_URL"])

	secret := byKind["Secret"][0]
	assert.Empty(t, secret.Data, "secrets as stringData")
	for k := range secret.StringData {
		names = append(names, k)
	}
	for _, k := range []string{"MEETWATCH_APP_ID", "MEETWATCH_APP_KEY", "MEETWATCH_NATS_PASSWORD"} {
		assert.Contains(t, secret.StringData, k)
	}

	var d deploymentSpec
	require.NoError(t, byKind["Deployment"][0].Spec.Decode(&d))
	assert.Equal(t, 2, d.Replicas)
	assert.NotEmpty(t, d.Selector.MatchLabels)
	for k, v := range d.Selector.MatchLabels {
		assert.Equal(t, v, d.Template.Metadata.Labels[k], "the selector selects the pods")
	}
	pod := d.Template.Spec
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	assert.NotEmpty(t, c.Image)
	assert.Equal(t, []string{"run"}, c.Args)
	assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	assert.Equal(t, 9464, c.port(t, c.LivenessProbe))
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	assert.Equal(t, 9464, c.port(t, c.ReadinessProbe))
	assert.NotEmpty(t, c.Resources.Requests["cpu"])
	assert.NotEmpty(t, c.Resources.Requests["memory"])
	assert.NotEmpty(t, c.Resources.Limits["memory"])
	nonRoot := pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot ||
		c.SecurityContext.RunAsNonRoot != nil && *c.SecurityContext.RunAsNonRoot
	assert.True(t, nonRoot, "runAsNonRoot")
	if u := pod.SecurityContext.RunAsUser; u != nil {
		assert.NotZero(t, *u, "runAsUser")
	}
	require.NotNil(t, c.SecurityContext.ReadOnlyRootFilesystem)
	assert.True(t, *c.SecurityContext.ReadOnlyRootFilesystem, "readOnlyRootFilesystem")
	require.NotNil(t, c.SecurityContext.AllowPrivilegeEscalation)
	assert.False(t, *c.SecurityContext.AllowPrivilegeEscalation, "allowPrivilegeEscalation")

	var fromConfigMap, fromSecret bool
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			fromConfigMap = true
			assert.Equal(t, cm.Metadata.Name, ef.ConfigMapRef.Name)
		}
		if ef.SecretRef != nil {
			fromSecret = true
			assert.Equal(t, secret.Metadata.Name, ef.SecretRef.Name)
		}
	}
	assert.True(t, fromConfigMap, "envFrom the ConfigMap")
	assert.True(t, fromSecret, "envFrom the Secret")
	var replicaID string
	for _, e := range c.Env {
		names = append(names, e.Name)
		if e.Name == "MEETWATCH_REPLICA_ID" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			replicaID = e.ValueFrom.FieldRef.FieldPath
		}
	}
	assert.Equal(t, "metadata.name", replicaID, "MEETWATCH_REPLICA_ID from the pod's name")

	var pdb struct {
		MinAvailable int `yaml:"minAvailable"`
		Selector     struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
	}
	require.NoError(t, byKind["PodDisruptionBudget"][0].Spec.Decode(&pdb))
	assert.Equal(t, 1, pdb.MinAvailable)
	assert.Equal(t, d.Selector.MatchLabels, pdb.Selector.MatchLabels, "the budget covers the pods")

	assertKnown(t, "k8s/", names)
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]any    `yaml:"depends_on"`
	Healthcheck map[string]any    `yaml:"healthcheck"`
}

// natsServerMinor returns the major.minor version of the nats-server
// module in go.mod, the one the tests run, which the compose trial's image
// must match.
func natsServerMinor(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "go.mod"))
	require.NoError(tb, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "github.com/nats-io/nats-server/v2 v"); ok {
			major, rest, _ := strings.Cut(v, ".")
			minor, _, _ := strings.Cut(rest, ".")
			return major + "." + minor
		}
	}
	require.FailNow(tb, "go.mod does not require nats-server")
	return ""
}

func TestDockerCompose(t *testing.T) {
	t.Parallel()
	testedNATS := natsServerMinor(t)
	b, err := os.ReadFile("docker-compose.yml")
	require.NoError(t, err)
	var f composeFile
	require.NoError(t, yaml.Unmarshal(b, &f))

	var names []string
	var daemons, sims []string
	for name, s := range f.Services {
		for k := range s.Environment {
			names = append(names, k)
		}
		switch {
		case strings.HasPrefix(name, "nats-"):
			assert.True(t, strings.HasPrefix(s.Image, "nats:"+testedNATS+"-"), "%s: image %s, not the nats-server %s the tests run", name, s.Image, testedNATS)
			assert.NotEmpty(t, s.Healthcheck, "%s: a healthcheck", name)
			// Its own configuration, with the shared part, read-only, and
			// its own volume for the JetStream files.
			var config, common, data bool
			for _, v := range s.Volumes {
				parts := strings.Split(v, ":")
				switch {
				case parts[0] == "./nats/"+name+".conf":
					config = true
					assert.Equal(t, "ro", parts[len(parts)-1], "%s: %s read-only", name, v)
					assert.Contains(t, s.Command, parts[1], "%s: started with its configuration", name)
				case parts[0] == "./nats/common.conf":
					common = true
					assert.Equal(t, "ro", parts[len(parts)-1], "%s: %s read-only", name, v)
				case len(parts) == 2 && parts[1] == "/data":
					data = true
					assert.Contains(t, f.Volumes, parts[0], "%s: a named volume", name)
				}
				if strings.HasPrefix(parts[0], "./") {
					_, err := os.Stat(parts[0])
					assert.NoError(t, err, "%s mounts %s", name, parts[0])
				}
			}
			assert.True(t, config, "%s mounts nats/%s.conf", name, name)
			assert.True(t, common, "%s mounts nats/common.conf", name)
			assert.True(t, data, "%s has a volume on /data", name)
		case len(s.Command) > 0 && s.Command[0] == "sim":
			sims = append(sims, name)
			assert.Contains(t, strings.Join(s.Command, " "), "--addr 0.0.0.0:8080")
		case len(s.Command) > 0 && s.Command[0] == "run":
			daemons = append(daemons, name)
			env := s.Environment
			assert.Equal(t, "3", env["MEETWATCH_REPLICAS"], name)
			assert.Equal(t, ":9464", env["MEETWATCH_HTTP_ADDR"], name)
			for _, node := range []string{"nats-1", "nats-2", "nats-3"} {
				assert.Contains(t, env["MEETWATCH_NATS_URL"], "nats://"+node+":4222", name)
				assert.Contains(t, s.DependsOn, node, name)
			}
			assert.Equal(t, "meetwatch", env["MEETWATCH_NATS_USER"], name)
			assert.NotEmpty(t, env["MEETWATCH_NATS_PASSWORD"], name)
			assert.True(t, strings.HasPrefix(env["MEETWATCH_API_URL"], "http://sim:8080"), "%s: the simulator", name)
		}
	}
	sort.Strings(daemons)
	assert.Len(t, daemons, 2, "meetwatch replicas")
	assert.Len(t, sims, 1, "simulators")
	assert.Len(t, f.Volumes, 3)
	if len(daemons) == 2 {
		assert.NotEqual(t, f.Services[daemons[0]].Environment["MEETWATCH_REPLICA_ID"],
			f.Services[daemons[1]].Environment["MEETWATCH_REPLICA_ID"], "the replicas are told apart")
	}

	// The variables compose reads from .env.
	env, err := os.ReadFile(".env.example")
	require.NoError(t, err)
	for _, line := range strings.Split(string(env), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			names = append(names, k)
		}
	}
	assertKnown(t, "docker-compose.yml", names)
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	// Instructions, with continued lines joined and comments left out.
	var lines []string
	cont := ""
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cont += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		if l = cont + l; l != "" {
			lines = append(lines, l)
		}
		cont = ""
	}
	instr := func(name string) []string {
		var args []string
		for _, l := range lines {
			if word, rest, _ := strings.Cut(l, " "); strings.EqualFold(word, name) {
				args = append(args, strings.TrimSpace(rest))
			}
		}
		return args
	}

	froms := instr("FROM")
	require.GreaterOrEqual(t, len(froms), 2, "multi-stage")
	assert.Contains(t, froms[0], "golang:1.26")
	final := froms[len(froms)-1]
	assert.Equal(t, "scratch", final, "final stage")
	assert.Contains(t, instr("COPY"), "--from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/", "the CA certificates, for the API's TLS")

	runs := strings.Join(instr("RUN"), "\n")
	assert.Contains(t, runs, "CGO_ENABLED=0")
	assert.Contains(t, runs, "-trimpath")
	assert.Contains(t, runs, "./cmd/meetwatch")

	users := instr("USER")
	require.NotEmpty(t, users)
	user, _, _ := strings.Cut(users[len(users)-1], ":")
	assert.NotContains(t, []string{"root", "0", ""}, user, "runs as a non-root user")

	labels := strings.Join(instr("LABEL"), " ")
	for _, l := range []string{"title", "description", "source", "licenses", "version"} {
		assert.Contains(t, labels, "org.opencontainers.image."+l+"=")
	}
	assert.Contains(t, instr("EXPOSE"), "9464")
	assert.Equal(t, []string{`["/meetwatch"]`}, instr("ENTRYPOINT"))
	assert.Equal(t, []string{`["run"]`}, instr("CMD"))
	copies := strings.Join(instr("COPY"), "\n")
	assert.Contains(t, copies, "--from=build /out/meetwatch /meetwatch")
}

// unitFile reads a systemd unit as "Section.Key" to every value it is given.
func unitFile(tb testing.TB, path string) map[string][]string {
	tb.Helper()
	b, err := os.ReadFile(path)
	require.NoError(tb, err)
	kv := map[string][]string{}
	section := ""
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			section = strings.Trim(l, "[]")
		default:
			k, v, ok := strings.Cut(l, "=")
			require.True(tb, ok, "%s:%d: %q is no key=value", path, i+1, l)
			require.NotEmpty(tb, section, "%s:%d: outside a section", path, i+1)
			kv[section+"."+strings.TrimSpace(k)] = append(kv[section+"."+strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return kv
}

func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	u := unitFile(t, filepath.Join("systemd", "meetwatch.service"))
	one := func(key string) string {
		t.Helper()
		require.Len(t, u[key], 1, key)
		return u[key][0]
	}
	assert.NotContains(t, []string{"root", "0"}, one("Service.User"))
	assert.NotEmpty(t, one("Service.Group"))
	assert.Equal(t, "/etc/meetwatch/meetwatch.env", strings.TrimPrefix(one("Service.EnvironmentFile"), "-"))
	assert.Equal(t, []string{"/usr/local/bin/meetwatch", "run"}, strings.Fields(one("Service.ExecStart")))
	assert.Equal(t, "always", one("Service.Restart"))
	assert.Equal(t, "SIGTERM", one("Service.KillSignal"))
	assert.NotEmpty(t, one("Service.TimeoutStopSec"))
	for key, want := range map[string]string{
		"Service.NoNewPrivileges": "yes",
		"Service.ProtectSystem":   "strict",
		"Service.StateDirectory":  "meetwatch",
		"Service.ReadWritePaths":  "/var/lib/meetwatch",
		"Service.PrivateTmp":      "yes",
	} {
		assert.Equal(t, want, one(key), key)
	}
	assert.NotEmpty(t, u["Install.WantedBy"])

	var names []string
	for _, e := range u["Service.Environment"] {
		for _, assignment := range strings.Fields(e) {
			k, v, _ := strings.Cut(strings.Trim(assignment, `"`), "=")
			names = append(names, k)
			if k == "MEETWATCH_DATA_DIR" {
				assert.Equal(t, "/var/lib/meetwatch", v)
			}
		}
	}
	assert.Contains(t, names, "MEETWATCH_DATA_DIR")

	env, err := os.ReadFile(filepath.Join("systemd", "meetwatch.env"))
	require.NoError(t, err)
	setting := regexp.MustCompile(`^#?(MEETWATCH_[A-Z0-9_]+)=`)
	for _, l := range strings.Split(string(env), "\n") {
		if m := setting.FindStringSubmatch(l); m != nil {
			names = append(names, m[1])
		}
	}
	assertKnown(t, "systemd/", names)
}
