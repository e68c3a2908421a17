package main

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
)

// natsSecurity returns the security options for connecting to
// MEETWATCH_NATS_URL, or none when it is empty: then the server is the
// embedded one, which takes no credentials and speaks no TLS (see
// events.NATSAuth). Settings left over in that case are named in a warning,
// since they suggest MEETWATCH_NATS_URL was meant to be set.
func natsSecurity(cfg config, logger *slog.Logger) ([]nats.Option, error) {
	if cfg.NATSURL == "" {
		if names := varNames(cfg.NATSAuth.Set()); len(names) > 0 {
			logger.Warn("nats security settings ignored: they apply only with "+varName("NATSURL"), "vars", strings.Join(names, ","))
		}
		return nil, nil
	}
	return cfg.NATSAuth.Options()
}

// natsAuthError turns the NATS settings' error into a configuration error
// that names the variables.
func natsAuthError(err error) error {
	var se *events.SettingError
	if errors.As(err, &se) {
		return &configError{Var: strings.Join(varNames(se.Fields), ", "), Msg: se.Msg}
	}
	return err
}

func varNames(fields []string) []string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = varName(f)
	}
	return names
}

// dialNATS connects a command that reads what meetwatch wrote (tail, ls,
// audit, notify) with the NATS settings of meetwatch run,
// MEETWATCH_NATS_URL defaulting to a local server, reconnecting for as
// long as it runs.
func dialNATS(cfg config, name string, logger *slog.Logger, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	url := cmp.Or(cfg.NATSURL, defaultNATSURL)
	security, err := natsSecurity(cfg, logger)
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(url, append(append(security, nats.Name(name), nats.MaxReconnects(-1)), opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to %s: %w", redactURLs(url), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("opening jetstream: %w", err)
	}
	return nc, js, nil
}
