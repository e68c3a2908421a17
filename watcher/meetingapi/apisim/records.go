package apisim

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
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
	b, err := appendJSON(nil, e.rec)
	if err != nil {
		return nil, fmt.Errorf("encoding meeting %s: %w", e.uuid, err)
	}
	e.raw.Store(&b)
	return b, nil
}

// appendJSON appends the JSON encoding of v to b, byte for byte what
// json.Marshal writes. It walks the maps, slices and scalars that records
// are made of itself, and hands anything else to json.Marshal: encoding
// every record of a large list through reflection, which sorts each map's
// keys as reflect.Values, cost more than generating the records.
func appendJSON(b []byte, v any) ([]byte, error) {
	var err error
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendJSONString(b, v), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendJSONString(b, k), ':')
			if b, err = appendJSON(b, v[k]); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	case []any:
		if v == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendJSON(b, x); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	default:
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		return append(b, raw...), nil
	}
}

// appendJSONString appends s as a JSON string. Printable ASCII that
// json.Marshal writes unchanged is copied; anything else (quotes,
// backslashes, control characters, the HTML characters json.Marshal
// escapes, non-ASCII) goes through json.Marshal, so the bytes stay its.
func appendJSONString(b []byte, s string) []byte {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			raw, _ := json.Marshal(s) // a string always encodes
			return append(b, raw...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
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
// that generated confUUIDs and meeting IDs are unique.
type generator struct {
	rng     *rand.Rand
	users   []user
	uuids   map[string]struct{}
	confIDs map[string]struct{}
}

// dateLayout is how cycleParams writes the dates of a recurring meeting.
const dateLayout = "2006-01-02"

var (
	subjects = []string{
		"Weekly sync", "Design review", "Standup", "Sprint planning", "Retro",
		"Customer call", "All hands", "Interview", "Budget review", "1:1",
	}
	depts      = []string{"wangyue", "sales", "research", "support", "finance", "operations"}
	mediaTypes = []string{"Voice,Data,Video", "Voice,Data", "Voice,HDVideo,Data"}
	// terminalTypes weights the kinds of invited attendee: mostly soft
	// clients, some hard terminals. Hard terminals count in terminlCount,
	// the others in normalCount.
	terminalTypes = []string{"normal", "normal", "normal", "normal", "mobile", "terminal", "ideahub", "telepresence"}
	// concurrency is concurrentParticipants for meetings and webinars;
	// 0 means no limit.
	concurrency = []int{0, 0, 0, 50, 100, 300}
	webinarSize = []int{500, 1000, 3000}
	cycles      = []string{"Day", "Week", "Month"}
)

// layout is a multi-picture layout: imageType, the grid it divides the
// screen into, and each picture's place on that grid.
type layout struct {
	imageType string
	x, y      int
	cells     [][4]int // left, top, xSize, ySize
}

var layouts = []layout{
	{"Single", 1, 1, [][4]int{{0, 0, 1, 1}}},
	{"Two", 2, 1, [][4]int{{0, 0, 1, 1}, {1, 0, 1, 1}}},
	{"Three", 2, 2, [][4]int{{0, 0, 2, 1}, {0, 1, 1, 1}, {1, 1, 1, 1}}},
	{"Four", 2, 2, [][4]int{{0, 0, 1, 1}, {1, 0, 1, 1}, {0, 1, 1, 1}, {1, 1, 1, 1}}},
}

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
	return digitsFrom(g.rng, n)
}

func digitsFrom(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('0' + rng.IntN(10))
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

// conferenceID returns a new meeting ID. Cloud rooms draw their IDs from
// the same space, since both are what people dial and type in.
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

// maskedPhone is a phone number as the API lists it, with the middle
// digits hidden.
func maskedPhone(rng *rand.Rand) string {
	return fmt.Sprintf("+99111****%03d", rng.IntN(1000))
}

// attendee is one invited attendee; role 1 is the chair. Only three-screen
// telepresence rooms use phone2 and phone3 (the left and right screens).
func (g *generator) attendee(rng *rand.Rand, role int) map[string]any {
	typ := terminalTypes[rng.IntN(len(terminalTypes))]
	name := g.users[rng.IntN(len(g.users))].name
	if hardTerminal(typ) {
		name = fmt.Sprintf("Room %d%02d", 1+rng.IntN(9), 1+rng.IntN(30))
	}
	phone2, phone3 := "", ""
	if typ == "telepresence" {
		phone2, phone3 = maskedPhone(rng), maskedPhone(rng)
	}
	return map[string]any{
		"phone":  maskedPhone(rng),
		"phone2": phone2,
		"phone3": phone3,
		"name":   name,
		"type":   typ,
		"role":   role,
		"isMute": rng.IntN(2),
	}
}

// hardTerminal reports whether an attendee type is a hard terminal, counted
// in terminlCount rather than normalCount.
func hardTerminal(typ string) bool {
	return typ == "terminal" || typ == "ideahub" || typ == "telepresence"
}

func (g *generator) joinURI(confID string) string {
	return "https://c.meeting.huaweicloud.com/#/j/" + confID + "/" + g.hex(48)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// record builds a meeting with every field of the API's ConferenceInfo
// model, shaped like the reference's example, with the secrets (passwords,
// join links, stream addresses) filled in, as an administrator's token sees
// them, so that redaction downstream has something to redact.
//
// A fifth of the meetings are recurring (cycleParams, subConfs,
// cycleSubConfID), an eighth are webinars (an audience link and password),
// and a fifth of the rest are held in a cloud room (vmrID,
// vmrConferenceID): a meeting's resources are a webinar's or a cloud
// room's, never both. Fields that only such meetings have are left out of
// the others, as the API leaves out what does not apply.
func (g *generator) record(now time.Time) Record {
	rng := g.rng
	owner := rng.IntN(len(g.users))
	u := g.users[owner]
	confID := g.conferenceID()
	start := now.UTC().Truncate(time.Minute).Add(-time.Duration(rng.IntN(60)) * time.Minute)
	end := start.Add(time.Duration(30+rng.IntN(91)) * time.Minute)
	recurring := rng.IntN(5) == 0
	webinar := rng.IntN(8) == 0
	cloudRoom := !webinar && rng.IntN(5) == 0
	media := mediaTypes[rng.IntN(len(mediaTypes))]

	n := 1 + rng.IntN(3)
	attendees := make([]any, n)
	terminals := 0
	for i := range attendees {
		a := g.attendee(rng, b2i(i == 0))
		if hardTerminal(a["type"].(string)) {
			terminals++
		}
		attendees[i] = a
	}

	guestPwd := g.digits(6)
	passwords := []any{
		map[string]any{"conferenceRole": "chair", "password": g.digits(6)},
		map[string]any{"conferenceRole": "general", "password": guestPwd},
	}
	role, participants := "general", concurrency[rng.IntN(len(concurrency))]
	if owner == 0 {
		role = "chair" // the first user of the pool is the token's own (AdminUserUUID)
	}
	if webinar {
		passwords = append(passwords, map[string]any{"conferenceRole": "audience", "password": g.digits(6)})
		participants = webinarSize[rng.IntN(len(webinarSize))]
	}
	live, recorded := rng.IntN(4) == 0, rng.IntN(4) == 0
	waitingRoom := rng.IntN(2) == 0

	rec := make(Record, 56)
	rec["conferenceID"] = confID
	rec["mediaTypes"] = media
	rec["subject"] = subject(rng)
	rec["size"] = n
	rec["timeZoneID"] = "56"
	rec["startTime"] = start.Format(timeLayout)
	rec["endTime"] = end.Format(timeLayout)
	rec["conferenceState"] = "Created"
	rec["accessNumber"] = "+991117"
	rec["language"] = []string{"zh-CN", "en-US"}[rng.IntN(2)]
	rec["passwordEntry"] = passwords
	rec["userUUID"] = u.uuid
	rec["scheduserName"] = u.name
	rec["multiStreamFlag"] = 1
	rec["conferenceType"] = 0
	rec["confType"] = []string{"IMMEDIATELY", "FUTURE"}[rng.IntN(2)]
	rec["isAutoMute"] = rng.IntN(2)
	rec["isAutoRecord"] = b2i(recorded && rng.IntN(2) == 0)
	rec["chairJoinUri"] = g.joinURI(confID)
	rec["guestJoinUri"] = g.joinURI(confID)
	rec["recordType"] = b2i(live) + 2*b2i(recorded) // 0 none, 1 live, 2 recorded, 3 both
	rec["recordAuxStream"] = b2i(recorded && rng.IntN(2) == 0)
	rec["recordAuthType"] = rng.IntN(3)
	rec["confConfigInfo"] = map[string]any{
		"prolongLength":          15,
		"isGuestFreePwd":         rng.IntN(4) == 0,
		"isSendNotify":           true,
		"isSendSms":              true,
		"isAutoMute":             rng.IntN(2) == 0,
		"isSendCalendar":         true,
		"callInRestriction":      []int{0, 0, 2, 3}[rng.IntN(4)],
		"allowGuestStartConf":    true,
		"isHardTerminalAutoMute": true,
		"enableWaitingRoom":      waitingRoom,
		"guestPwd":               guestPwd,
		"vmrIDType":              b2i(!cloudRoom), // a cloud room keeps its fixed ID
		"isHostCameraOn":         rng.IntN(4) != 0,
		"isGuestCameraOn":        rng.IntN(2) == 0,
	}
	rec["vmrFlag"] = b2i(cloudRoom)
	rec["scheduleVmr"] = false
	rec["isHasRecordFile"] = false // only past meetings have recordings to list
	rec["partAttendeeInfo"] = attendees
	rec["terminlCount"] = terminals
	rec["normalCount"] = n - terminals
	rec["deptName"] = u.dept
	rec["confUUID"] = g.uuid()
	rec["onlineAttendeeAmount"] = rng.IntN(n + 5)
	rec["role"] = role
	rec["webinar"] = webinar
	rec["confMode"] = []string{"COMMON", "RTC"}[rng.IntN(2)]
	rec["concurrentParticipants"] = participants
	rec["supportSimultaneousInterpretation"] = rng.IntN(10) == 0
	rec["picDisplay"] = picDisplay(rng, layouts[rng.IntN(len(layouts))], attendees)
	if webinar {
		rec["audienceJoinUri"] = g.joinURI(confID)
	}
	if cloudRoom {
		rec["vmrID"] = g.hex(32)
		rec["vmrConferenceID"] = g.conferenceID()
	}
	// Live streaming is enabled on few meetings; when it is, the push
	// addresses are secrets like the passwords, and the viewing link lets
	// anyone watch.
	if live {
		g.startLive(rec)
	}
	if recurring {
		g.makeRecurring(rec, start, end, waitingRoom)
	}
	return rec
}

// startLive adds what a live-streamed meeting carries.
func (g *generator) startLive(rec Record) {
	rec["liveAddress"] = "rtmp://live.meeting.huaweicloud.com/push/" + g.hex(32)
	rec["auxAddress"] = "rtmp://live.meeting.huaweicloud.com/aux/" + g.hex(32)
	rec["liveUrl"] = "https://live.meeting.huaweicloud.com/#/watch/" + g.hex(32)
}

// makeRecurring turns rec into the ongoing instance of a recurring series
// that began a few cycles ago and has a few more to come. subConfs lists
// the instances from this one on, so cycleSubConfID, which names this
// instance, is also the first of them.
func (g *generator) makeRecurring(rec Record, start, end time.Time, waitingRoom bool) {
	rng := g.rng
	cycle := cycles[rng.IntN(len(cycles))]
	interval := 1 + rng.IntN(2)
	var point []any
	switch cycle {
	case "Week":
		point = []any{int(start.Weekday())} // 0 is Sunday
	case "Month":
		point = []any{start.Day()}
	default:
		point = []any{} // only weekly and monthly cycles have points
	}
	// after returns t moved k cycles on.
	after := func(t time.Time, k int) time.Time {
		switch cycle {
		case "Week":
			return t.AddDate(0, 0, 7*k*interval)
		case "Month":
			return t.AddDate(0, k*interval, 0)
		default:
			return t.AddDate(0, 0, k*interval)
		}
	}
	past, ahead := rng.IntN(5), 1+rng.IntN(3)
	rec["conferenceType"] = 2
	rec["confType"] = "CYCLE"
	rec["cycleParams"] = map[string]any{
		"startDate":     after(start, -past).Format(dateLayout),
		"endDate":       after(start, ahead).Format(dateLayout),
		"cycle":         cycle,
		"interval":      interval,
		"point":         point,
		"preRemindDays": 1,
	}
	cfg, _ := rec["confConfigInfo"].(map[string]any)
	subs := make([]any, ahead+1)
	for k := range subs {
		subs[k] = map[string]any{
			"cycleSubConfID": g.hex(32),
			"conferenceID":   rec["conferenceID"],
			"mediaType":      rec["mediaTypes"],
			"startTime":      after(start, k).Format(timeLayout),
			"endTime":        after(end, k).Format(timeLayout),
			"isAutoRecord":   rec["isAutoRecord"],
			"recordAuthType": rec["recordAuthType"],
			"description":    "",
			"confConfigInfo": map[string]any{
				"callInRestriction":         cfg["callInRestriction"],
				"audienceCallInRestriction": 0,
				"allowGuestStartConf":       true,
				"enableWaitingRoom":         waitingRoom,
				"showAudienceCountInfo": map[string]any{
					"showAudienceMode":  0,
					"baseAudienceCount": 0,
					"multiple":          1,
				},
			},
		}
	}
	rec["subConfs"] = subs
	rec["cycleSubConfID"] = subs[0].(map[string]any)["cycleSubConfID"]
}

// picDisplay is the meeting's multi-picture layout, showing the attendees
// in turn: each picture names the call numbers shown in it, which for an
// invited attendee is the (masked) number it was invited by.
func picDisplay(rng *rand.Rand, l layout, attendees []any) map[string]any {
	pics := make([]any, len(l.cells))
	cells := make([]any, len(l.cells))
	for i, c := range l.cells {
		var ids []any
		if len(attendees) > 0 {
			a, _ := attendees[i%len(attendees)].(map[string]any)
			if phone, ok := a["phone"].(string); ok {
				ids = []any{phone}
			}
		}
		if ids == nil {
			ids = []any{}
		}
		pics[i] = map[string]any{"index": i + 1, "id": ids, "share": 0}
		cells[i] = map[string]any{"id": i + 1, "left": c[0], "top": c[1], "xSize": c[2], "ySize": c[3]}
	}
	return map[string]any{
		"manualSet":        rng.IntN(2),
		"imageType":        l.imageType,
		"subscriberInPics": pics,
		"switchTime":       "10",
		"picLayoutInfo":    map[string]any{"x": l.x, "y": l.y, "subPicLayoutInfoList": cells},
	}
}

// change makes one of the changes live meetings see: a new subject, people
// joining or leaving, muting, a new attendee, a meeting prolonged, another
// layout, the waiting room or a live stream switched, the guest password
// reset. It works on a copy that replaces the stored record, and every
// branch really changes a value, so a "changed" step always shows up in a
// diff; a branch that finds nothing to change in a record shaped otherwise
// (one added by hand) renames the meeting instead.
func (g *generator) change(rng *rand.Rand, rec Record) {
	cfg, _ := rec["confConfigInfo"].(map[string]any)
	switch rng.IntN(10) {
	case 1:
		n := asInt(rec["onlineAttendeeAmount"])
		d := 1 + rng.IntN(5)
		if rng.IntN(2) == 0 && n >= d {
			n -= d
		} else {
			n += d
		}
		rec["onlineAttendeeAmount"] = n
		return
	case 2:
		rec["isAutoMute"] = 1 - min(max(asInt(rec["isAutoMute"]), 0), 1)
		return
	case 3:
		cfg = configOf(rec)
		on, _ := cfg["isAutoMute"].(bool)
		cfg["isAutoMute"] = !on
		return
	case 4:
		att := g.attendee(rng, 0)
		switch parts := rec["partAttendeeInfo"].(type) {
		case []any:
			rec["partAttendeeInfo"] = append(parts, att)
		case []map[string]any:
			rec["partAttendeeInfo"] = append(parts, att)
		default:
			rec["partAttendeeInfo"] = []any{att}
		}
		return
	case 5:
		if end, err := time.Parse(timeLayout, text(rec["endTime"])); err == nil {
			by := cmp.Or(asInt(cfg["prolongLength"]), 15)
			rec["endTime"] = end.Add(time.Duration(max(by, 1)) * time.Minute).Format(timeLayout)
			return
		}
	case 6:
		var old string
		pd, ok := rec["picDisplay"].(map[string]any)
		if ok {
			old = text(pd["imageType"])
		}
		l := layouts[rng.IntN(len(layouts))]
		for l.imageType == old {
			l = layouts[rng.IntN(len(layouts))]
		}
		parts, _ := rec["partAttendeeInfo"].([]any)
		rec["picDisplay"] = picDisplay(rng, l, parts)
		return
	case 7:
		cfg = configOf(rec)
		on, _ := cfg["enableWaitingRoom"].(bool)
		cfg["enableWaitingRoom"] = !on
		return
	case 8:
		if resetGuestPassword(rng, rec, cfg) {
			return
		}
	case 9:
		if asInt(rec["recordType"])&1 == 0 {
			rec["recordType"] = asInt(rec["recordType"]) | 1
			g.startLive(rec)
		} else {
			rec["recordType"] = asInt(rec["recordType"]) &^ 1
			delete(rec, "liveAddress")
			delete(rec, "auxAddress")
			delete(rec, "liveUrl")
		}
		return
	}
	old := text(rec["subject"])
	s := subject(rng)
	for s == old {
		s = subject(rng)
	}
	rec["subject"] = s
}

// configOf returns rec's confConfigInfo, adding an empty one if it has none
// (or one of another shape), for a change to set a flag in.
func configOf(rec Record) map[string]any {
	cfg, ok := rec["confConfigInfo"].(map[string]any)
	if !ok {
		cfg = map[string]any{}
		rec["confConfigInfo"] = cfg
	}
	return cfg
}

// resetGuestPassword gives the meeting a new guest password, in
// confConfigInfo and in passwordEntry alike, as a host who resets it does.
// It reports false if the record has no guest password to reset.
func resetGuestPassword(rng *rand.Rand, rec Record, cfg map[string]any) bool {
	old, ok := cfg["guestPwd"].(string)
	if !ok {
		return false
	}
	pwd := digitsFrom(rng, 6)
	for pwd == old {
		pwd = digitsFrom(rng, 6)
	}
	cfg["guestPwd"] = pwd
	if entries, ok := rec["passwordEntry"].([]any); ok {
		for _, e := range entries {
			if e, ok := e.(map[string]any); ok && e["conferenceRole"] == "general" {
				e["password"] = pwd
			}
		}
	}
	return true
}
