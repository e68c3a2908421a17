//go:build unix

package audit

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lock takes an exclusive lock on f for as long as it is open, failing at
// once if another process holds it: two writers would interleave their
// lines. The kernel releases it when the process dies, even by SIGKILL.
func lock(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return ErrLocked
	}
	if err != nil {
		return fmt.Errorf("flock: %w", err)
	}
	return nil
}

// syncDir makes the file's entry in dir durable, so that a file just
// created does not vanish with a crash of the machine.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
