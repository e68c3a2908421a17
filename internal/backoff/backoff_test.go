package backoff_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/meetwatch/meetwatch/internal/backoff"
)

func TestBackoffDoublesCapsAndResets(t *testing.T) {
	top := func(n int64) int64 { return n - 1 } // the longest wait jitter allows
	b := backoff.Backoff{Base: 100 * time.Millisecond, Max: time.Second, Jitter: top}
	var got []time.Duration
	for range 6 {
		got = append(got, b.Next())
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	assert.Equal(t, want, got)
	assert.Equal(t, 6, b.Failures())

	b.Reset()
	assert.Equal(t, 100*time.Millisecond, b.Next(), "a success starts the sequence again")
}

func TestBackoffJitterStaysInTheUpperHalf(t *testing.T) {
	b := backoff.Backoff{Base: time.Second, Max: time.Minute}
	for i := range 200 {
		d := b.Next()
		ceil := time.Minute
		if i < 6 {
			ceil = time.Second << i
		}
		assert.GreaterOrEqual(t, d, ceil/2, "attempt %d", i)
		assert.LessOrEqual(t, d, ceil, "attempt %d", i)
	}
}

func TestBackoffLowestJitter(t *testing.T) {
	b := backoff.Backoff{Base: 10 * time.Second, Max: time.Minute, Jitter: func(int64) int64 { return 0 }}
	assert.Equal(t, 5*time.Second, b.Next())
	assert.Equal(t, 10*time.Second, b.Next())
}
