// Package apisim simulates the Huawei Cloud Meeting ongoing-meeting API, the
// way net/http/httptest simulates a server: a Sim is an http.Handler that
// answers GET /v1/mmc/management/conferences/online from an in-memory list of
// meetings, and a Server puts one on a loopback port. It also answers the two
// logins that issue access tokens (App ID and account), so that a client's
// token handling (caching, renewal before expiry, logging in again after a
// 401) can be tested against tokens that really expire.
//
// It exists because the real API needs an enterprise account, cannot be told
// to fail, and never changes on cue. The simulator does all three: callers
// add, change and end meetings at will (or let Step do it at random, as live
// meetings do), and faults can be injected per request, so the watcher can be
// shown and tested against paging, churn between page requests, bad tokens,
// slow answers and broken bodies.
//
// The simulator follows the API reference: offset and limit paging (limit 20
// by default, at most 500), records sorted by start time ascending, the
// queryAll and searchKey parameters, the X-Access-Token header, the
// {"offset","limit","count","data"} body, the HMAC-signed App ID login and
// the Basic-authenticated account login, JSON errors carrying error_code,
// error_msg and request_id, and an X-Request-Id header on every response.
// Where the reference is silent (which error code a bad parameter gets, how
// meetings that start in the same minute are ordered) the simulator makes a
// plausible choice and says so.
//
// A Multi serves several accounts from one listener, each its own Sim,
// and routes every request by the credentials it carries, as one API host
// serves many enterprises.
//
// A Sim is safe for concurrent use.
package apisim

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

const (
	// Path is where the real API lists ongoing meetings.
	Path = "/v1/mmc/management/conferences/online"
	// MaxLimit is the largest page the API allows; a larger limit is refused
	// with 400 rather than clamped, so a client that asks for too much finds
	// out.
	MaxLimit = 500
	// DefaultLimit is the page size when a request names none.
	DefaultLimit = 20
)

// Error codes the simulator puts in error_code. Only CodeInvalidToken and
// CodeFlowControl are documented by Huawei; the others are the simulator's
// choice of a plausible code, kept stable so tests can match them.
const (
	// CodeInvalidToken answers a missing, wrong or expired X-Access-Token
	// (HTTP 401); a client should log in again.
	CodeInvalidToken = "USG.000000004"
	// CodeInvalidParam answers a bad offset, limit, queryAll or searchKey
	// (HTTP 400).
	CodeInvalidParam = "MMC.111070001"
	// CodeNoSuchAPI answers a path or method the API does not serve (HTTP 404
	// or 405); it is the code the API gateway uses for unknown routes.
	CodeNoSuchAPI = "APIGW.0101"
	// CodeFlowControl is the server's flow-control code, used for injected
	// 429 faults that name no code.
	CodeFlowControl = "100000429"
	// CodeServerError answers server-side failures (HTTP 5xx and any other
	// injected status that names no code).
	CodeServerError = "MMC.111000001"
)

// Options configures a Sim. The zero value accepts any token, refuses every
// login, lists every meeting, and generates records from seed 0 with the
// wall clock.
type Options struct {
	// Token is an X-Access-Token the simulator accepts, and never expires; a
	// missing or unknown token gets 401 USG.000000004. Tokens issued by a
	// login are accepted too, until they expire. Empty Token with no login
	// configured (AppID and Account empty): any non-empty token is accepted,
	// which is enough when the token itself is not under test. Empty Token
	// with a login configured: only issued tokens are accepted.
	Token string
	// AppID and AppKey are the credentials the App ID login accepts. The
	// login takes any userId and corpId, as an app serves a whole
	// enterprise. Empty AppID: every App ID login is refused.
	AppID, AppKey string
	// Account and Password are the credentials the account login accepts.
	// Empty Account: every account login is refused.
	Account, Password string
	// TokenTTL is how long an issued token is accepted; 0 means 12h, the
	// shortest lifetime the API documents.
	TokenTTL time.Duration
	// AdminUserUUID is the userUUID of the administrator the token belongs
	// to. When queryAll is not "true", only records whose userUUID equals it
	// are listed (an admin's own meetings), as the real API does. Empty:
	// queryAll=false lists everything. Generated meetings draw their owner
	// from a small pool of users that includes this one.
	AdminUserUUID string
	// Seed seeds generated records (math/rand/v2 PCG): same seed, same
	// records, so a run can be replayed.
	Seed int64
	// Now is the clock for startTime and endTime of generated records, for
	// the expiry of issued tokens, and for the expireTime of login
	// signatures; nil means time.Now. Tests fix it to get stable records;
	// tokens expire on synctest's fake time with it left nil.
	Now func() time.Time
}

// Fault is an injected failure: an answer the real API or its gateway may
// give, which the watcher must survive.
type Fault struct {
	// Status is the HTTP status to answer; 0 means 200. A status below 400
	// without a Body sends the normal answer with that status.
	Status int
	// Body is a raw body to send instead of the normal answer (truncated
	// JSON, an HTML error page from a gateway). When empty and Status >= 400,
	// an API JSON error is built from Code and Msg.
	Body string
	// Code and Msg are the error_code and error_msg of the JSON error. Empty
	// Code picks one for the status (CodeInvalidToken for 401,
	// CodeFlowControl for 429, and so on); empty Msg uses the status text.
	Code, Msg string
	// Delay waits this long (or until the request's context ends) before
	// answering, to exercise client timeouts.
	Delay time.Duration
	// Header holds extra response headers, such as Retry-After on a 429.
	Header http.Header
	// Reset sends the status line, the headers (with the full
	// Content-Length) and half of the body that would have been sent, then
	// closes the connection: a connection lost mid-body.
	Reset bool
}

// queuedFault is a Fault waiting for a request at its offset.
type queuedFault struct {
	offset int
	fault  Fault
}

// Sim simulates the ongoing-meeting API over an in-memory list of meetings.
// It implements http.Handler. Create one with New.
type Sim struct {
	opts Options
	now  func() time.Time

	mu       sync.Mutex
	gen      *generator
	list     []*entry // listing order: startTime, then insertion
	byUUID   map[string]*entry
	seq      uint64
	hook     func(*http.Request) *Fault
	once     []queuedFault
	requests int

	// tokens maps every issued token to when it expires; slots lists each
	// user's tokens oldest first, to evict beyond MaxTokensPerUser.
	tokens map[string]time.Time
	slots  map[string][]string
	logins int

	// refuseAll makes every token unknown: a Multi answers with such a
	// Sim the requests that are no account's.
	refuseAll bool
}

// New returns a simulator with no meetings.
func New(opts Options) *Sim {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Sim{
		opts:   opts,
		now:    now,
		gen:    newGenerator(opts.Seed, opts.AdminUserUUID),
		byUUID: make(map[string]*entry),
		tokens: make(map[string]time.Time),
		slots:  make(map[string][]string),
	}
}

// NewRecord returns a fresh random meeting shaped like the reference's
// example, with the fields of the API's whole ConferenceInfo model that
// apply to it and every secret filled in: some meetings are recurring,
// webinars, held in a cloud room or streamed live, and carry the fields
// only those have. It is not added to the list, so the caller can adjust it
// first and then Add it.
func (s *Sim) NewRecord() Record {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen.record(now)
}

// Add adds deep copies of recs and returns their confUUIDs. A record without
// a confUUID gets a generated one. A record whose confUUID is already listed
// replaces that meeting, as if it ended and started again, because the list
// never holds one confUUID twice. Meetings are listed by ascending startTime
// and, on ties, in the order they were added; a missing or unreadable
// startTime sorts first.
func (s *Sim) Add(recs ...Record) []string {
	copies := make([]Record, len(recs))
	for i, r := range recs {
		copies[i] = copyRecord(r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addAllLocked(copies)
}

// AddN adds n random meetings and returns their confUUIDs.
func (s *Sim) AddN(n int) []string {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = s.gen.record(now)
	}
	return s.addAllLocked(recs)
}

// End removes a meeting, as when it is over. It reports false if the
// meeting is not listed.
func (s *Sim) End(confUUID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byUUID[confUUID]
	if ok {
		s.removeLocked(e)
	}
	return ok
}

// Update changes a meeting: fn mutates a copy of the record in place, and
// the copy replaces the stored record. The meeting keeps its confUUID (a
// change fn makes to it is undone, since the confUUID is what identifies the
// meeting) and its place among meetings with the same startTime; a changed
// startTime moves it. fn runs without the simulator's lock, so it may call
// the simulator; if the meeting changes meanwhile, fn runs again on a fresh
// copy, so no change is lost. Update reports false if the meeting is not
// listed.
func (s *Sim) Update(confUUID string, fn func(Record)) bool {
	for {
		s.mu.Lock()
		e, ok := s.byUUID[confUUID]
		s.mu.Unlock()
		if !ok {
			return false
		}
		rec := copyRecord(e.rec)
		fn(rec)
		rec["confUUID"] = confUUID

		s.mu.Lock()
		cur, ok := s.byUUID[confUUID]
		if ok && cur == e {
			s.replaceLocked(e, rec)
		}
		s.mu.Unlock()
		if !ok || cur == e {
			return ok
		}
	}
}

// Get returns a deep copy of a meeting, and false if it is not listed.
func (s *Sim) Get(confUUID string) (Record, bool) {
	s.mu.Lock()
	e, ok := s.byUUID[confUUID]
	s.mu.Unlock()
	if !ok {
		return nil, false
	}
	// Stored records are never written, so copying outside the lock is safe.
	return copyRecord(e.rec), true
}

// Meetings returns deep copies of every meeting, in list order.
func (s *Sim) Meetings() []Record {
	s.mu.Lock()
	list := slices.Clone(s.list)
	s.mu.Unlock()
	recs := make([]Record, len(list))
	for i, e := range list {
		recs[i] = copyRecord(e.rec)
	}
	return recs
}

// UUIDs returns the confUUID of every meeting, in list order: what a
// complete, unfiltered paging should collect.
func (s *Sim) UUIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, len(s.list))
	for i, e := range s.list {
		ids[i] = e.uuid
	}
	return ids
}

// Len returns the number of meetings listed.
func (s *Sim) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.list)
}

// Step makes one random change, as live meetings do: roughly 40% start a
// new meeting, 30% end one, and 30% change one: its subject,
// onlineAttendeeAmount, isAutoMute or confConfigInfo.isAutoMute, a new
// entry in partAttendeeInfo, an endTime prolonged, another picDisplay
// layout, the waiting room switched, the guest password reset (in
// confConfigInfo and passwordEntry), or a live stream started or stopped
// (recordType with liveAddress, auxAddress and liveUrl). With no meetings
// it starts one. rng picks the
// change, so a sequence of steps can be replayed; nil uses the simulator's
// own seeded source. Step returns the kind of change ("started", "ended" or
// "changed") and the confUUID it touched.
func (s *Sim) Step(rng *rand.Rand) (kind, confUUID string) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if rng == nil {
		rng = s.gen.rng
	}
	p := rng.IntN(10)
	switch {
	case len(s.list) == 0 || p < 4:
		return "started", s.addLocked(s.gen.record(now))
	case p < 7:
		e := s.list[rng.IntN(len(s.list))]
		s.removeLocked(e)
		return "ended", e.uuid
	default:
		e := s.list[rng.IntN(len(s.list))]
		s.changeLocked(rng, e)
		return "changed", e.uuid
	}
}

// Change changes one field of an ongoing meeting at random, as Step does,
// and reports whether the meeting was there to change. A nil rng uses the
// simulator's own.
func (s *Sim) Change(rng *rand.Rand, confUUID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byUUID[confUUID]
	if !ok {
		return false
	}
	if rng == nil {
		rng = s.gen.rng
	}
	s.changeLocked(rng, e)
	return true
}

func (s *Sim) changeLocked(rng *rand.Rand, e *entry) {
	rec := copyRecord(e.rec)
	s.gen.change(rng, rec)
	s.replaceLocked(e, rec)
}

// SetHook installs h, called for every request to Path, AppAuthPath or
// AccountAuthPath before it is answered; h can tell them apart by
// r.URL.Path. A non-nil *Fault is answered instead of the listing or the
// login; nil continues normally. h runs without the simulator's lock, so it
// may change the simulator, for example end a meeting between two page
// requests. A hook that reads r.Body must put back an equivalent one, since
// the login still needs it. A nil h removes the hook.
func (s *Sim) SetHook(h func(r *http.Request) *Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = h
}

// FailOnce answers the next listing request (to Path) whose offset query
// parameter equals offset (absent counts as 0) with f, once. Several may be
// queued, for the same offset or others; they are used in the order queued.
// A fault from the hook takes precedence and leaves the queue alone. Logins
// never take a queued fault, since they have no offset; use SetHook to fail
// them.
func (s *Sim) FailOnce(offset int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.once = append(s.once, queuedFault{offset: offset, fault: f})
}

// Requests returns how many requests reached Path, including refused and
// faulted ones, so tests can check how many pages or retries a client spent.
func (s *Sim) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// addLocked stores rec, which the simulator owns from now on.
func (s *Sim) addLocked(rec Record) string {
	id := s.claimID(rec)
	if old, ok := s.byUUID[id]; ok {
		s.removeLocked(old)
	}
	s.seq++
	s.insertLocked(newEntry(id, rec, s.seq))
	return id
}

// addAllLocked stores recs like addLocked does, one by one. A large batch
// is appended and sorted once instead, because inserting each record into
// the middle of a long list costs a copy of the list's tail per record.
func (s *Sim) addAllLocked(recs []Record) []string {
	ids := make([]string, len(recs))
	const batch = 16
	if len(recs) < batch {
		for i, rec := range recs {
			ids[i] = s.addLocked(rec)
		}
		return ids
	}
	replaced := false
	for i, rec := range recs {
		id := s.claimID(rec)
		_, dup := s.byUUID[id]
		replaced = replaced || dup
		s.seq++
		e := newEntry(id, rec, s.seq)
		s.byUUID[id] = e
		s.list = append(s.list, e)
		ids[i] = id
	}
	if replaced {
		// Keep only the newest entry of each confUUID.
		s.list = slices.DeleteFunc(s.list, func(e *entry) bool { return s.byUUID[e.uuid] != e })
	}
	slices.SortFunc(s.list, compareEntries)
	return ids
}

// claimID returns rec's confUUID, generating one if it has none, and
// reserves it so that no generated confUUID repeats it.
func (s *Sim) claimID(rec Record) string {
	id, _ := rec["confUUID"].(string)
	if id == "" {
		id = s.gen.uuid()
		rec["confUUID"] = id
		return id
	}
	s.gen.reserve(id)
	return id
}

func (s *Sim) insertLocked(e *entry) {
	s.byUUID[e.uuid] = e
	// Most new meetings start now and go last; only the rest need a search.
	if n := len(s.list); n == 0 || !e.before(s.list[n-1]) {
		s.list = append(s.list, e)
		return
	}
	i, _ := slices.BinarySearchFunc(s.list, e, compareEntries)
	s.list = slices.Insert(s.list, i, e)
}

func (s *Sim) removeLocked(e *entry) {
	delete(s.byUUID, e.uuid)
	if i, found := slices.BinarySearchFunc(s.list, e, compareEntries); found {
		s.list = slices.Delete(s.list, i, i+1)
	}
}

// replaceLocked swaps old's record for rec, keeping old's insertion order
// so that a change does not move a meeting among its ties.
func (s *Sim) replaceLocked(old *entry, rec Record) {
	e := newEntry(old.uuid, rec, old.seq)
	if e.start == old.start {
		if i, found := slices.BinarySearchFunc(s.list, old, compareEntries); found {
			s.list[i] = e
			s.byUUID[e.uuid] = e
			return
		}
	}
	s.removeLocked(old)
	s.insertLocked(e)
}

func compareEntries(a, b *entry) int {
	switch {
	case a.before(b):
		return -1
	case b.before(a):
		return 1
	default:
		return 0
	}
}

// ServeHTTP answers a request as the real API would. Requests to paths
// other than Path, AppAuthPath and AccountAuthPath get 404. For Path, in
// order: the request is counted; the hook, then the FailOnce queue, may
// supply a fault that replaces the rest; a method other than GET gets 405; a
// missing, wrong or expired X-Access-Token gets 401; a bad parameter gets
// 400; otherwise the page is answered with 200. For the logins: the hook may
// supply a fault that replaces the rest; a method other than POST gets 405;
// refused credentials get 401; otherwise a new token is answered with 200.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newRequestID()
	w.Header().Set("X-Request-Id", reqID)
	var answer func(*http.Request, string) response
	switch r.URL.Path {
	case Path:
		answer = s.listing
	case AppAuthPath:
		answer = s.appAuth
	case AccountAuthPath:
		answer = s.accountAuth
	default:
		writeResponse(w, apiError(http.StatusNotFound, CodeNoSuchAPI, "The API does not exist or has not been published.", reqID))
		return
	}
	f := s.admit(r)
	if f != nil && f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return // nobody is waiting for the answer
		}
	}
	resp := s.respond(r, f, reqID, answer)
	if resp.buf != nil {
		defer func() {
			*resp.buf = resp.body[:0]
			pages.Put(resp.buf)
		}()
	}
	if f != nil {
		for k, v := range f.Header {
			w.Header()[http.CanonicalHeaderKey(k)] = v
		}
	}
	if f != nil && f.Reset {
		reset(w, resp)
		return
	}
	writeResponse(w, resp)
}

// admit counts a request to Path and returns the fault, if any, that
// answers it: the hook's for every path, the FailOnce queue's for Path only.
func (s *Sim) admit(r *http.Request) *Fault {
	listing := r.URL.Path == Path
	s.mu.Lock()
	if listing {
		s.requests++
	}
	hook := s.hook
	s.mu.Unlock()

	if hook != nil {
		if f := hook(r); f != nil {
			return f
		}
	}
	if !listing {
		return nil
	}
	off, err := intParam(r.URL.Query(), "offset", 0)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.once {
		if q.offset == off {
			s.once = slices.Delete(s.once, i, i+1)
			return &q.fault
		}
	}
	return nil
}

// response is an answer built before it is written, so that a Reset fault
// can send half of it.
type response struct {
	status      int
	contentType string
	body        []byte
	// buf, when set, is the pooled buffer body was built in, returned to
	// pages once body is written.
	buf *[]byte
}

// pages holds the buffers listing pages are built in. A page of 500
// records is most of a megabyte: allocating one per request made a
// poller's steady listings cost the simulator a fresh 160 MB, and the
// collections to match, every listing of 100,000 meetings, CPU that a
// co-located poller then lacked.
var pages = sync.Pool{New: func() any { return new([]byte) }}

const jsonType = "application/json;charset=UTF-8"

// respond builds the answer: the fault's, or answer's when the fault only
// delays, resets or changes the status of the normal answer.
func (s *Sim) respond(r *http.Request, f *Fault, reqID string, answer func(*http.Request, string) response) response {
	if f != nil {
		switch {
		case f.Body != "":
			ct := jsonType
			if strings.HasPrefix(strings.TrimSpace(f.Body), "<") {
				ct = "text/html; charset=utf-8"
			}
			return response{status: cmp.Or(f.Status, http.StatusOK), contentType: ct, body: []byte(f.Body)}
		case f.Status >= 400:
			return apiError(f.Status, cmp.Or(f.Code, defaultCode(f.Status)), cmp.Or(f.Msg, http.StatusText(f.Status)), reqID)
		}
	}
	resp := answer(r, reqID)
	if f != nil && f.Status != 0 && resp.status == http.StatusOK {
		resp.status = f.Status
	}
	return resp
}

func defaultCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return CodeInvalidParam
	case http.StatusUnauthorized:
		return CodeInvalidToken
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return CodeNoSuchAPI
	case http.StatusTooManyRequests:
		return CodeFlowControl
	default:
		return CodeServerError
	}
}

// encodePage builds the body of a successful listing around records that
// encoding/json has already encoded. Assembling the envelope by hand avoids
// having json.Marshal re-validate every record of every page, which is most
// of the cost of a 500-record page.
func encodePage(b []byte, offset, limit, count int, records [][]byte) []byte {
	size := 64
	for _, r := range records {
		size += len(r) + 1
	}
	b = slices.Grow(b[:0], size)
	b = append(b, `{"offset":`...)
	b = strconv.AppendInt(b, int64(offset), 10)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, int64(limit), 10)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(count), 10)
	b = append(b, `,"data":[`...)
	for i, r := range records {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r...)
	}
	return append(b, "]}"...)
}

// listing answers a request that no fault replaced.
func (s *Sim) listing(r *http.Request, reqID string) response {
	if r.Method != http.MethodGet {
		return apiError(http.StatusMethodNotAllowed, CodeNoSuchAPI, "Method "+r.Method+" is not allowed.", reqID)
	}
	if !s.tokenValid(r.Header.Get("X-Access-Token")) {
		return apiError(http.StatusUnauthorized, CodeInvalidToken, "Authentication failed: the access token is invalid or has expired.", reqID)
	}
	q := r.URL.Query()
	offset, err := intParam(q, "offset", 0)
	if err != nil || offset < 0 {
		return badParam("offset must be an integer of at least 0", reqID)
	}
	limit, err := intParam(q, "limit", DefaultLimit)
	if err != nil || limit < 1 || limit > MaxLimit {
		return badParam(fmt.Sprintf("limit must be an integer from 1 to %d", MaxLimit), reqID)
	}
	var queryAll bool
	switch v := q.Get("queryAll"); {
	case v == "" || strings.EqualFold(v, "false"):
	case strings.EqualFold(v, "true"):
		queryAll = true
	default:
		return badParam("queryAll must be true or false", reqID)
	}
	searchKey, search := q.Get("searchKey"), q.Has("searchKey")
	if n := utf8.RuneCountInString(searchKey); search && (n < 1 || n > 128) {
		return badParam("searchKey must have 1 to 128 characters", reqID)
	}
	owner := ""
	if !queryAll {
		owner = s.opts.AdminUserUUID
	}
	entries, count := s.snapshot(offset, limit, owner, strings.ToLower(searchKey))

	records := make([][]byte, len(entries))
	for i, e := range entries {
		raw, err := e.encoded()
		if err != nil {
			return apiError(http.StatusInternalServerError, CodeServerError, err.Error(), reqID)
		}
		records[i] = raw
	}
	buf := pages.Get().(*[]byte)
	return response{status: http.StatusOK, contentType: jsonType, body: encodePage(*buf, offset, limit, count, records), buf: buf}
}

// snapshot returns the page's entries and the number of matching meetings.
// It only holds the lock while choosing entries, or while copying the list
// for a filter: encoding happens after, on entries that are never written.
// Unfiltered pages are a slice copy; filtered ones scan the list, as the
// count needs every match anyway, outside the lock, so that lookups made
// at once over 100,000 meetings do not take turns.
func (s *Sim) snapshot(offset, limit int, owner, key string) ([]*entry, int) {
	s.mu.Lock()
	if owner == "" && key == "" {
		defer s.mu.Unlock()
		if offset >= len(s.list) {
			return nil, len(s.list)
		}
		return slices.Clone(s.list[offset:min(offset+limit, len(s.list))]), len(s.list)
	}
	list := slices.Clone(s.list)
	s.mu.Unlock()
	var (
		out   []*entry
		count int
	)
	for _, e := range list {
		if owner != "" && e.user != owner {
			continue
		}
		if key != "" && !strings.Contains(e.subject, key) && !strings.Contains(e.scheduser, key) && !strings.Contains(e.confID, key) {
			continue
		}
		if count >= offset && len(out) < limit {
			out = append(out, e)
		}
		count++
	}
	return out, count
}

// intParam reads an integer query parameter; absent or empty means def, as
// the API treats an empty value as not given.
func intParam(q map[string][]string, name string, def int) (int, error) {
	v := ""
	if vs := q[name]; len(vs) > 0 {
		v = vs[0]
	}
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", name, err)
	}
	return n, nil
}

func badParam(msg, reqID string) response {
	return apiError(http.StatusBadRequest, CodeInvalidParam, msg, reqID)
}

// apiError builds the API's JSON error body, whose request_id repeats the
// X-Request-Id header so a client can log either.
func apiError(status int, code, msg, reqID string) response {
	body, _ := json.Marshal(struct {
		Code      string `json:"error_code"`
		Msg       string `json:"error_msg"`
		RequestID string `json:"request_id"`
	}{code, msg, reqID})
	return response{status: status, contentType: jsonType, body: body}
}

func writeResponse(w http.ResponseWriter, resp response) {
	h := w.Header()
	h.Set("Content-Type", resp.contentType)
	h.Set("Content-Length", strconv.Itoa(len(resp.body)))
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body) // a client that hung up is no error of the simulator's
}

// reset sends the headers and half of resp, then drops the connection, so
// the client sees a body cut short.
func reset(w http.ResponseWriter, resp response) {
	half := resp.body[:len(resp.body)/2]
	if hj, ok := w.(http.Hijacker); ok {
		conn, buf, err := hj.Hijack()
		if err == nil {
			defer conn.Close()
			h := w.Header().Clone()
			h.Set("Content-Type", resp.contentType)
			h.Set("Content-Length", strconv.Itoa(len(resp.body)))
			h.Set("Connection", "close")
			writeHalf(buf, resp.status, h, half)
			return
		}
	}
	// Without hijacking (HTTP/2, a recorder), abort the response instead:
	// net/http then closes the connection or resets the stream.
	h := w.Header()
	h.Set("Content-Type", resp.contentType)
	h.Set("Content-Length", strconv.Itoa(len(resp.body)))
	w.WriteHeader(resp.status)
	_, _ = w.Write(half)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	panic(http.ErrAbortHandler)
}

func writeHalf(buf *bufio.ReadWriter, status int, h http.Header, half []byte) {
	// Write errors are ignored: the connection is being dropped anyway.
	_, _ = fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	_ = h.Write(buf)
	_, _ = buf.WriteString("\r\n")
	_, _ = buf.Write(half)
	_ = buf.Flush()
}

// newRequestID returns a random 32-hex id like the API's X-Request-Id.
// It need not be unpredictable, only distinct.
func newRequestID() string {
	return fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64())
}

// Server is a Sim listening on a loopback port, like httptest.Server: the
// client under test gets a real URL and real connections. It is written
// here rather than on httptest so that the meetwatch binary, which serves
// the simulator in `demo` and `sim`, does not link a test package.
type Server struct {
	// URL is http://127.0.0.1:port, without a trailing slash.
	URL string
	// Sim is the simulator behind the server, for adding meetings and
	// injecting faults while the client polls.
	Sim *Sim

	srv    *http.Server
	served chan struct{}
}

// NewServer starts a Server on 127.0.0.1. The caller must Close it. It
// panics if no loopback port is free, as httptest.NewServer does.
func NewServer(opts Options) *Server {
	s := &Server{Sim: New(opts)}
	s.URL, s.srv, s.served = serve(s.Sim)
	return s
}

// serve serves h on a loopback port until the returned server is closed,
// which closes served; it panics if no port is free.
func serve(h http.Handler) (url string, srv *http.Server, served chan struct{}) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("apisim: listening on a loopback port: %v", err))
	}
	srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served = make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l) // returns ErrServerClosed once Close is called
	}()
	return "http://" + l.Addr().String(), srv, served
}

// Close stops the server, cutting open connections, and waits for it.
func (s *Server) Close() {
	_ = s.srv.Close() // Serve's error is the only one worth having, and it is ErrServerClosed
	<-s.served
}
