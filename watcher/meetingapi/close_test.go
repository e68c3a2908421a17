package meetingapi_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// A login outlives a caller that gave up on it, so it needs an owner: Close
// stops it and waits for it, and no login starts afterwards.
func TestCloseStopsTheLoginInFlight(t *testing.T) {
	srv := apisim.NewServer(apisim.Options{Account: "owner", Password: "pw"})
	t.Cleanup(srv.Close)
	srv.Sim.SetHook(func(*http.Request) *apisim.Fault { return &apisim.Fault{Delay: time.Hour} })
	src := meetingapi.NewAccountLogin(
		meetingapi.LoginConfig{BaseURL: srv.URL, HTTPClient: &http.Client{}},
		meetingapi.AccountCredentials{Account: "owner", Password: redact.NewSecret("pw")},
	)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := src.Token(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "the caller gives up on its own context")

	closed := make(chan struct{})
	go func() {
		src.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		require.FailNow(t, "Close did not stop the login that was still waiting for its answer")
	}
	src.Close() // idempotent

	_, err = src.Token(t.Context())
	assert.ErrorIs(t, err, meetingapi.ErrLoginFailed, "no login after Close")
}
