package ha_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine a Lease or the probes
// started outlives its tests: every goroutine must have an owner that
// stops it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
