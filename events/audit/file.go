package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// File is an audit file opened for appending. Opening it locks it against a
// second writer and removes a torn last line, so that what it holds is a
// sequence of whole lines, the last of which says how far it got.
type File struct {
	f        *os.File
	path     string
	last     []byte
	hasLast  bool
	repaired int64
}

// chunk is how much of the file is read at a time when looking for the
// last lines from its end.
const chunk = 64 << 10

// OpenFile opens the audit file at path, creating it if need be. A process
// killed while appending may leave a last line without its newline: those
// bytes are cut off, and the cut is synced before anything is appended, so
// that the line is written again whole.
func OpenFile(path string) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening audit file: %w", err)
	}
	af := &File{f: f, path: path}
	if err := af.open(); err != nil {
		return nil, errors.Join(err, f.Close())
	}
	return af, nil
}

func (af *File) open() error {
	if err := lock(af.f); err != nil {
		return fmt.Errorf("locking %s: %w", af.path, err)
	}
	if err := syncDir(filepath.Dir(af.path)); err != nil {
		return fmt.Errorf("syncing the directory of %s: %w", af.path, err)
	}
	st, err := af.f.Stat()
	if err != nil {
		return fmt.Errorf("reading %s: %w", af.path, err)
	}
	size := st.Size()
	end, err := lastIndexNewline(af.f, size)
	if err != nil {
		return fmt.Errorf("reading %s: %w", af.path, err)
	}
	if whole := end + 1; whole < size {
		if err := af.f.Truncate(whole); err != nil {
			return fmt.Errorf("removing the torn last line of %s: %w", af.path, err)
		}
		if err := af.f.Sync(); err != nil {
			return fmt.Errorf("removing the torn last line of %s: %w", af.path, err)
		}
		af.repaired = size - whole
	}
	if end < 0 {
		return nil
	}
	start, err := lastIndexNewline(af.f, end)
	if err != nil {
		return fmt.Errorf("reading %s: %w", af.path, err)
	}
	af.last = make([]byte, end-start-1)
	if _, err := af.f.ReadAt(af.last, start+1); err != nil {
		return fmt.Errorf("reading the last line of %s: %w", af.path, err)
	}
	af.hasLast = true
	return nil
}

// lastIndexNewline returns the offset of the last newline before offset
// end, or -1 if there is none.
func lastIndexNewline(r io.ReaderAt, end int64) (int64, error) {
	buf := make([]byte, chunk)
	for end > 0 {
		n := min(int64(chunk), end)
		off := end - n
		if _, err := r.ReadAt(buf[:n], off); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return off + int64(i), nil
		}
		end = off
	}
	return -1, nil
}

// Write appends p, which holds whole lines.
func (af *File) Write(p []byte) (int, error) { return af.f.Write(p) }

// Sync commits what was written to stable storage.
func (af *File) Sync() error { return af.f.Sync() }

// Close releases the file and its lock.
func (af *File) Close() error { return af.f.Close() }

// Path is the file's name, as opened.
func (af *File) Path() string { return af.path }

// LastLine returns the file's last whole line without its newline, and
// false when the file holds no line.
func (af *File) LastLine() ([]byte, bool) { return af.last, af.hasLast }

// Repaired returns how many bytes of a torn last line opening removed.
func (af *File) Repaired() int64 { return af.repaired }
