package audit_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/audit"
)

func TestOpenFileRepairsTheTornLastLine(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("y", 150<<10) // longer than the chunks the end is read in
	tests := []struct {
		name         string
		content      string
		wantContent  string
		wantLast     string
		wantHasLast  bool
		wantRepaired int64
	}{
		{name: "new file"},
		{name: "whole lines", content: "a\nbc\n", wantContent: "a\nbc\n", wantLast: "bc", wantHasLast: true},
		{name: "one whole line", content: "abc\n", wantContent: "abc\n", wantLast: "abc", wantHasLast: true},
		{name: "torn last line", content: "a\nbc\nde", wantContent: "a\nbc\n", wantLast: "bc", wantHasLast: true, wantRepaired: 2},
		{name: "torn first line", content: "{\"id\":", wantContent: "", wantRepaired: 6},
		{name: "empty last line", content: "a\n\n", wantContent: "a\n\n", wantLast: "", wantHasLast: true},
		{name: "long lines", content: long + "\n" + long + "x\n" + long, wantContent: long + "\n" + long + "x\n",
			wantLast: long + "x", wantHasLast: true, wantRepaired: int64(len(long))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			if tt.content != "" {
				require.NoError(t, os.WriteFile(path, []byte(tt.content), 0o600))
			}
			f, err := audit.OpenFile(path)
			require.NoError(t, err)
			last, ok := f.LastLine()
			assert.Equal(t, tt.wantHasLast, ok)
			assert.Equal(t, tt.wantLast, string(last))
			assert.Equal(t, tt.wantRepaired, f.Repaired())

			_, err = f.Write([]byte("next\n"))
			require.NoError(t, err)
			require.NoError(t, f.Sync())
			require.NoError(t, f.Close())
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, tt.wantContent+"next\n", string(got), "appended after the whole lines")
		})
	}
}

func TestOpenFileIsExclusive(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	f, err := audit.OpenFile(path)
	require.NoError(t, err)
	_, err = audit.OpenFile(path)
	require.ErrorIs(t, err, audit.ErrLocked)
	require.NoError(t, f.Close())
	g, err := audit.OpenFile(path)
	require.NoError(t, err, "the lock goes with the file")
	require.NoError(t, g.Close())
}
