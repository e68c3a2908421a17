package repo_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/internal/repo"
)

// TestPathFromTheRoot: a path from the repository's root names the file
// there, from a package two directories below it.
func TestPathFromTheRoot(t *testing.T) {
	p, err := repo.Path("internal/repo/repo.go")
	require.NoError(t, err)
	self, err := os.ReadFile("repo.go")
	require.NoError(t, err)
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, self, got)
}

// TestPathWithoutARoot: outside any module, there is no root to find.
func TestPathWithoutARoot(t *testing.T) {
	t.Chdir(t.TempDir())
	_, err := repo.Path("go.mod")
	assert.ErrorContains(t, err, "no go.mod above the working directory")
}
