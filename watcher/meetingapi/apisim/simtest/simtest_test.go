package simtest_test

import (
	"io"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

func TestPipeServesTheSimulatorInsideABubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := simtest.NewPipe(t, apisim.Options{Token: "tok"})
		p.Sim.AddN(3)
		start := time.Now()
		time.Sleep(time.Hour) // fake time: returns at once
		assert.Equal(t, time.Hour, time.Since(start))

		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, p.URL+apisim.Path+"?limit=500", nil)
		require.NoError(t, err)
		req.Header.Set("X-Access-Token", "tok")
		resp, err := p.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		assert.Contains(t, string(body), `"count":3`)
	})
}

func TestSeedDefaultsAndOverrides(t *testing.T) {
	assert.Equal(t, uint64(7), simtest.Seed(t, 7))
	t.Setenv(simtest.SeedVar, "42")
	assert.Equal(t, uint64(42), simtest.Seed(t, 7))
}
