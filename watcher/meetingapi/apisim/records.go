package apisim

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Record is one ConferenceInfo object as the API sends it: every field kept.
// It is a map rather than a struct because the API grows fields without
// notice, and the simulator must be able to serve records the watcher has no
// name for yet.
type Record = map[string]any

// timeLayout is how the API writes startTime and endTime.
const timeLayout = "2006-01-02 15:04"

// entry is one listed meeting. Its rec is never mutated once the entry is
// stored: a change builds a new entry. That lets a page be snapshotted under
// the lock and encoded after it is released.
type entry struct {
	uuid  string
	start string // startTime as sent; the fixed-width layout sorts as text
	seq   uint64 // insertion order, which breaks ties in start
	rec   Record

	// Lookup keys, extracted once so that filtering a page stays cheap.
	user      string
	subject   string // lower case
	scheduser string // lower case
	confID    string

	raw atomic.Pointer[[]byte] // JSON encoding of rec, filled on first use
}

func newEntry(uuid string, rec Record, seq uint64) *entry {
	return &entry{
		uuid:      uuid,
		start:     text(rec["startTime"]),
		seq:       seq,
		rec:       rec,
		user:      text(rec["userUUID"]),
		subject:   strings.ToLower(text(rec["subject"])),
		scheduser: strings.ToLower(text(rec["scheduserName"])),
		confID:    text(rec["conferenceID"]),
	}
}

// before reports whether e is listed before o: by start time, then by
// insertion order, as the real API sorts.
func (e *entry) before(o *entry) bool {
	if e.start != o.start {
		return e.start < o.start
	}
	return e.seq < o.seq
}

// encoded returns the record's encoding. It is cached because a poller asks for
// every page again and again while most records do not change; several
// goroutines may fill the cache at once, which is harmless since they compute
// the same bytes from a record nobody writes.
func (e *entry) encoded() ([]byte, error) {
	if p := e.raw.Load(); p != nil {
		return *p, nil
	}
	b, err := json.Marshal(e.rec)
	if err != nil {
		return nil, fmt.Errorf("encoding meeting %s: %w", e.uuid, err)
	}
	e.raw.Store(&b)
	return b, nil
}

// text renders a scalar field for matching. Records decoded from JSON carry
// numbers as float64, so a numeric conferenceID still matches searchKey.
func text(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	default:
		return ""
	}
}

// asInt reads an integer flag whichever way the record holds it: int when
// built in Go, float64 or json.Number when decoded from JSON.
func asInt(v any) int {
	switch v := v.(type) {
	case int:
		return v
	case int64:
		return int(v)
	case float64:
		return int(v)
	case json.Number:
		n, _ := v.Int64()
		return int(n)
	default:
		return 0
	}
}

// copyRecord deep-copies rec so that callers and the simulator never share
// a map or slice: a caller mutating what Get returned must not change what is
// listed, and records being encoded must not change underneath the encoder.
func copyRecord(rec Record) Record {
	if rec == nil {
		return Record{}
	}
	return deepCopy(rec).(map[string]any)
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = deepCopy(x)
		}
		return s
	case []map[string]any:
		s := make([]map[string]any, len(v))
		for i, x := range v {
			s[i] = deepCopy(x).(map[string]any)
		}
		return s
	case []string:
		return append([]string(nil), v...)
	case json.RawMessage:
		return append(json.RawMessage(nil), v...)
	default:
		// Scalars are values already; other types are kept as given.
		return v
	}
}

// user is one account that schedules generated meetings. Generated meetings
// come from a small pool of users so that filtering by userUUID (queryAll
// false) selects some meetings, not none.
type user struct {
	uuid, name, dept string
}

// generator makes random records. It is deterministic for a seed, so a demo
// or a failing test can be replayed, and it remembers every id it has seen so
// that generated confUUIDs and conferenceIDs are unique.
type generator struct {
	rng     *rand.Rand
	users   []user
	uuids   map[string]struct{}
	confIDs map[string]struct{}
}

var (
	subjects = []string{
		"Weekly sync", "Design review", "Standup", "Sprint planning", "Retro",
		"Customer call", "All hands", "Interview", "Budget review", "1:1",
	}
	depts      = []string{"wangyue", "sales", "research", "support", "finance", "operations"}
	mediaTypes = []string{"Voice,Data,Video", "Voice,Data", "Voice,HDVideo,Data"}
)

func newGenerator(seed int64, admin string) *generator {
	g := &generator{
		rng:     rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15)),
		uuids:   make(map[string]struct{}),
		confIDs: make(map[string]struct{}),
	}
	const pool = 16
	for i := range pool {
		u := user{
			uuid: "ff808081" + g.hex(24),
			name: fmt.Sprintf("user%04d", 8000+i),
			dept: depts[g.rng.IntN(len(depts))],
		}
		if i == 0 && admin != "" {
			u.uuid, u.name = admin, "admin"
		}
		g.users = append(g.users, u)
	}
	return g
}

// hex returns n random lowercase hex digits.
func (g *generator) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	var v uint64
	for i := range b {
		if i%16 == 0 {
			v = g.rng.Uint64() // one draw gives 16 digits
		}
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b)
}

// digits returns n random decimal digits, as passwords are.
func (g *generator) digits(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('0' + g.rng.IntN(10))
	}
	return string(b)
}

// reserve records id as taken, so that no generated confUUID repeats it.
func (g *generator) reserve(id string) { g.uuids[id] = struct{}{} }

func (g *generator) uuid() string {
	for {
		id := g.hex(32)
		if _, taken := g.uuids[id]; !taken {
			g.reserve(id)
			return id
		}
	}
}

func (g *generator) conferenceID() string {
	for {
		id := strconv.Itoa(100_000_000 + g.rng.IntN(900_000_000))
		if _, taken := g.confIDs[id]; !taken {
			g.confIDs[id] = struct{}{}
			return id
		}
	}
}

func subject(rng *rand.Rand) string {
	return fmt.Sprintf("%s %d", subjects[rng.IntN(len(subjects))], 1+rng.IntN(99))
}

func (g *generator) attendee() map[string]any {
	return map[string]any{
		"phone": fmt.Sprintf("+99111****%03d", g.rng.IntN(1000)),
		"name":  g.users[g.rng.IntN(len(g.users))].name,
		"type":  "normal",
	}
}

func (g *generator) joinURI(confID string) string {
	return "https://c.meeting.huaweicloud.com/#/j/" + confID + "/" + g.hex(48)
}

// record builds a meeting shaped like the reference's example, with the
// secrets (passwords, join links, stream addresses) filled in, as an
// administrator's token sees them, so that redaction downstream has something
// to redact.
func (g *generator) record(now time.Time) Record {
	u := g.users[g.rng.IntN(len(g.users))]
	confID := g.conferenceID()
	start := now.UTC().Truncate(time.Minute).Add(-time.Duration(g.rng.IntN(60)) * time.Minute)
	end := start.Add(time.Duration(30+g.rng.IntN(91)) * time.Minute)

	n := 1 + g.rng.IntN(3)
	attendees := make([]any, n)
	for i := range attendees {
		attendees[i] = g.attendee()
	}

	rec := Record{
		"conferenceID":    confID,
		"mediaTypes":      mediaTypes[g.rng.IntN(len(mediaTypes))],
		"subject":         subject(g.rng),
		"size":            n,
		"timeZoneID":      "56",
		"startTime":       start.Format(timeLayout),
		"endTime":         end.Format(timeLayout),
		"conferenceState": "Created",
		"accessNumber":    "+991117",
		"language":        []string{"zh-CN", "en-US"}[g.rng.IntN(2)],
		"passwordEntry": []any{
			map[string]any{"conferenceRole": "chair", "password": g.digits(6)},
			map[string]any{"conferenceRole": "general", "password": g.digits(6)},
		},
		"userUUID":        u.uuid,
		"scheduserName":   u.name,
		"multiStreamFlag": 1,
		"conferenceType":  0,
		"confType":        []string{"IMMEDIATELY", "FUTURE"}[g.rng.IntN(2)],
		"isAutoMute":      g.rng.IntN(2),
		"isAutoRecord":    0,
		"chairJoinUri":    g.joinURI(confID),
		"guestJoinUri":    g.joinURI(confID),
		"audienceJoinUri": g.joinURI(confID),
		"recordType":      0,
		"recordAuxStream": 0,
		"confConfigInfo": map[string]any{
			"prolongLength":          15,
			"isGuestFreePwd":         g.rng.IntN(4) == 0,
			"isSendNotify":           true,
			"isSendSms":              true,
			"isAutoMute":             g.rng.IntN(2) == 0,
			"isSendCalendar":         true,
			"callInRestriction":      0,
			"allowGuestStartConf":    true,
			"isHardTerminalAutoMute": true,
			"enableWaitingRoom":      g.rng.IntN(2) == 0,
			"guestPwd":               g.digits(6),
		},
		"vmrFlag":              0,
		"scheduleVmr":          false,
		"isHasRecordFile":      false,
		"partAttendeeInfo":     attendees,
		"terminlCount":         0,
		"normalCount":          n,
		"deptName":             u.dept,
		"confUUID":             g.uuid(),
		"onlineAttendeeAmount": g.rng.IntN(n + 5),
	}
	// Live streaming is enabled on few meetings; when it is, the push
	// addresses are secrets like the passwords.
	if g.rng.IntN(4) == 0 {
		rec["liveAddress"] = "rtmp://live.meeting.huaweicloud.com/push/" + g.hex(32)
		rec["auxAddress"] = "rtmp://live.meeting.huaweicloud.com/aux/" + g.hex(32)
	}
	return rec
}

// change makes one of the changes live meetings see. It works on a copy that
// replaces the stored record, and every branch really changes a value, so a
// "changed" step always shows up in a diff.
func (g *generator) change(rng *rand.Rand, rec Record) {
	switch rng.IntN(5) {
	case 0:
		old := text(rec["subject"])
		s := subject(rng)
		for s == old {
			s = subject(rng)
		}
		rec["subject"] = s
	case 1:
		n := asInt(rec["onlineAttendeeAmount"])
		d := 1 + rng.IntN(5)
		if rng.IntN(2) == 0 && n >= d {
			n -= d
		} else {
			n += d
		}
		rec["onlineAttendeeAmount"] = n
	case 2:
		rec["isAutoMute"] = 1 - min(max(asInt(rec["isAutoMute"]), 0), 1)
	case 3:
		cfg, ok := rec["confConfigInfo"].(map[string]any)
		if !ok {
			cfg = map[string]any{}
			rec["confConfigInfo"] = cfg
		}
		on, _ := cfg["isAutoMute"].(bool)
		cfg["isAutoMute"] = !on
	default:
		att := g.attendee()
		switch parts := rec["partAttendeeInfo"].(type) {
		case []any:
			rec["partAttendeeInfo"] = append(parts, att)
		case []map[string]any:
			rec["partAttendeeInfo"] = append(parts, att)
		default:
			rec["partAttendeeInfo"] = []any{att}
		}
	}
}
