package apisim_test

import (
	"bufio"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// modelPath lists the fields of the API's ConferenceInfo model and of the
// types nested in it; testdata/README.md says where it comes from.
const modelPath = "testdata/conference-info-model.txt"

// modelField is one line of the model: a field's path, its JSON kind, and
// the values an enumeration documents, one of them (oneOf) or a
// comma-separated list of them (listOf).
type modelField struct {
	kind          string
	oneOf, listOf []string
}

func loadModel(tb testing.TB) map[string]modelField {
	tb.Helper()
	f, err := os.Open(modelPath)
	require.NoError(tb, err)
	defer f.Close()
	model := map[string]modelField{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Fields(line)
		require.True(tb, len(parts) == 2 || len(parts) == 3, "model line %q", line)
		field := modelField{kind: parts[1]}
		if len(parts) == 3 {
			if strings.Contains(parts[2], ",") {
				field.listOf = strings.Split(parts[2], ",")
			} else {
				field.oneOf = strings.Split(parts[2], "|")
			}
		}
		require.NotContains(tb, model, parts[0], "model line %q repeats a path", line)
		model[parts[0]] = field
	}
	require.NoError(tb, sc.Err())
	return model
}

// jsonKind names the kind of a value decoded from JSON, telling whole
// numbers (the API's int32 fields) from others.
func jsonKind(v any) string {
	switch v := v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64:
		if v == math.Trunc(v) {
			return "integer"
		}
		return "number"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case nil:
		return "null"
	default:
		return "unknown"
	}
}

// walkFields calls visit for every value in v with its model path: object
// keys joined by dots, and "[]" for the elements of an array.
func walkFields(path string, v any, visit func(path string, v any)) {
	if path != "" {
		visit(path, v)
	}
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			p := k
			if path != "" {
				p = path + "." + k
			}
			walkFields(p, x, visit)
		}
	case []any:
		for _, x := range v {
			walkFields(path+"[]", x, visit)
		}
	}
}

// checkAgainstModel asserts that every field of rec is in the model, of
// the model's kind, with a documented value where the model lists them,
// and marks the paths it saw.
func checkAgainstModel(tb testing.TB, model map[string]modelField, rec map[string]any, seen map[string]bool) {
	tb.Helper()
	walkFields("", rec, func(path string, v any) {
		f, ok := model[path]
		if !assert.True(tb, ok, "%s of %s is not in the model", path, rec["confUUID"]) {
			return
		}
		seen[path] = true
		if !assert.Equal(tb, f.kind, jsonKind(v), "kind of %s in %s", path, rec["confUUID"]) {
			return
		}
		switch {
		case f.oneOf != nil:
			assert.Contains(tb, f.oneOf, textOf(v), "%s in %s", path, rec["confUUID"])
		case f.listOf != nil:
			for _, item := range strings.Split(v.(string), ",") {
				assert.Contains(tb, f.listOf, item, "%s in %s", path, rec["confUUID"])
			}
		}
	})
}

// textOf spells a scalar as the model lists enumerations.
func textOf(v any) string {
	if n, ok := v.(float64); ok {
		return strconv.FormatFloat(n, 'f', -1, 64)
	}
	s, _ := v.(string)
	return s
}

// TestModelFitsTheAPIExample checks the model file against the API's own
// example: every field of it is in the model, of the model's kind.
func TestModelFitsTheAPIExample(t *testing.T) {
	model := loadModel(t)
	checkAgainstModel(t, model, loadFixture(t), map[string]bool{})
}

// TestListingCoversTheModel lists generated meetings over HTTP, as a client
// does, and checks them against the official model: together they carry
// every field of it, each of the right kind and with a documented value;
// no record carries a field the model lacks; and recurring meetings,
// webinars, cloud-room meetings and live streams are among them, each with
// the fields that only they have.
func TestListingCoversTheModel(t *testing.T) {
	model := loadModel(t)
	srv := newServer(t, apisim.Options{Token: token, Seed: 11})
	const n = 400
	srv.Sim.AddN(n)
	p := listPage(t, srv, "limit=500")
	require.Len(t, p.Data, n)

	seen := map[string]bool{}
	var recurring, webinars, cloudRooms, live int
	today := fixedNow().Format("2006-01-02")
	for _, rec := range p.Data {
		checkAgainstModel(t, model, rec, seen)
		id := rec["confUUID"]

		_, hasCycle := rec["cycleParams"]
		isCycle := rec["conferenceType"] == 2.0
		assert.Equal(t, isCycle, rec["confType"] == "CYCLE", "confType of %s", id)
		for _, k := range []string{"cycleParams", "subConfs", "cycleSubConfID"} {
			assert.Equal(t, isCycle, rec[k] != nil, "%s of %s, conferenceType %v", k, id, rec["conferenceType"])
		}
		if isCycle && hasCycle {
			recurring++
			cycle := rec["cycleParams"].(map[string]any)
			assert.LessOrEqual(t, cycle["startDate"], today, "the series of %s has begun", id)
			assert.Greater(t, cycle["endDate"], today, "the series of %s goes on", id)
			subs := rec["subConfs"].([]any)
			require.NotEmpty(t, subs)
			first := subs[0].(map[string]any)
			assert.Equal(t, rec["cycleSubConfID"], first["cycleSubConfID"], "the ongoing instance of %s comes first", id)
			assert.Equal(t, rec["startTime"], first["startTime"])
			for _, s := range subs {
				s := s.(map[string]any)
				assert.Equal(t, rec["conferenceID"], s["conferenceID"], "a series shares its meeting ID")
				_, err := time.Parse(timeLayout, s["startTime"].(string))
				assert.NoError(t, err)
			}
		}

		isWebinar := rec["webinar"] == true
		assert.Equal(t, isWebinar, rec["audienceJoinUri"] != nil, "audienceJoinUri of %s", id)
		roles := []string{}
		for _, e := range rec["passwordEntry"].([]any) {
			roles = append(roles, e.(map[string]any)["conferenceRole"].(string))
		}
		assert.Equal(t, isWebinar, slices.Contains(roles, "audience"), "audience password of %s", id)
		if isWebinar {
			webinars++
		}

		isRoom := rec["vmrFlag"] == 1.0
		assert.False(t, isRoom && isWebinar, "%s is a webinar in a cloud room", id)
		for _, k := range []string{"vmrID", "vmrConferenceID"} {
			assert.Equal(t, isRoom, rec[k] != nil, "%s of %s, vmrFlag %v", k, id, rec["vmrFlag"])
		}
		if isRoom {
			cloudRooms++
			assert.Regexp(t, `^[1-9]\d{8}$`, rec["vmrConferenceID"])
			assert.NotEqual(t, rec["conferenceID"], rec["vmrConferenceID"])
			assert.Regexp(t, hex32, rec["vmrID"])
		}

		isLive := int(rec["recordType"].(float64))&1 == 1
		for _, k := range []string{"liveAddress", "auxAddress", "liveUrl"} {
			assert.Equal(t, isLive, rec[k] != nil, "%s of %s, recordType %v", k, id, rec["recordType"])
		}
		if isLive {
			live++
		}

		attendees := rec["partAttendeeInfo"].([]any)
		assert.Equal(t, float64(len(attendees)), rec["terminlCount"].(float64)+rec["normalCount"].(float64),
			"hard terminals and soft clients of %s", id)
	}

	var missing []string
	for path := range model {
		if !seen[path] {
			missing = append(missing, path)
		}
	}
	slices.Sort(missing)
	assert.Empty(t, missing, "fields of the model that no listed meeting carries")
	for name, got := range map[string]int{"recurring": recurring, "webinars": webinars, "cloud-room": cloudRooms, "live": live} {
		assert.Positive(t, got, "%s meetings among %d", name, n)
		assert.Less(t, got, n/2, "%s meetings among %d", name, n)
	}
	t.Logf("%d meetings: %d recurring, %d webinars, %d in cloud rooms, %d live", n, recurring, webinars, cloudRooms, live)
}

// TestChangesKeepToTheModel changes meetings as Step does and checks that
// the changes reach the fields live meetings change (a meeting prolonged,
// its layout, its guest password, a live stream started or stopped) and
// leave every record within the model.
func TestChangesKeepToTheModel(t *testing.T) {
	model := loadModel(t)
	srv := newServer(t, apisim.Options{Token: token, Seed: 12})
	ids := srv.Sim.AddN(20)
	rng := rand.New(rand.NewPCG(12, 13))
	changed := map[string]int{}
	for i := range 400 {
		id := ids[i%len(ids)]
		before, _ := srv.Sim.Get(id)
		require.True(t, srv.Sim.Change(rng, id))
		after, _ := srv.Sim.Get(id)
		for k := range model {
			if !strings.ContainsAny(k, ".[") && !reflect.DeepEqual(before[k], after[k]) {
				changed[k]++
			}
		}
	}
	for _, k := range []string{"subject", "onlineAttendeeAmount", "endTime", "picDisplay", "confConfigInfo", "passwordEntry", "partAttendeeInfo", "recordType", "liveUrl", "liveAddress"} {
		assert.Positive(t, changed[k], "changes of %s", k)
	}
	t.Logf("fields changed: %v", changed)

	for _, rec := range listPage(t, srv, "limit=500").Data {
		checkAgainstModel(t, model, rec, map[string]bool{})
		guest := rec["confConfigInfo"].(map[string]any)["guestPwd"]
		for _, e := range rec["passwordEntry"].([]any) {
			if e := e.(map[string]any); e["conferenceRole"] == "general" {
				assert.Equal(t, guest, e["password"], "the guest password of %s, reset in both places", rec["confUUID"])
			}
		}
		isLive := int(rec["recordType"].(float64))&1 == 1
		assert.Equal(t, isLive, rec["liveUrl"] != nil, "liveUrl of %s, recordType %v", rec["confUUID"], rec["recordType"])
	}
}
