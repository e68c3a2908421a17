package chat_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a goroutine outlives its tests: a Sender
// waits and retries, and must stop when its context ends.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
