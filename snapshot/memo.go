package snapshot

import (
	"bytes"
	"hash/maphash"
	"sync"
)

// ReadFunc makes a Meeting of one record's bytes as the API sent them,
// without keeping raw, which the caller may reuse. ParseMeeting is one; a
// Memo's Read is a faster one for repeated listings.
type ReadFunc func(raw []byte) (Meeting, error)

// Memo reads the records of successive listings and remembers what it made
// of each record's bytes. From one listing to the next nearly every record
// comes back byte for byte, so those are neither parsed nor fitted again,
// and the new snapshot shares their memory with the one before it: a
// steady poll costs the hashing of the listing, not its decoding, and holds
// one copy of the records, not two.
//
// Records are told apart by two independently seeded 64-bit hashes of their
// bytes; two different records of one listing share both with a probability
// near 2^-128 times the square of its size.
//
// A Memo is safe for concurrent use by the page fetchers of one listing.
type Memo struct {
	fit  func(Meeting) (Meeting, error)
	seed [2]maphash.Seed

	mu sync.Mutex
	// kept holds the records of the last complete listing; seen, those
	// read since.
	kept, seen map[memoKey]Meeting
	// prior is the snapshot the listing will be diffed against; it is
	// only read.
	prior Snapshot
}

type memoKey [2]uint64

// maxFirstListing bounds what a Memo remembers before its first Keep.
const maxFirstListing = 250_000

// NewMemo returns a Memo that passes every record it parses through fit
// (sealing secrets, trimming), or keeps it as parsed when fit is nil. fit
// must return the Meeting it is given as it is, or one whose record it
// made anew: the record it is given may still be the caller's buffer,
// which Read copies only when fit kept it.
func NewMemo(fit func(Meeting) (Meeting, error)) *Memo {
	return &Memo{
		fit:  fit,
		seed: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		kept: map[memoKey]Meeting{},
		seen: map[memoKey]Meeting{},
	}
}

// Read returns the Meeting made of raw: the one made before when the last
// complete listing, or this one, held the same bytes; otherwise it parses
// raw with ParseMeeting and fits it.
func (m *Memo) Read(raw []byte) (Meeting, error) {
	k := memoKey{maphash.Bytes(m.seed[0], raw), maphash.Bytes(m.seed[1], raw)}
	m.mu.Lock()
	got, ok := m.seen[k]
	if !ok {
		if got, ok = m.kept[k]; ok {
			m.seen[k] = got
		}
	}
	m.mu.Unlock()
	if ok {
		return got, nil
	}
	// raw is the caller's to reuse: the record is copied once, at the end,
	// unless fit made it anew or prior holds it already.
	parsed, shared, err := parseMeeting(raw, true)
	if err != nil {
		return Meeting{}, err
	}
	rec := parsed
	if m.fit != nil {
		if rec, err = m.fit(rec); err != nil {
			return Meeting{}, err
		}
	}
	m.mu.Lock()
	old, ok := m.prior[rec.UUID]
	m.mu.Unlock()
	switch {
	case ok && old.Same(rec):
		rec = old // the same record, held once
	case shared && len(rec.raw) > 0 && &rec.raw[0] == &parsed.raw[0]: // fit kept it as it was
		rec.raw = bytes.Clone(rec.raw)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Listings that fail before they complete add what changed each time;
	// past twice the last listing, or a first listing's most, remembering
	// it is not worth the memory.
	if len(m.seen) >= max(2*len(m.kept), maxFirstListing) {
		clear(m.seen)
	}
	m.seen[k] = rec
	return rec, nil
}

// Prior tells m the snapshot that the next listing is compared with, so
// that a record it has to parse (after a restart, every record) but that
// turns out the same as prior's is returned as prior's, and the listing
// holds no second copy of it. prior must not change while m reads.
func (m *Memo) Prior(prior Snapshot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.prior = prior
}

// Keep marks the records read since the last Keep as a complete listing:
// the next listing is read against them alone, and older ones are
// forgotten. The map of the older ones is emptied and reused for the
// next listing, which is about as large: at 100,000 meetings, a new one
// each poll would be 15 MB more for the collector.
func (m *Memo) Keep() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.kept, m.seen = m.seen, m.kept
	clear(m.seen)
}
