// Package repo finds files of this repository from a test, wherever the
// test's package sits: a test reads a fixture that another package owns
// by its path from the repository's root, rather than by a chain of
// "../" that breaks when either package moves.
package repo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Path returns the path of rel, a slash-separated path from the root of
// the repository: the nearest directory above the working directory that
// holds go.mod.
func Path(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository's root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, filepath.FromSlash(rel)), nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("finding the repository's root: %w", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding the repository's root: no go.mod above the working directory")
		}
		dir = parent
	}
}
