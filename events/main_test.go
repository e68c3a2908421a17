package events_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine the publisher started outlives
// its tests: every goroutine must have an owner that stops it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
