package meetingapi

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sync/errgroup"

	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
)

// DefaultOverlap is how many records each page re-reads of the one before
// it when nothing else is configured.
const DefaultOverlap = 20

// List fetches every page and returns the complete snapshot.
//
// Offset paging over a live list is not a consistent read: a meeting that
// ends ahead of a page between two page requests shifts every later record
// forward, and a record could slip between two pages unseen, to look ended.
// So every page starts Overlap+1 records before the previous one ends, and
// the listing holds only if each page's first record is one the page before
// it returned: then no record can have slipped between them, whatever ended
// meanwhile. A listing that fails that check, or whose last page does not
// reach the end of the list, is taken again, up to ListAttempts times,
// before the poll is given up. No snapshot is better than a partial one.
//
// Each record is made a Meeting by read, in the goroutine that fetched its
// page; nil means snapshot.ParseMeeting. planned, when set, hears once,
// after the first page, how many requests the listing takes and in how
// many rounds of Concurrency pages.
func (c *Client) List(ctx context.Context, read snapshot.ReadFunc, planned func(watcher.Plan)) (snapshot.Snapshot, error) {
	return c.listConsistent(ctx, c.cfg.SearchKey, read, planned)
}

// Confirm asks the API about one meeting that a listing no longer holds,
// with the same list filtered by its meeting ID. It returns the current
// record and true while the meeting is still ongoing, and false once the
// API confirms it is gone. A meeting without a conferenceID cannot be
// looked up: Confirm fails with ErrNoLookup, and the next complete listing
// settles it, as it does when a lookup fails. Neither can any meeting
// while the listings are filtered by a SearchKey: the lookup filters by
// the meeting's ID instead, and would find a meeting that left the
// filtered list (renamed, say) still ongoing, poll after poll, where the
// listings end it.
//
// A lookup only speeds an end up (the next complete listing settles it
// anyway), so it is never worth waiting for: when the request budget has
// no room for it now, Confirm fails at once with ErrNoBudget, and so do
// lookups that found room together once the room is taken.
func (c *Client) Confirm(ctx context.Context, m snapshot.Meeting, read snapshot.ReadFunc) (snapshot.Meeting, bool, error) {
	switch {
	case m.ConferenceID == "":
		return snapshot.Meeting{}, false, fmt.Errorf("confirming the end of %s: it has no conferenceID: %w", m.UUID, ErrNoLookup)
	case c.cfg.SearchKey != "":
		return snapshot.Meeting{}, false, fmt.Errorf("confirming the end of %s: the listings are filtered by a search key: %w", m.UUID, ErrNoLookup)
	}
	if b := c.cfg.Budget; b != nil && b.Tokens() < 1 {
		return snapshot.Meeting{}, false, fmt.Errorf("confirming the end of %s: %w", m.UUID, ErrNoBudget)
	}
	snap, err := c.listConsistent(context.WithValue(ctx, lookupKey{}, true), m.ConferenceID, read, nil)
	if err != nil {
		return snapshot.Meeting{}, false, fmt.Errorf("confirming the end of %s: %w", m.UUID, err)
	}
	cur, ok := snap[m.UUID]
	return cur, ok, nil
}

// listConsistent takes listings filtered by searchKey until one is
// consistent, up to ListAttempts times; the first tells planned.
func (c *Client) listConsistent(ctx context.Context, searchKey string, read snapshot.ReadFunc, planned func(watcher.Plan)) (snapshot.Snapshot, error) {
	var err error
	for attempt := 1; attempt <= c.cfg.ListAttempts; attempt++ {
		var snap snapshot.Snapshot
		snap, err = c.listOnce(ctx, searchKey, read, planned)
		planned = nil
		if err == nil || !(errors.Is(err, ErrInconsistent) || errors.Is(err, ErrIncomplete)) || ctx.Err() != nil {
			return snap, err
		}
		c.logger.Debug("listing changed while it was read; listing again", "search_key", searchKey, "attempt", attempt, "err", err)
	}
	return nil, fmt.Errorf("after %d attempts: %w", c.cfg.ListAttempts, err)
}

// listOnce takes one listing: the first page tells the count, and
// planned, when set, what the listing takes; the rest are fetched with
// bounded concurrency, each window starting Overlap records before the
// previous one ends, and joined in order as they arrive, so that the
// listing is checked and its snapshot built by the time its last page is
// in.
func (c *Client) listOnce(ctx context.Context, searchKey string, read snapshot.ReadFunc, planned func(watcher.Plan)) (snapshot.Snapshot, error) {
	first, err := c.fetchPage(ctx, searchKey, 0, c.cfg.PageSize, read, nil)
	if err != nil {
		return nil, err
	}
	// The server echoes the limit it applied; a gateway that caps pages
	// below what was asked must not leave gaps between them.
	limit := c.limit(first)
	overlap, stride := windows(limit, c.cfg.Overlap)
	j := newJoin(first.Count, limit, overlap)
	if err := j.add(first); err != nil {
		return nil, err
	}

	// Page k covers [k*stride, k*stride+limit): it is needed while the
	// page before it ends short of the count.
	var offsets []int
	for off := stride; off-stride+limit < first.Count; off += stride {
		offsets = append(offsets, off)
	}
	if planned != nil {
		planned(watcher.Plan{Requests: 1 + len(offsets), Rounds: (len(offsets) + c.cfg.Concurrency - 1) / c.cfg.Concurrency})
	}
	// Concurrency requests in flight, and as many pages more being
	// decoded: a page's decoding does not hold up the next request. One
	// more goroutine joins the pages in order, each once it is decoded.
	rest := make([]Page, len(offsets))
	decoded := make([]chan struct{}, len(offsets))
	slots := make(chan struct{}, c.cfg.Concurrency)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2*c.cfg.Concurrency + 1)
	for i := range decoded {
		decoded[i] = make(chan struct{})
	}
	g.Go(func() error {
		for i, ready := range decoded {
			select {
			case <-ready:
			case <-gctx.Done():
				return context.Cause(gctx)
			}
			if err := j.add(rest[i]); err != nil {
				return err
			}
			rest[i] = Page{} // its records are in the snapshot now
		}
		return nil
	})
	for i, off := range offsets {
		if gctx.Err() != nil {
			break // a page failed, or did not join: the listing is over
		}
		g.Go(func() error {
			p, err := c.fetchPage(gctx, searchKey, off, limit, read, slots)
			if err != nil {
				return err
			}
			rest[i] = p
			close(decoded[i])
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	// Meetings that started meanwhile lengthen the list: follow it to its
	// end, one page at a time, within what a count may claim.
	for pages := 1 + len(offsets); !reachesEnd(j.last) && len(j.last.Records) == limit; pages++ {
		if pages > maxCount/stride+1 {
			return nil, fmt.Errorf("%w: the list kept growing past %d pages", ErrInconsistent, pages)
		}
		p, err := c.fetchPage(ctx, searchKey, j.last.Offset+stride, limit, read, nil)
		if err != nil {
			return nil, err
		}
		if err := j.add(p); err != nil {
			return nil, err
		}
	}
	return j.done()
}

// windows returns the overlap a listing of pages of limit records can keep
// and the stride between the pages' offsets. Windows share overlap+1
// records, so that a shift of up to overlap still leaves one record the
// two pages both hold: it proves nothing lies between them. A page too
// small to share records has no overlap.
func windows(limit, overlap int) (kept, stride int) {
	overlap = min(overlap, limit/2)
	stride = limit - overlap - 1
	if overlap <= 0 || stride < 1 {
		return 0, limit
	}
	return overlap, stride
}

// pagesAfterFirst returns how many pages a listing of count records takes
// after its first, when the list holds still.
func pagesAfterFirst(count, limit, overlap int) int {
	if count <= limit {
		return 0
	}
	_, stride := windows(limit, overlap)
	return (count - limit + stride - 1) / stride
}

// reachesEnd reports whether p's records run to the end of the list as the
// API counted it when it served p.
func reachesEnd(p Page) bool { return p.Offset+len(p.Records) >= p.Count }

// join checks that consecutive pages of a listing join up, and builds
// their union, a page at a time in the listing's order.
//
// With an overlap, each page's first record must be one the page before
// returned (or, for an empty page, the page before must have reached the
// end of the list), and the last page must reach the end. Without one,
// nothing shows how pages meet, so the count must not move and the
// distinct records must number it, as a list that did not change would.
// Either way a page shorter than asked that does not reach the end is
// broken, and a confUUID twice on one page is not a list.
type join struct {
	count, limit, overlap int
	snap                  snapshot.Snapshot
	seen                  map[string]bool // the page being added's, emptied for the next
	last                  Page            // the page added last
	pages                 int
}

func newJoin(count, limit, overlap int) *join {
	return &join{
		count: count, limit: limit, overlap: overlap,
		snap: make(snapshot.Snapshot, min(count, maxPrealloc)),
		seen: make(map[string]bool, limit),
	}
}

// add joins p, the page after the one added last, to the listing.
func (j *join) add(p Page) error {
	clear(j.seen)
	for _, m := range p.Records {
		_, before := j.snap[m.UUID]
		if j.seen[m.UUID] || (j.overlap == 0 && before) {
			return fmt.Errorf("%w: confUUID %s listed twice", ErrInconsistent, m.UUID)
		}
		j.seen[m.UUID] = true
		j.snap[m.UUID] = m
	}
	switch {
	case p.Null && p.Offset < p.Count:
		return fmt.Errorf("%w: data is null at offset %d of %d", ErrIncomplete, p.Offset, p.Count)
	case len(p.Records) < j.limit && !reachesEnd(p):
		return fmt.Errorf("%w: %d records at offset %d, count is %d", ErrIncomplete, len(p.Records), p.Offset, p.Count)
	case j.overlap == 0 && p.Count != j.count:
		return fmt.Errorf("%w: count moved from %d to %d at offset %d", ErrInconsistent, j.count, p.Count, p.Offset)
	}
	prev := j.last
	j.last = p
	j.pages++
	if j.pages == 1 || j.overlap == 0 {
		return nil
	}
	switch {
	case len(p.Records) == 0 && !reachesEnd(prev):
		return fmt.Errorf("%w: the list shrank below offset %d before the page ahead of it reached its end", ErrInconsistent, p.Offset)
	case len(p.Records) > 0 && !slices.ContainsFunc(prev.Records, func(m snapshot.Meeting) bool { return m.UUID == p.Records[0].UUID }):
		return fmt.Errorf("%w: the pages at offsets %d and %d do not overlap: the list shifted by more than %d records between them",
			ErrInconsistent, prev.Offset, p.Offset, j.overlap)
	}
	return nil
}

// done returns the listing's snapshot once its last page is added.
func (j *join) done() (snapshot.Snapshot, error) {
	if j.overlap == 0 && len(j.snap) != j.count {
		return nil, fmt.Errorf("%w: %d distinct meetings listed, count is %d", ErrIncomplete, len(j.snap), j.count)
	}
	if !reachesEnd(j.last) {
		return nil, fmt.Errorf("%w: %d records at offset %d, count is %d", ErrIncomplete, len(j.last.Records), j.last.Offset, j.last.Count)
	}
	return j.snap, nil
}
