package main

import (
	"net"
	"os"
	"strconv"
	"time"
)

// HA holds the settings for running several replicas side by side and for
// the probes an orchestrator asks. It is exported because the configuration
// reader only fills exported embedded structs.
type HA struct {
	Replicas    int           `env:"REPLICAS" envDefault:"1" desc:"replicas of the stream and the buckets, 1 to 5 (3 on a three-node cluster)"`
	LeaseTTL    time.Duration `env:"LEASE_TTL" envDefault:"10s" desc:"the leader lease, at least 1s; after a leader dies, failover takes about this long"`
	LeaseBucket string        `env:"LEASE_BUCKET" envDefault:"meetwatch-lease" desc:"the key-value bucket holding the lease"`
	ReplicaID   string        `env:"REPLICA_ID" help:"<host name>-<process id>" desc:"this replica's name in the lease and the logs"`
	// HTTPAddr has no envDefault: the configuration reader takes a
	// variable set empty for unset, and empty turns the probes off.
	// loadConfig applies defaultHTTPAddr when it is unset.
	HTTPAddr string `env:"HTTP_ADDR" help:":9464; set empty to turn the probes off" desc:"where /healthz, /readyz and /metrics are served"`
}

// defaultHTTPAddr is where the probes listen when MEETWATCH_HTTP_ADDR is
// not set at all.
const defaultHTTPAddr = ":9464"

func (h HA) validate() error {
	switch {
	case h.Replicas < 1 || h.Replicas > 5:
		return bad("Replicas", "must be 1 to 5 (3 on a cluster), got %d", h.Replicas)
	case h.LeaseTTL < time.Second:
		return bad("LeaseTTL", "must be at least 1s, got %s", h.LeaseTTL)
	case !streamName.MatchString(h.LeaseBucket):
		return bad("LeaseBucket", "%q: use letters, digits, - and _", h.LeaseBucket)
	}
	if h.HTTPAddr != "" {
		if _, port, err := net.SplitHostPort(h.HTTPAddr); err != nil {
			return bad("HTTPAddr", "want host:port or :port, got %q", h.HTTPAddr)
		} else if _, err := strconv.Atoi(port); err != nil {
			return bad("HTTPAddr", "bad port in %q", h.HTTPAddr)
		}
	}
	return nil
}

// replicaID names this replica in the lease and the logs: the configured
// id, or host and process, which tells replicas on one host apart.
func (h HA) replicaID() string {
	if h.ReplicaID != "" {
		return h.ReplicaID
	}
	host, err := os.Hostname()
	if err != nil {
		host = "meetwatch"
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}
