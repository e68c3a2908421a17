package meetingapi_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// A login outlives a caller that gave up on it, so it needs an owner: Close
// stops it and waits for it, and no login starts afterwards. In fake time, a
// Close that did not stop the login would wait for its 30s bound.
func TestCloseStopsTheLoginInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := simtest.NewPipe(t, apisim.Options{Account: "owner", Password: "pw"})
		p.Sim.SetHook(func(r *http.Request) *apisim.Fault {
			// Reading the body lets the server see the client hang up, as
			// it does once a handler has read what was sent, so that the
			// delayed answer ends with the request.
			b, err := io.ReadAll(r.Body)
			assert.NoError(t, err)
			r.Body = io.NopCloser(bytes.NewReader(b))
			return &apisim.Fault{Delay: time.Hour}
		})
		src := meetingapi.NewAccountLogin(
			meetingapi.LoginConfig{BaseURL: p.URL, HTTPClient: p.Client()},
			meetingapi.AccountCredentials{Account: "owner", Password: redact.NewSecret("pw")},
		)

		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := src.Token(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded, "the caller gives up on its own context")
		assert.Equal(t, 50*time.Millisecond, time.Since(start))

		closing := time.Now()
		src.Close()
		assert.Zero(t, time.Since(closing), "Close stops the login still waiting for its answer")
		src.Close() // idempotent

		_, err = src.Token(t.Context())
		assert.ErrorIs(t, err, meetingapi.ErrLoginFailed, "no login after Close")
		assert.Zero(t, p.Sim.Logins())
	})
}
