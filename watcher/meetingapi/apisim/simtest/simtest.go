// Package simtest is test support around the meeting API simulator: a
// reproducible seed for randomised tests, a simulator (or any handler)
// reached over in-memory connections, so that tests of time logic can run
// inside a testing/synctest bubble, where real sockets would stop fake
// time, and a buffer that collects the logs of concurrent code.
//
// Only tests import it; the meetwatch binary does not.
package simtest

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// SeedVar names the environment variable that overrides the default seed
// of every randomised test, to replay or explore a run.
const SeedVar = "MEETWATCH_TEST_SEED"

// Seed returns the seed a randomised test should use: def, the test's own
// fixed default, unless MEETWATCH_TEST_SEED sets another. It logs the seed
// and how to replay it, so that a failure in CI can be reproduced.
func Seed(tb testing.TB, def uint64) uint64 {
	tb.Helper()
	seed := def
	if v := os.Getenv(SeedVar); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			tb.Fatalf("%s=%q: want an unsigned integer", SeedVar, v)
		}
		seed = n
	}
	tb.Logf("seed %d (%s=%d replays it)", seed, SeedVar, seed)
	return seed
}

// Pipe is a handler served over in-memory connections (net.Pipe): no
// socket, no port, so a test may run it inside a synctest bubble. Client
// returns an *http.Client that reaches it at URL.
type Pipe struct {
	// URL is the address to give the client under test; only Client, or a
	// transport that dials with Dial, can reach it.
	URL string
	// Sim is the simulator behind the pipe, when NewPipe made it.
	Sim *apisim.Sim

	l      *pipeListener
	srv    *http.Server
	served chan struct{}
}

// NewPipe starts a simulator on a Pipe and closes it when the test ends.
// Inside a synctest bubble, call it inside the bubble, so that its
// goroutines belong there.
func NewPipe(tb testing.TB, opts apisim.Options) *Pipe {
	tb.Helper()
	sim := apisim.New(opts)
	p := Serve(tb, sim)
	p.Sim = sim
	return p
}

// Serve starts h on a Pipe, for a server the simulator cannot play, and
// closes it when the test ends.
func Serve(tb testing.TB, h http.Handler) *Pipe {
	tb.Helper()
	p := &Pipe{
		URL:    "http://apisim.test",
		l:      &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})},
		srv:    &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		served: make(chan struct{}),
	}
	go func() {
		defer close(p.served)
		_ = p.srv.Serve(p.l) // ends with ErrServerClosed at Close
	}()
	tb.Cleanup(p.Close)
	return p
}

// Client returns an HTTP client whose every connection is a new in-memory
// pipe to the server.
func (p *Pipe) Client() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: p.Dial}}
}

// Dial opens a new in-memory connection to the server, whatever the
// address: it is an http.Transport's DialContext.
func (p *Pipe) Dial(ctx context.Context, _, _ string) (net.Conn, error) { return p.l.dial(ctx) }

// Close stops the server and waits for it. It is idempotent.
func (p *Pipe) Close() {
	_ = p.srv.Close() // its only error would be the listener's, which cannot fail
	<-p.served
}

// pipeListener hands the server ends of net.Pipe connections to Serve.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "apisim.test:80" }

// Buffer collects what concurrent code writes, such as a logger's lines
// or a process's output, for a test to read while it is written.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Lines returns the complete lines written so far.
func (b *Buffer) Lines() []string {
	s := b.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}
