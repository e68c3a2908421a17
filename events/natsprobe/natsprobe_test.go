package natsprobe_test

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/events/natsprobe"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait is how long a probe may wait for an answer in these tests: far
// longer than any of them takes, so that a probe that waited out its
// timeout instead of hearing the server's answer or refusal would show as
// ErrNoAnswer, not pass.
const wait = 10 * time.Second

// jetState is what the server stores, as far as a probe could change it:
// every stream's configuration, messages and consumers.
type jetState map[string]streamState

type streamState struct {
	Config             jetstream.StreamConfig
	Msgs, Bytes        uint64
	FirstSeq, LastSeq  uint64
	Consumers, Deleted int
}

func stateOf(tb testing.TB, js jetstream.JetStream) jetState {
	tb.Helper()
	out := jetState{}
	names := js.ListStreams(tb.Context())
	for info := range names.Info() {
		out[info.Config.Name] = streamState{
			Config: info.Config, Msgs: info.State.Msgs, Bytes: info.State.Bytes,
			FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq,
			Consumers: info.State.Consumers, Deleted: info.State.NumDeleted,
		}
	}
	require.NoError(tb, names.Err())
	return out
}

// TestProbesChangeNothing sends every probe to a server holding a stream
// and two buckets like meetwatch's, and checks what each learned, that a
// subscriber to the event subjects sees the probe for what it is, and that
// the server stores exactly what it stored before.
func TestProbesChangeNothing(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	probeEverything(t, srv.ClientURL(), natstest.Connect(t, srv), 1)
}

// TestProbesChangeNothingInACluster is TestProbesChangeNothing on three
// servers with streams of three replicas, where JetStream checks a publish
// before it proposes it to the other replicas, and the meta leader answers
// the stream and consumer requests.
func TestProbesChangeNothingInACluster(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t)
	admin, err := nats.Connect(nodes[0].ClientURL())
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	js, err := jetstream.New(admin)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := js.AccountInfo(t.Context())
		return err == nil
	}, 30*time.Second, 50*time.Millisecond, "waiting for the cluster's meta leader")
	probeEverything(t, nodes[0].ClientURL(), admin, 3)
}

// startCluster runs three JetStream servers routed to each other on
// loopback ports.
func startCluster(t *testing.T) []*server.Server {
	t.Helper()
	var ports []int
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		require.NoError(t, l.Close())
	}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var nodes []*server.Server
	for i, p := range ports {
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: server.RANDOM_PORT,
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "probes", Host: "127.0.0.1", Port: p},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		})
		require.NoError(t, err)
		go s.Start()
		t.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		nodes = append(nodes, s)
	}
	for _, s := range nodes {
		require.True(t, s.ReadyForConnections(10*time.Second))
	}
	return nodes
}

// probeEverything makes a stream and two buckets of replicas each, like
// meetwatch's, sends every probe to url, and checks what each learned,
// that a subscriber to the event subjects sees the probe for what it is,
// and that the account stores exactly what it stored before.
func probeEverything(t *testing.T, url string, admin *nats.Conn, replicas int) {
	t.Helper()
	js, err := jetstream.New(admin)
	require.NoError(t, err)
	ctx := t.Context()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "MEETINGS", Subjects: []string{"meetings.>"}, Duplicates: time.Hour, Replicas: replicas})
	require.NoError(t, err)
	_, err = js.Publish(ctx, "meetings.started.a", []byte(`{"id":"1"}`))
	require.NoError(t, err)
	state, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "state", LimitMarkerTTL: time.Hour, Replicas: replicas})
	require.NoError(t, err)
	_, err = state.Put(ctx, "meta", []byte(`{"meetings":1}`))
	require.NoError(t, err)
	lease, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "lease", TTL: time.Minute, LimitMarkerTTL: time.Minute, Replicas: replicas})
	require.NoError(t, err)
	_, err = lease.Create(ctx, "leader", []byte(`{"id":"a"}`))
	require.NoError(t, err)

	live, err := admin.SubscribeSync("meetings.>")
	require.NoError(t, err)
	require.NoError(t, admin.Flush())
	before := stateOf(t, js)

	p, err := natsprobe.Dial(url, wait)
	require.NoError(t, err)
	defer p.Close()

	info, err := p.AccountInfo(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, info.Streams)
	si, err := p.StreamInfo(ctx, "KV_state")
	require.NoError(t, err)
	assert.EqualValues(t, 1, si.State.Msgs)
	_, err = p.StreamInfo(ctx, "KV_nothing")
	assert.ErrorIs(t, err, jetstream.ErrStreamNotFound)

	for _, stream := range []string{"MEETINGS", "KV_state", "KV_lease", "NEW"} {
		assert.NoError(t, p.MayCreateStream(ctx, stream), "create %s", stream)
		assert.NoError(t, p.MayUpdateStream(ctx, stream), "update %s", stream)
		assert.NoError(t, p.MayCreateConsumer(ctx, stream), "create a consumer on %s", stream)
		assert.NoError(t, p.MayDeleteConsumer(ctx, stream), "delete a consumer of %s", stream)
	}
	for subject, want := range map[string]string{
		"meetings.started.x": "MEETINGS",
		"meetings.ended.x":   "MEETINGS",
		"$KV.state.meta":     "KV_state",
		"$KV.lease.leader":   "KV_lease",
		"$KV.missing.meta":   "",
		"elsewhere":          "",
	} {
		got, err := p.StreamOf(ctx, subject)
		assert.NoError(t, err, subject)
		assert.Equal(t, want, got, "the stream that stores %s", subject)
	}
	assert.NoError(t, p.MayPublish(ctx, "$JS.FC.KV_state."+natsprobe.Name+".x"))

	m, err := p.DirectGet(ctx, "KV_state", "$KV.state.meta")
	require.NoError(t, err)
	require.NotNil(t, m)
	assert.JSONEq(t, `{"meetings":1}`, string(m.Data))
	m, err = p.DirectGet(ctx, "KV_state", "$KV.state.other")
	assert.NoError(t, err)
	assert.Nil(t, m, "a key that is not there")
	_, err = p.DirectGet(ctx, "KV_missing", "$KV.missing.meta")
	assert.ErrorIs(t, err, nats.ErrNoResponders)

	assert.Equal(t, before, stateOf(t, js), "what the server stores")
	// The probes of the event subjects reached the plain subscriber, marked.
	var seen []string
	for range 2 {
		msg, err := live.NextMsg(5 * time.Second)
		require.NoError(t, err)
		seen = append(seen, msg.Subject)
		assert.Empty(t, msg.Data)
		assert.NotEmpty(t, msg.Header.Get(natsprobe.Header))
	}
	assert.ElementsMatch(t, []string{"meetings.started.x", "meetings.ended.x"}, seen)
}

// TestProbesHearDenials checks that each probe reports the permission the
// server denied, by the subject it was denied, rather than wait for an
// answer that never comes.
func TestProbesHearDenials(t *testing.T) {
	t.Parallel()
	const user, password = "probe", "probe-pw-51"
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Users: []*server.User{
			{Username: user, Password: password, Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"$JS.API.INFO"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
			}},
			{Username: "deaf", Password: password, Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{">"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"other.>"}},
			}},
		},
	})
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second))
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	ctx := t.Context()

	p, err := natsprobe.Dial(s.ClientURL(), wait, nats.UserInfo(user, password))
	require.NoError(t, err)
	defer p.Close()
	_, err = p.AccountInfo(ctx)
	require.NoError(t, err, "an allowed request")
	probes := map[string]func() error{
		"$JS.API.STREAM.CREATE.S":                   func() error { return p.MayCreateStream(ctx, "S") },
		"$JS.API.STREAM.UPDATE.S":                   func() error { return p.MayUpdateStream(ctx, "S") },
		"$JS.API.STREAM.INFO.S":                     func() error { _, err := p.StreamInfo(ctx, "S"); return err },
		"$JS.API.CONSUMER.CREATE.S.meetwatch-probe": func() error { return p.MayCreateConsumer(ctx, "S") },
		"$JS.API.CONSUMER.DELETE.S.meetwatch-probe": func() error { return p.MayDeleteConsumer(ctx, "S") },
		"meetings.started.x":                        func() error { _, err := p.StreamOf(ctx, "meetings.started.x"); return err },
		"$JS.FC.S.x":                                func() error { return p.MayPublish(ctx, "$JS.FC.S.x") },
		"$JS.API.DIRECT.GET.S.k":                    func() error { _, err := p.DirectGet(ctx, "S", "k"); return err },
	}
	for subject, probe := range probes {
		err := probe()
		var denied *natsprobe.DeniedError
		if assert.ErrorAs(t, err, &denied, subject) {
			assert.Equal(t, &natsprobe.DeniedError{Op: "publish", Subject: subject}, denied)
		}
	}
	_, err = p.AccountInfo(ctx)
	assert.NoError(t, err, "an allowed request after the denied ones")

	deaf, err := natsprobe.Dial(s.ClientURL(), wait, nats.UserInfo("deaf", password))
	require.NoError(t, err)
	defer deaf.Close()
	_, err = deaf.AccountInfo(ctx)
	var denied *natsprobe.DeniedError
	require.ErrorAs(t, err, &denied, "no subscription for the answer")
	assert.Equal(t, "subscribe", denied.Op)
	assert.True(t, strings.HasPrefix(denied.Subject, "_INBOX."), denied.Subject)
	assert.False(t, errors.Is(err, natsprobe.ErrNoAnswer))
}

// TestDialNamesTheDialError checks that an unreachable server fails Dial
// with the reason.
func TestDialNamesTheDialError(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	url := srv.ClientURL()
	srv.Shutdown()
	srv.WaitForShutdown()
	_, err := natsprobe.Dial(url, 5*time.Second)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "connection refused")
}
