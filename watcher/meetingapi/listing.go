package meetingapi

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/meetwatch/meetwatch/snapshot"
)

// List fetches every page and returns the complete snapshot.
//
// Offset paging over a live list is not a consistent read: a meeting that
// ends near the front between two page requests shifts every later record
// forward. So a listing whose count moved, that repeated a confUUID, or
// whose distinct records do not number its count is taken again, up to
// ListAttempts times, before the poll is given up. No snapshot is better
// than a partial one: a meeting a partial listing missed would look ended.
func (c *Client) List(ctx context.Context) (snapshot.Snapshot, error) {
	return c.listConsistent(ctx, c.cfg.SearchKey)
}

// Confirm asks the API about one meeting that a listing no longer holds,
// with the same list filtered by its meeting ID. It returns the current
// record and true while the meeting is still ongoing, and false once the
// API confirms it is gone. A meeting without a conferenceID cannot be
// looked up; the complete listing is then the only word, and it is gone.
func (c *Client) Confirm(ctx context.Context, m snapshot.Meeting) (snapshot.Meeting, bool, error) {
	if m.ConferenceID == "" {
		return snapshot.Meeting{}, false, nil
	}
	snap, err := c.listConsistent(ctx, m.ConferenceID)
	if err != nil {
		return snapshot.Meeting{}, false, fmt.Errorf("confirming the end of %s: %w", m.UUID, err)
	}
	cur, ok := snap[m.UUID]
	return cur, ok, nil
}

// listConsistent takes listings filtered by searchKey until one is
// consistent, up to ListAttempts times.
func (c *Client) listConsistent(ctx context.Context, searchKey string) (snapshot.Snapshot, error) {
	var err error
	for attempt := 1; attempt <= c.cfg.ListAttempts; attempt++ {
		var snap snapshot.Snapshot
		snap, err = c.listOnce(ctx, searchKey)
		if err == nil || !(errors.Is(err, ErrInconsistent) || errors.Is(err, ErrIncomplete)) || ctx.Err() != nil {
			return snap, err
		}
		c.logger.Debug("listing changed while it was read; listing again", "search_key", searchKey, "attempt", attempt, "err", err)
	}
	return nil, fmt.Errorf("after %d attempts: %w", c.cfg.ListAttempts, err)
}

// listOnce takes one listing: the first page tells the count, the rest are
// fetched with bounded concurrency.
func (c *Client) listOnce(ctx context.Context, searchKey string) (snapshot.Snapshot, error) {
	first, err := c.fetchPage(ctx, searchKey, 0, c.cfg.PageSize)
	if err != nil {
		return nil, err
	}
	count := first.Count
	// The server echoes the limit it applied; a gateway that caps pages
	// below what was asked must not leave gaps between them.
	step := c.cfg.PageSize
	if first.Limit > 0 && first.Limit < step {
		step = first.Limit
	}
	snap := make(snapshot.Snapshot, min(count, maxPrealloc))
	var mu sync.Mutex
	add := func(p Page) error {
		if p.Count != count {
			return fmt.Errorf("%w: count moved from %d to %d at offset %d", ErrInconsistent, count, p.Count, p.Offset)
		}
		if p.Null && p.Offset < count {
			return fmt.Errorf("%w: data is null at offset %d of %d", ErrIncomplete, p.Offset, count)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, m := range p.Records {
			if _, dup := snap[m.UUID]; dup {
				return fmt.Errorf("%w: confUUID %s listed twice", ErrInconsistent, m.UUID)
			}
			snap[m.UUID] = m
		}
		return nil
	}
	if err := add(first); err != nil {
		return nil, err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Concurrency)
	for off := step; off < count; off += step {
		g.Go(func() error {
			p, err := c.fetchPage(gctx, searchKey, off, step)
			if err != nil {
				return err
			}
			return add(p)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if len(snap) != count {
		return nil, fmt.Errorf("%w: %d distinct meetings listed, count is %d", ErrIncomplete, len(snap), count)
	}
	return snap, nil
}
