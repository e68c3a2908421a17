// Package natsembed runs a nats-server with JetStream inside the meetwatch
// process, so that a first run needs no NATS deployment, and so that tests
// run against the real server rather than a fake.
package natsembed

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultListen is where the embedded server listens by default: loopback
// only, on NATS's standard port, so that `meetwatch tail` and the nats CLI
// find it without configuration.
const DefaultListen = "127.0.0.1:4222"

// Options configures an embedded server.
type Options struct {
	// Listen is host:port for clients; port 0 picks a free one.
	Listen string
	// StoreDir holds JetStream's files.
	StoreDir string
	// ServerName names the server; empty lets nats-server choose.
	ServerName string
}

// ParseListen checks a host:port listen address and returns its port.
func ParseListen(listen string) (int, error) {
	_, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return 0, fmt.Errorf("listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return 0, fmt.Errorf("listen address %q: bad port", listen)
	}
	return port, nil
}

// Start starts a server and waits until it accepts connections.
func Start(opts Options) (*server.Server, error) {
	port, err := ParseListen(opts.Listen)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(opts.Listen)
	if port == 0 {
		port = server.RANDOM_PORT
	} else {
		// nats-server reports a taken port only through its logger, after
		// which readiness would time out: fail fast with a clear reason.
		l, err := net.Listen("tcp", opts.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats cannot listen on %s: %w", opts.Listen, err)
		}
		l.Close()
	}
	s, err := server.NewServer(&server.Options{
		ServerName: opts.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   opts.StoreDir,
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("configuring embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		Stop(s)
		return nil, fmt.Errorf("embedded nats did not become ready on %s (is the port in use?)", opts.Listen)
	}
	return s, nil
}

// Stop shuts s down and waits until it has, so that its files are closed
// before the caller removes or reuses them.
func Stop(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}
