package apisim_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

const (
	token = "test-token"
	// fixturePath is the example answer of the API reference's "Querying the
	// Ongoing Meeting List" page, copied verbatim.
	fixturePath = "testdata/online-example.json"
	timeLayout  = "2006-01-02 15:04"
)

var hex32 = `^[0-9a-f]{32}$`

func fixedNow() time.Time { return time.Date(2024, 1, 19, 8, 0, 0, 0, time.UTC) }

func newServer(tb testing.TB, opts apisim.Options) *apisim.Server {
	tb.Helper()
	if opts.Now == nil {
		opts.Now = fixedNow
	}
	srv := apisim.NewServer(opts)
	tb.Cleanup(srv.Close)
	return srv
}

func newClient() *http.Client { return &http.Client{Timeout: 10 * time.Second} }

// reply is a whole HTTP answer, read before the assertions so that they see
// the body and headers together.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func do(tb testing.TB, srv *apisim.Server, method, path, query, tok string) reply {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), method, srv.URL+path+"?"+query, nil)
	require.NoError(tb, err)
	if tok != "" {
		req.Header.Set("X-Access-Token", tok)
	}
	resp, err := newClient().Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	return reply{status: resp.StatusCode, header: resp.Header, body: body}
}

func get(tb testing.TB, srv *apisim.Server, query string) reply {
	tb.Helper()
	return do(tb, srv, http.MethodGet, apisim.Path, query, token)
}

type pageBody struct {
	Offset int              `json:"offset"`
	Limit  int              `json:"limit"`
	Count  int              `json:"count"`
	Data   []map[string]any `json:"data"`
}

func (p pageBody) uuids() []string {
	ids := make([]string, len(p.Data))
	for i, rec := range p.Data {
		ids[i], _ = rec["confUUID"].(string)
	}
	return ids
}

func listPage(tb testing.TB, srv *apisim.Server, query string) pageBody {
	tb.Helper()
	r := get(tb, srv, query)
	require.Equal(tb, http.StatusOK, r.status, "body: %s", r.body)
	var p pageBody
	require.NoError(tb, json.Unmarshal(r.body, &p))
	return p
}

type errorBody struct {
	Code      string `json:"error_code"`
	Msg       string `json:"error_msg"`
	RequestID string `json:"request_id"`
}

func requireAPIError(tb testing.TB, r reply, status int, code string) {
	tb.Helper()
	require.Equal(tb, status, r.status, "body: %s", r.body)
	assert.Equal(tb, "application/json;charset=UTF-8", r.header.Get("Content-Type"))
	var e errorBody
	require.NoError(tb, json.Unmarshal(r.body, &e), "body: %s", r.body)
	assert.Equal(tb, code, e.Code)
	assert.NotEmpty(tb, e.Msg)
	assert.Regexp(tb, hex32, e.RequestID)
	assert.Equal(tb, r.header.Get("X-Request-Id"), e.RequestID)
}

func loadFixture(tb testing.TB) map[string]any {
	tb.Helper()
	b, err := os.ReadFile(fixturePath)
	require.NoError(tb, err)
	var body struct {
		Data []map[string]any `json:"data"`
	}
	require.NoError(tb, json.Unmarshal(b, &body))
	require.Len(tb, body.Data, 1)
	return body.Data[0]
}

// viaJSON returns v as a client decodes it, so records built in Go compare
// with records decoded from the fixture.
func viaJSON(tb testing.TB, v any) map[string]any {
	tb.Helper()
	b, err := json.Marshal(v)
	require.NoError(tb, err)
	var m map[string]any
	require.NoError(tb, json.Unmarshal(b, &m))
	return m
}

func kind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func TestPagingReturnsEveryMeetingOnce(t *testing.T) {
	srv := newServer(t, apisim.Options{Token: token})
	want := srv.Sim.AddN(1234)
	require.Equal(t, 1234, srv.Sim.Len())

	var got []string
	var starts []string
	for offset := 0; ; offset += apisim.MaxLimit {
		p := listPage(t, srv, fmt.Sprintf("offset=%d&limit=%d", offset, apisim.MaxLimit))
		assert.Equal(t, 1234, p.Count)
		assert.Equal(t, offset, p.Offset)
		assert.Equal(t, apisim.MaxLimit, p.Limit)
		if len(p.Data) == 0 {
			break
		}
		got = append(got, p.uuids()...)
		for _, rec := range p.Data {
			starts = append(starts, rec["startTime"].(string))
		}
	}

	assert.ElementsMatch(t, want, got, "every meeting exactly once")
	assert.Equal(t, srv.Sim.UUIDs(), got, "listing order")
	assert.True(t, slices.IsSorted(starts), "ascending startTime")
}

func TestPastTheEndDataIsAnEmptyArray(t *testing.T) {
	srv := newServer(t, apisim.Options{})
	srv.Sim.AddN(3)

	r := get(t, srv, "offset=3")
	require.Equal(t, http.StatusOK, r.status)
	assert.Contains(t, string(r.body), `"data":[]`)
	assert.Contains(t, string(r.body), `"count":3`)
}

func TestDefaultLimit(t *testing.T) {
	srv := newServer(t, apisim.Options{})
	srv.Sim.AddN(30)

	p := listPage(t, srv, "")
	assert.Equal(t, apisim.DefaultLimit, p.Limit)
	assert.Equal(t, 0, p.Offset)
	assert.Equal(t, 30, p.Count)
	assert.Equal(t, srv.Sim.UUIDs()[:apisim.DefaultLimit], p.uuids())
}

func TestSuccessHeaders(t *testing.T) {
	srv := newServer(t, apisim.Options{})
	srv.Sim.AddN(1)

	first, second := get(t, srv, ""), get(t, srv, "")
	for _, r := range []reply{first, second} {
		require.Equal(t, http.StatusOK, r.status)
		assert.Equal(t, "application/json;charset=UTF-8", r.header.Get("Content-Type"))
		assert.Regexp(t, hex32, r.header.Get("X-Request-Id"))
	}
	assert.NotEqual(t, first.header.Get("X-Request-Id"), second.header.Get("X-Request-Id"))
}

func TestInvalidParameters(t *testing.T) {
	srv := newServer(t, apisim.Options{Token: token})
	srv.Sim.AddN(5)

	tests := []struct {
		name  string
		query string
	}{
		{name: "limit above max", query: "limit=501"},
		{name: "limit zero", query: "limit=0"},
		{name: "limit negative", query: "limit=-1"},
		{name: "limit not a number", query: "limit=ten"},
		{name: "offset negative", query: "offset=-1"},
		{name: "offset not a number", query: "offset=1.5"},
		{name: "queryAll not a boolean", query: "queryAll=yes"},
		{name: "searchKey empty", query: "searchKey="},
		{name: "searchKey too long", query: "searchKey=" + strings.Repeat("a", 129)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireAPIError(t, get(t, srv, tt.query), http.StatusBadRequest, apisim.CodeInvalidParam)
		})
	}

	t.Run("bounds are accepted", func(t *testing.T) {
		p := listPage(t, srv, "limit=500&searchKey="+url.QueryEscape(strings.Repeat("é", 128)))
		assert.Equal(t, 500, p.Limit)
		assert.Empty(t, p.Data)
	})
}

func TestToken(t *testing.T) {
	tests := []struct {
		name       string
		accept     string
		send       string
		query      string
		wantStatus int
	}{
		{name: "missing", accept: "secret", send: "", wantStatus: http.StatusUnauthorized},
		{name: "wrong", accept: "secret", send: "stale", wantStatus: http.StatusUnauthorized},
		{name: "checked before parameters", accept: "secret", send: "stale", query: "limit=501", wantStatus: http.StatusUnauthorized},
		{name: "right", accept: "secret", send: "secret", wantStatus: http.StatusOK},
		{name: "any token when none configured", accept: "", send: "anything", wantStatus: http.StatusOK},
		{name: "missing when none configured", accept: "", send: "", wantStatus: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, apisim.Options{Token: tt.accept})
			r := do(t, srv, http.MethodGet, apisim.Path, tt.query, tt.send)
			if tt.wantStatus == http.StatusUnauthorized {
				requireAPIError(t, r, http.StatusUnauthorized, apisim.CodeInvalidToken)
				return
			}
			assert.Equal(t, tt.wantStatus, r.status)
		})
	}
}

func TestMethodAndPath(t *testing.T) {
	srv := newServer(t, apisim.Options{})

	tests := []struct {
		name       string
		method     string
		path       string
		wantStatus int
	}{
		{name: "post", method: http.MethodPost, path: apisim.Path, wantStatus: http.StatusMethodNotAllowed},
		{name: "delete", method: http.MethodDelete, path: apisim.Path, wantStatus: http.StatusMethodNotAllowed},
		{name: "other path", method: http.MethodGet, path: "/v1/mmc/management/conferences/history", wantStatus: http.StatusNotFound},
		{name: "trailing slash", method: http.MethodGet, path: apisim.Path + "/", wantStatus: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireAPIError(t, do(t, srv, tt.method, tt.path, "", token), tt.wantStatus, apisim.CodeNoSuchAPI)
		})
	}
}

func TestQueryAll(t *testing.T) {
	const admin = "ad0000000000000000000000000000ad"
	recs := []apisim.Record{
		{"userUUID": admin, "startTime": "2024-01-19 07:00"},
		{"userUUID": "someone-else", "startTime": "2024-01-19 07:01"},
		{"userUUID": admin, "startTime": "2024-01-19 07:02"},
		{"startTime": "2024-01-19 07:03"},
	}

	tests := []struct {
		name  string
		admin string
		query string
		want  []int // indexes into recs
	}{
		{name: "default is own meetings", admin: admin, query: "", want: []int{0, 2}},
		{name: "false is own meetings", admin: admin, query: "queryAll=false", want: []int{0, 2}},
		{name: "true is everyone's", admin: admin, query: "queryAll=true", want: []int{0, 1, 2, 3}},
		{name: "no admin configured lists all", admin: "", query: "queryAll=false", want: []int{0, 1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, apisim.Options{AdminUserUUID: tt.admin})
			ids := srv.Sim.Add(recs...)
			want := make([]string, len(tt.want))
			for i, j := range tt.want {
				want[i] = ids[j]
			}

			p := listPage(t, srv, tt.query)
			assert.Equal(t, want, p.uuids())
			assert.Equal(t, len(want), p.Count)
		})
	}

	t.Run("generated meetings include the admin's", func(t *testing.T) {
		srv := newServer(t, apisim.Options{AdminUserUUID: admin})
		srv.Sim.AddN(200)
		p := listPage(t, srv, "limit=500")
		require.NotEmpty(t, p.Data)
		assert.Less(t, p.Count, 200)
		for _, rec := range p.Data {
			assert.Equal(t, admin, rec["userUUID"])
		}
	})
}

func TestSearchKey(t *testing.T) {
	srv := newServer(t, apisim.Options{})
	ids := srv.Sim.Add(
		apisim.Record{"subject": "Weekly sync 17", "scheduserName": "alice", "conferenceID": "914083136", "startTime": "2024-01-19 07:00"},
		apisim.Record{"subject": "Design review 3", "scheduserName": "Bob", "conferenceID": "123456789", "startTime": "2024-01-19 07:01"},
		apisim.Record{"subject": "Standup 5", "scheduserName": "carol", "conferenceID": "555000111", "startTime": "2024-01-19 07:02"},
	)

	tests := []struct {
		name      string
		key       string
		want      []string
		wantCount int
	}{
		{name: "conferenceID", key: "914083136", want: ids[0:1], wantCount: 1},
		{name: "part of conferenceID", key: "4083", want: ids[0:1], wantCount: 1},
		{name: "subject ignores case", key: "WEEKLY", want: ids[0:1], wantCount: 1},
		{name: "scheduler ignores case", key: "bob", want: ids[1:2], wantCount: 1},
		{name: "several fields", key: "5", want: ids[1:3], wantCount: 2},
		{name: "paged", key: "5&limit=1&offset=1", want: ids[2:3], wantCount: 2},
		{name: "no match", key: "nothing", want: []string{}, wantCount: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := listPage(t, srv, "searchKey="+tt.key)
			assert.Equal(t, tt.want, p.uuids())
			assert.Equal(t, tt.wantCount, p.Count)
		})
	}
}

func TestListOrder(t *testing.T) {
	sim := apisim.New(apisim.Options{Now: fixedNow})
	ids := sim.Add(
		apisim.Record{"startTime": "2024-01-19 07:30"},
		apisim.Record{"startTime": "2024-01-19 07:10"},
		apisim.Record{"startTime": "2024-01-19 07:30"},
		apisim.Record{"startTime": "2024-01-19 07:10"},
		apisim.Record{},
	)
	assert.Equal(t, []string{ids[4], ids[1], ids[3], ids[0], ids[2]}, sim.UUIDs(),
		"by startTime, ties in insertion order, no startTime first")

	t.Run("a change keeps the place among ties", func(t *testing.T) {
		require.True(t, sim.Update(ids[1], func(r apisim.Record) { r["subject"] = "renamed" }))
		assert.Equal(t, []string{ids[4], ids[1], ids[3], ids[0], ids[2]}, sim.UUIDs())
	})
	t.Run("a new startTime moves the meeting", func(t *testing.T) {
		require.True(t, sim.Update(ids[1], func(r apisim.Record) { r["startTime"] = "2024-01-19 08:00" }))
		assert.Equal(t, []string{ids[4], ids[3], ids[0], ids[2], ids[1]}, sim.UUIDs())
	})
}

func TestChangesVisibleInNextListing(t *testing.T) {
	srv := newServer(t, apisim.Options{})
	ids := srv.Sim.AddN(5)

	require.True(t, srv.Sim.End(ids[0]))
	p := listPage(t, srv, "")
	assert.NotContains(t, p.uuids(), ids[0])
	assert.Equal(t, 4, p.Count)

	require.True(t, srv.Sim.Update(ids[1], func(r apisim.Record) { r["subject"] = "Renamed 1" }))
	p = listPage(t, srv, "searchKey="+url.QueryEscape("Renamed 1"))
	assert.Equal(t, []string{ids[1]}, p.uuids())

	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		kind, id := srv.Sim.Step(rng)
		listed := listPage(t, srv, "limit=500")
		switch kind {
		case "started":
			assert.Contains(t, listed.uuids(), id)
		case "ended":
			assert.NotContains(t, listed.uuids(), id)
		case "changed":
			rec, ok := srv.Sim.Get(id)
			require.True(t, ok)
			i := slices.Index(listed.uuids(), id)
			require.GreaterOrEqual(t, i, 0)
			assert.Equal(t, viaJSON(t, rec), listed.Data[i])
		default:
			t.Fatalf("unknown step kind %q", kind)
		}
		assert.Equal(t, srv.Sim.UUIDs(), listed.uuids())
	}
}

func TestUpdateKeepsOtherFields(t *testing.T) {
	sim := apisim.New(apisim.Options{Now: fixedNow})
	id := sim.AddN(1)[0]
	before, ok := sim.Get(id)
	require.True(t, ok)

	require.True(t, sim.Update(id, func(r apisim.Record) {
		r["onlineAttendeeAmount"] = 42
		r["confUUID"] = "an attempt to rename"
	}))

	got, ok := sim.Get(id)
	require.True(t, ok)
	want := before
	want["onlineAttendeeAmount"] = 42
	assert.Equal(t, want, got, "only the changed field differs; confUUID is kept")
}

func TestUnknownMeeting(t *testing.T) {
	sim := apisim.New(apisim.Options{})
	sim.AddN(2)

	assert.False(t, sim.End("missing"))
	assert.False(t, sim.Update("missing", func(apisim.Record) { t.Error("fn called for a missing meeting") }))
	_, ok := sim.Get("missing")
	assert.False(t, ok)
	assert.Equal(t, 2, sim.Len())
}

func TestRecordsAreCopied(t *testing.T) {
	sim := apisim.New(apisim.Options{Now: fixedNow})
	rec := sim.NewRecord()
	id := sim.Add(rec)[0]

	rec["subject"] = "changed by the caller after Add"
	rec["confConfigInfo"].(map[string]any)["guestPwd"] = "000000"
	got, ok := sim.Get(id)
	require.True(t, ok)
	assert.NotEqual(t, rec["subject"], got["subject"])
	assert.NotEqual(t, "000000", got["confConfigInfo"].(map[string]any)["guestPwd"])

	got["subject"] = "changed by the caller after Get"
	got["partAttendeeInfo"] = nil
	again, _ := sim.Get(id)
	assert.NotEqual(t, got["subject"], again["subject"])
	assert.NotNil(t, again["partAttendeeInfo"])

	meetings := sim.Meetings()
	require.Len(t, meetings, 1)
	assert.Equal(t, again, meetings[0])
}

func TestAddGeneratesOrKeepsConfUUID(t *testing.T) {
	sim := apisim.New(apisim.Options{})
	ids := sim.Add(apisim.Record{"subject": "no id"}, apisim.Record{"confUUID": "given", "subject": "first"})
	assert.Regexp(t, hex32, ids[0])
	assert.Equal(t, "given", ids[1])

	again := sim.Add(apisim.Record{"confUUID": "given", "subject": "second"})
	assert.Equal(t, []string{"given"}, again)
	assert.Equal(t, 2, sim.Len(), "an existing confUUID is replaced, not listed twice")
	got, _ := sim.Get("given")
	assert.Equal(t, "second", got["subject"])

	t.Run("large batch", func(t *testing.T) {
		batch := make([]apisim.Record, 40)
		for i := range batch {
			batch[i] = apisim.Record{"startTime": fmt.Sprintf("2024-01-19 07:%02d", 59-i)}
		}
		batch[10]["confUUID"] = "given"
		batch[20]["confUUID"], batch[30]["confUUID"] = "twice", "twice"
		ids := sim.Add(batch...)
		assert.Equal(t, "given", ids[10])
		assert.Equal(t, 2+40-2, sim.Len(), "a confUUID already listed or repeated in the batch is listed once")

		got, _ := sim.Get("twice")
		assert.Equal(t, "2024-01-19 07:29", got["startTime"], "the later record wins")
		starts := make([]string, 0, sim.Len())
		for _, rec := range sim.Meetings() {
			start, _ := rec["startTime"].(string)
			starts = append(starts, start)
		}
		assert.True(t, slices.IsSorted(starts))
	})
}

func TestFixtureRecordIsServedVerbatim(t *testing.T) {
	srv := newServer(t, apisim.Options{})
	want := loadFixture(t)
	want["someFieldFromTheFuture"] = map[string]any{"nested": []any{1.0, "two"}}
	srv.Sim.Add(want)

	p := listPage(t, srv, "searchKey=914083136")
	require.Len(t, p.Data, 1)
	assert.Equal(t, want, p.Data[0])
}

func TestStep(t *testing.T) {
	sim := apisim.New(apisim.Options{Now: fixedNow})

	kind, id := sim.Step(nil)
	assert.Equal(t, "started", kind, "with no meetings a step starts one")
	assert.Equal(t, []string{id}, sim.UUIDs())

	rng := rand.New(rand.NewPCG(7, 7))
	seen := map[string]int{}
	for range 600 {
		kind, id := sim.Step(rng)
		seen[kind]++
		_, listed := sim.Get(id)
		switch kind {
		case "started", "changed":
			assert.True(t, listed, kind)
		case "ended":
			assert.False(t, listed, kind)
		}
	}
	assert.InDelta(t, 240, seen["started"], 60)
	assert.InDelta(t, 180, seen["ended"], 60)
	assert.InDelta(t, 180, seen["changed"], 60)
}

func TestStepChangeChangesSomething(t *testing.T) {
	sim := apisim.New(apisim.Options{Now: fixedNow})
	sim.AddN(1)
	rng := rand.New(rand.NewPCG(3, 4))
	changes := 0
	for changes < 50 {
		id := sim.UUIDs()[0]
		before, _ := sim.Get(id)
		kind, stepped := sim.Step(rng)
		switch kind {
		case "changed":
			changes++
			after, ok := sim.Get(stepped)
			require.True(t, ok)
			assert.NotEqual(t, before, after)
			// Keep exactly one meeting, so every change hits it.
		case "started":
			require.True(t, sim.End(stepped))
		case "ended":
			sim.Add(before)
		}
	}
}

func TestFailOnce(t *testing.T) {
	srv := newServer(t, apisim.Options{Token: token})
	srv.Sim.AddN(1234)
	srv.Sim.FailOnce(500, apisim.Fault{Status: http.StatusInternalServerError})

	assert.Equal(t, http.StatusOK, get(t, srv, "offset=0&limit=500").status)
	requireAPIError(t, get(t, srv, "offset=500&limit=500"), http.StatusInternalServerError, apisim.CodeServerError)
	assert.Equal(t, http.StatusOK, get(t, srv, "offset=500&limit=500").status, "only once")
	assert.Equal(t, 3, srv.Sim.Requests())

	t.Run("several queued", func(t *testing.T) {
		srv.Sim.FailOnce(0, apisim.Fault{Status: http.StatusServiceUnavailable, Code: "MMC.111000002", Msg: "busy"})
		srv.Sim.FailOnce(0, apisim.Fault{Status: http.StatusTooManyRequests})
		r := get(t, srv, "") // no offset counts as 0
		requireAPIError(t, r, http.StatusServiceUnavailable, "MMC.111000002")
		assert.Contains(t, string(r.body), `"error_msg":"busy"`)
		requireAPIError(t, get(t, srv, "offset=0"), http.StatusTooManyRequests, apisim.CodeFlowControl)
		assert.Equal(t, http.StatusOK, get(t, srv, "offset=0").status)
	})
}

func TestFaultBody(t *testing.T) {
	tests := []struct {
		name            string
		fault           apisim.Fault
		wantStatus      int
		wantContentType string
	}{
		{
			name:            "gateway html page",
			fault:           apisim.Fault{Status: http.StatusBadGateway, Body: "<html><body>502 Bad Gateway</body></html>"},
			wantStatus:      http.StatusBadGateway,
			wantContentType: "text/html; charset=utf-8",
		},
		{
			name:            "truncated json with 200",
			fault:           apisim.Fault{Body: `{"offset":0,"limit":20,"count":3,"data":[{"confUUID":"05`},
			wantStatus:      http.StatusOK,
			wantContentType: "application/json;charset=UTF-8",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, apisim.Options{})
			srv.Sim.AddN(3)
			srv.Sim.SetHook(func(*http.Request) *apisim.Fault { return &tt.fault })

			r := get(t, srv, "")
			assert.Equal(t, tt.wantStatus, r.status)
			assert.Equal(t, tt.fault.Body, string(r.body))
			assert.Equal(t, tt.wantContentType, r.header.Get("Content-Type"))
			assert.Regexp(t, hex32, r.header.Get("X-Request-Id"))

			srv.Sim.SetHook(nil)
			assert.Equal(t, http.StatusOK, get(t, srv, "").status, "hook removed")
		})
	}
}

func TestFaultReset(t *testing.T) {
	srv := newServer(t, apisim.Options{})
	srv.Sim.AddN(50)
	srv.Sim.FailOnce(0, apisim.Fault{Reset: true})
	client := newClient()

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+apisim.Path+"?limit=50", nil)
	require.NoError(t, err)
	req.Header.Set("X-Access-Token", token)
	resp, err := client.Do(req)
	require.NoError(t, err, "the status line and headers arrive")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	_, err = io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)

	assert.Equal(t, 50, listPage(t, srv, "limit=50").Count, "the next request is answered")
}

func TestFaultDelay(t *testing.T) {
	srv := newServer(t, apisim.Options{})
	srv.Sim.AddN(1)

	t.Run("answers after the delay", func(t *testing.T) {
		srv.Sim.FailOnce(0, apisim.Fault{Delay: 50 * time.Millisecond})
		start := time.Now()
		p := listPage(t, srv, "")
		assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)
		assert.Equal(t, 1, p.Count)
	})
	t.Run("gives up when the client does", func(t *testing.T) {
		srv.Sim.FailOnce(0, apisim.Fault{Delay: time.Hour})
		client := &http.Client{Timeout: 100 * time.Millisecond}
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+apisim.Path, nil)
		require.NoError(t, err)
		req.Header.Set("X-Access-Token", token)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		var uerr *url.Error
		require.ErrorAs(t, err, &uerr)
		assert.True(t, uerr.Timeout())
		// The cleanup's srv.Close would hang if the handler kept waiting.
	})
}

func TestHookEndsMeetingBetweenPages(t *testing.T) {
	srv := newServer(t, apisim.Options{})
	srv.Sim.AddN(10)
	order := srv.Sim.UUIDs()

	var once sync.Once
	srv.Sim.SetHook(func(r *http.Request) *apisim.Fault {
		if r.URL.Query().Get("offset") == "5" {
			once.Do(func() { srv.Sim.End(order[0]) })
		}
		return nil
	})

	first := listPage(t, srv, "offset=0&limit=5")
	second := listPage(t, srv, "offset=5&limit=5")
	assert.Equal(t, order[0:5], first.uuids())
	assert.Equal(t, order[6:10], second.uuids(), "every later meeting moved forward, so one is skipped")
	assert.Equal(t, 9, second.Count)
}

func TestNewRecordMatchesFixture(t *testing.T) {
	fixture := loadFixture(t)
	now := fixedNow()
	sim := apisim.New(apisim.Options{Now: fixedNow})

	uuids, confIDs := map[string]bool{}, map[string]bool{}
	var withLive int
	const n = 200
	for range n {
		rec := viaJSON(t, sim.NewRecord())

		for k, v := range fixture {
			require.Contains(t, rec, k)
			assert.Equal(t, kind(v), kind(rec[k]), k)
		}
		assert.Contains(t, rec, "onlineAttendeeAmount")
		if _, ok := rec["liveAddress"]; ok {
			withLive++
			assert.Contains(t, rec, "auxAddress")
			assert.Contains(t, rec, "liveUrl")
		}

		cfg := rec["confConfigInfo"].(map[string]any)
		for k, v := range fixture["confConfigInfo"].(map[string]any) {
			require.Contains(t, cfg, k)
			assert.Equal(t, kind(v), kind(cfg[k]), "confConfigInfo.%s", k)
		}
		assert.Regexp(t, `^\d{6}$`, cfg["guestPwd"])

		pw := rec["passwordEntry"].([]any)
		roles := []string{"chair", "general"}
		if rec["webinar"] == true {
			roles = append(roles, "audience")
		}
		require.Len(t, pw, len(roles))
		for i, role := range roles {
			entry := pw[i].(map[string]any)
			assert.Equal(t, role, entry["conferenceRole"])
			assert.Regexp(t, `^\d{6}$`, entry["password"])
		}
		assert.Equal(t, cfg["guestPwd"], pw[1].(map[string]any)["password"], "the guest password is the general role's")

		wantAttendee := fixture["partAttendeeInfo"].([]any)[0].(map[string]any)
		attendees := rec["partAttendeeInfo"].([]any)
		require.NotEmpty(t, attendees)
		require.LessOrEqual(t, len(attendees), 3)
		for _, a := range attendees {
			a := a.(map[string]any)
			for k := range wantAttendee {
				assert.Contains(t, a, k)
			}
			assert.Regexp(t, `^\+\d+\*{4}\d{3}$`, a["phone"])
		}

		id, confID := rec["confUUID"].(string), rec["conferenceID"].(string)
		assert.Regexp(t, hex32, id)
		assert.Regexp(t, `^[1-9]\d{8}$`, confID)
		assert.False(t, uuids[id], "confUUID repeated")
		assert.False(t, confIDs[confID], "conferenceID repeated")
		uuids[id], confIDs[confID] = true, true
		assert.Contains(t, rec["chairJoinUri"], confID)

		assert.Regexp(t, `^[A-Za-z0-9: ]+ \d+$`, rec["subject"])
		assert.Equal(t, "Created", rec["conferenceState"])
		start, err := time.Parse(timeLayout, rec["startTime"].(string))
		require.NoError(t, err)
		end, err := time.Parse(timeLayout, rec["endTime"].(string))
		require.NoError(t, err)
		assert.False(t, start.After(now), "an ongoing meeting has started")
		assert.GreaterOrEqual(t, end.Sub(start), 30*time.Minute)
		assert.LessOrEqual(t, end.Sub(start), 120*time.Minute)
	}
	assert.Positive(t, withLive, "some meetings stream live")
	assert.Less(t, withLive, n, "not every meeting streams live")
	assert.Zero(t, sim.Len(), "NewRecord does not list the record")
}

func TestSameSeedSameRecords(t *testing.T) {
	a := apisim.New(apisim.Options{Seed: 42, Now: fixedNow})
	b := apisim.New(apisim.Options{Seed: 42, Now: fixedNow})
	c := apisim.New(apisim.Options{Seed: 43, Now: fixedNow})

	assert.Equal(t, a.NewRecord(), b.NewRecord())
	assert.Equal(t, a.AddN(10), b.AddN(10))
	assert.Equal(t, a.Meetings(), b.Meetings())
	assert.NotEqual(t, a.NewRecord()["confUUID"], c.NewRecord()["confUUID"])
}

func TestConcurrentUse(t *testing.T) {
	srv := newServer(t, apisim.Options{Token: token})
	srv.Sim.AddN(300)
	srv.Sim.SetHook(func(*http.Request) *apisim.Fault {
		srv.Sim.Len()
		return nil
	})

	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 0))
			for range 200 {
				_, id := srv.Sim.Step(rng)
				srv.Sim.Update(id, func(r apisim.Record) { r["onlineAttendeeAmount"] = 1 })
				srv.Sim.Get(id)
			}
		})
		wg.Go(func() {
			// Only assert here: require must not stop the test from another goroutine.
			client := newClient()
			for offset := 0; offset < 600; offset += 20 {
				req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+apisim.Path+"?limit=20&offset="+strconv.Itoa(offset), nil)
				if !assert.NoError(t, err) {
					return
				}
				req.Header.Set("X-Access-Token", token)
				resp, err := client.Do(req)
				if !assert.NoError(t, err) {
					return
				}
				var p pageBody
				assert.NoError(t, json.NewDecoder(resp.Body).Decode(&p))
				resp.Body.Close()
				assert.Equal(t, http.StatusOK, resp.StatusCode)
				assert.LessOrEqual(t, len(p.Data), 20)
				srv.Sim.Meetings()
			}
		})
	}
	wg.Wait()
	assert.Equal(t, len(srv.Sim.UUIDs()), srv.Sim.Len())
}

func ExampleNewServer() {
	srv := apisim.NewServer(apisim.Options{Token: "secret"})
	defer srv.Close()
	srv.Sim.AddN(3)

	req, err := http.NewRequest(http.MethodGet, srv.URL+apisim.Path+"?limit=2", nil)
	if err != nil {
		panic(err)
	}
	req.Header.Set("X-Access-Token", "secret")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var page struct {
		Count int              `json:"count"`
		Data  []map[string]any `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		panic(err)
	}
	fmt.Println(resp.StatusCode, page.Count, len(page.Data))
	// Output: 200 3 2
}

func BenchmarkListPage(b *testing.B) {
	const meetings = 10_000
	sim := apisim.New(apisim.Options{Token: token, Now: fixedNow})
	sim.AddN(meetings)

	tests := []struct {
		name    string
		query   func(offset int) string
		advance bool
	}{
		{name: "all", query: func(offset int) string { return "limit=500&offset=" + strconv.Itoa(offset) }, advance: true},
		{name: "searchKey", query: func(int) string { return "limit=500&searchKey=sync" }},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			offset := 0
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, apisim.Path+"?"+tt.query(offset), nil)
				req.Header.Set("X-Access-Token", token)
				rec := httptest.NewRecorder()
				sim.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
				if tt.advance {
					offset = (offset + 500) % meetings
				}
			}
		})
	}
}
