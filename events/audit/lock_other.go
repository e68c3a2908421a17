//go:build !unix

package audit

import "os"

// lock does nothing where flock is not available: run one audit per file.
func lock(*os.File) error { return nil }

// syncDir does nothing where a directory cannot be synced.
func syncDir(string) error { return nil }
