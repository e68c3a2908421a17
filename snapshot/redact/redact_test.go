package redact_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

func meeting(tb testing.TB, js string) snapshot.Meeting {
	tb.Helper()
	m, err := snapshot.ParseMeeting([]byte(js))
	require.NoError(tb, err)
	return m
}

// fixtureRecord is the one record of the API reference's response example,
// which package snapshot's tests share.
func fixtureRecord(tb testing.TB) string {
	tb.Helper()
	body, err := os.ReadFile("../testdata/online-example.json")
	require.NoError(tb, err)
	var page struct {
		Data []json.RawMessage `json:"data"`
	}
	require.NoError(tb, json.Unmarshal(body, &page))
	require.Len(tb, page.Data, 1)
	return string(page.Data[0])
}

func redactor(tb testing.TB, spec string) *redact.Policy {
	tb.Helper()
	r, err := redact.Parse(spec)
	require.NoError(tb, err)
	return r
}

func seal(tb testing.TB, r *redact.Policy, m snapshot.Meeting) snapshot.Meeting {
	tb.Helper()
	got, err := r.Seal(m)
	require.NoError(tb, err)
	return got
}

// digest is the sealed form of a value, computed here independently of the
// package: sha256(confUUID, 0, path, 0, canonical JSON), first 12 bytes.
func digest(uuid, path, canonical string) string {
	sum := sha256.Sum256([]byte(uuid + "\x00" + path + "\x00" + canonical))
	return "redacted:sha256:" + hex.EncodeToString(sum[:12])
}

var digestRE = regexp.MustCompile(`^redacted:sha256:[0-9a-f]{24}$`)

// edit decodes a record, lets fn change it, and parses the result.
func edit(tb testing.TB, record string, fn func(rec map[string]any)) snapshot.Meeting {
	tb.Helper()
	dec := json.NewDecoder(strings.NewReader(record))
	dec.UseNumber()
	var rec map[string]any
	require.NoError(tb, dec.Decode(&rec))
	fn(rec)
	b, err := json.Marshal(rec)
	require.NoError(tb, err)
	return meeting(tb, string(b))
}

// redactedKeysIn lists the policy paths still present in a JSON document,
// by its own reading of the path syntax.
func redactedKeysIn(tb testing.TB, raw []byte, paths []string) []string {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	require.NoError(tb, dec.Decode(&v))
	var found []string
	for _, p := range paths {
		if present(v, strings.Split(p, ".")) {
			found = append(found, p)
		}
	}
	return found
}

func present(v any, segs []string) bool {
	key, each := strings.CutSuffix(segs[0], "[]")
	obj, ok := v.(map[string]any)
	if !ok {
		return false
	}
	fv, ok := obj[key]
	switch {
	case !ok:
		return false
	case len(segs) == 1:
		return true
	case !each:
		return present(fv, segs[1:])
	}
	arr, _ := fv.([]any)
	for _, ev := range arr {
		if present(ev, segs[1:]) {
			return true
		}
	}
	return false
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		spec string
		want []string
		// wantErr is what the error must say, beside wrapping
		// ErrInvalidPath; empty means no error.
		wantErr string
	}{
		{name: "empty means the default", spec: "", want: redact.Default},
		{name: "blank means the default", spec: " \t", want: redact.Default},
		{name: "none", spec: "none", want: nil},
		{name: "none in any case, padded", spec: " None ", want: nil},
		{
			name: "custom list, spaces trimmed",
			spec: " chairJoinUri , passwordEntry[].password,x_y-z.a[].b[].c",
			want: []string{"chairJoinUri", "passwordEntry[].password", "x_y-z.a[].b[].c"},
		},
		{name: "duplicates once, first order kept", spec: "b,a,b", want: []string{"b", "a"}},
		{name: "empty segment", spec: "confConfigInfo..guestPwd", wantErr: `"confConfigInfo..guestPwd": empty segment`},
		{name: "leading dot", spec: ".a", wantErr: `".a": empty segment`},
		{name: "trailing dot", spec: "a.", wantErr: `"a.": empty segment`},
		{name: "empty entry", spec: "a,,b", wantErr: `"": empty`},
		{name: "trailing comma", spec: "chairJoinUri,", wantErr: `"": empty`},
		{name: "brackets at the end", spec: "passwordEntry[]", wantErr: `"passwordEntry[]": "[]" at the end`},
		{name: "brackets alone", spec: "[].password", wantErr: `"[].password": empty segment`},
		{name: "index", spec: "passwordEntry[0].password", wantErr: `"passwordEntry[0].password": bad character '['`},
		{name: "nested brackets", spec: "a[][].b", wantErr: `"a[][].b": bad character '['`},
		{name: "space inside", spec: "chair JoinUri", wantErr: `"chair JoinUri": bad character ' '`},
		{name: "wildcard", spec: "*", wantErr: `"*": bad character '*'`},
		{name: "the key", spec: "confUUID", wantErr: `"confUUID": confUUID is the meeting's key`},
		{name: "none in a list", spec: "none,chairJoinUri", wantErr: `"none": "none" must stand alone`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := redact.Parse(tt.spec)
			if tt.wantErr != "" {
				require.ErrorIs(t, err, redact.ErrInvalidPath)
				assert.ErrorContains(t, err, tt.wantErr)
				assert.Nil(t, got)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got.Paths())
		})
	}
}

func TestParseErrorMessage(t *testing.T) {
	_, err := redact.Parse("chairJoinUri, confConfigInfo..guestPwd")
	assert.EqualError(t, err, `invalid redact path "confConfigInfo..guestPwd": empty segment`)
}

func TestDefaultSpec(t *testing.T) {
	p, err := redact.Parse(redact.DefaultSpec())
	require.NoError(t, err)
	assert.Equal(t, redact.Default, p.Paths(), "the help text's list is the default")
	assert.Equal(t, "chairJoinUri,guestJoinUri,audienceJoinUri,liveAddress,auxAddress,liveUrl,passwordEntry[].password,confConfigInfo.guestPwd", redact.DefaultSpec())
}

func TestPolicyPathsIsACopy(t *testing.T) {
	r := redactor(t, "")
	r.Paths()[0] = "changed"
	assert.Equal(t, redact.Default, r.Paths())
}

func TestSealFixture(t *testing.T) {
	r := redactor(t, "")
	m := meeting(t, fixtureRecord(t))
	got := seal(t, r, m)

	assert.Equal(t, m.UUID, got.UUID)
	assert.Equal(t, m.ConferenceID, got.ConferenceID)
	assert.Equal(t, m.Subject, got.Subject)
	assert.Equal(t, m.StartTime, got.StartTime)

	var compact bytes.Buffer
	require.NoError(t, json.Compact(&compact, got.Raw()))
	assert.Equal(t, compact.String(), string(got.Raw()), "sealed records stay compact")

	// Exactly the secrets differ, each now a digest.
	changes := snapshot.CompareRecords(m.Raw(), got.Raw())
	fields := make([]string, 0, len(changes))
	for _, fc := range changes {
		fields = append(fields, fc.Field)
	}
	require.Equal(t, []string{"chairJoinUri", "guestJoinUri", "passwordEntry"}, fields)

	var sealed struct {
		ChairJoinURI  string `json:"chairJoinUri"`
		GuestJoinURI  string `json:"guestJoinUri"`
		PasswordEntry []struct {
			ConferenceRole string `json:"conferenceRole"`
			Password       string `json:"password"`
		} `json:"passwordEntry"`
		PartAttendeeInfo []struct {
			Phone string `json:"phone"`
		} `json:"partAttendeeInfo"`
	}
	require.NoError(t, json.Unmarshal(got.Raw(), &sealed))
	assert.Equal(t, digest(m.UUID, "chairJoinUri", `"https://c.meeting.huaweicloud.com/#/j/914083136/6a30b8b5a325105da031442627828e496f91021ece36405f"`), sealed.ChairJoinURI)
	assert.Regexp(t, digestRE, sealed.GuestJoinURI)
	require.Len(t, sealed.PasswordEntry, 2)
	for _, pe := range sealed.PasswordEntry {
		assert.Equal(t, digest(m.UUID, "passwordEntry[].password", `"******"`), pe.Password)
	}
	assert.Equal(t, "chair", sealed.PasswordEntry[0].ConferenceRole)
	require.Len(t, sealed.PartAttendeeInfo, 1)
	assert.Equal(t, "+99111****815", sealed.PartAttendeeInfo[0].Phone, "phone numbers come masked and are kept")

	for _, secret := range []string{"6a30b8b5a325105da031442627828e496f91021ece36405f", "9505dc3349228b1ce0db8165590cc977bcff89785130fe0d", `"******"`} {
		assert.NotContains(t, string(got.Raw()), secret)
	}

	again := seal(t, r, got)
	assert.Equal(t, string(got.Raw()), string(again.Raw()), "sealing is idempotent")
	assert.Zero(t, testing.AllocsPerRun(10, func() { _, _ = r.Seal(got) }), "a sealed record is returned as is")
}

func TestSealDigests(t *testing.T) {
	r := redactor(t, "")
	fixture := fixtureRecord(t)
	base := seal(t, r, meeting(t, fixture))
	password := func(m snapshot.Meeting, i int) string {
		var rec struct {
			PasswordEntry []struct{ Password string } `json:"passwordEntry"`
		}
		require.NoError(t, json.Unmarshal(m.Raw(), &rec))
		return rec.PasswordEntry[i].Password
	}

	changed := seal(t, r, edit(t, fixture, func(rec map[string]any) {
		rec["passwordEntry"].([]any)[0].(map[string]any)["password"] = "123456"
	}))
	assert.NotEqual(t, password(base, 0), password(changed, 0), "a new password, a new digest")
	assert.Equal(t, password(base, 1), password(changed, 1))

	other := seal(t, r, edit(t, fixture, func(rec map[string]any) { rec["confUUID"] = "another-meeting" }))
	assert.NotEqual(t, password(base, 0), password(other, 0), "the same password in another meeting looks different")
}

func TestSeal(t *testing.T) {
	d := func(path, canonical string) string { return digest("u", path, canonical) }
	tests := []struct {
		name, policy, in, want string
	}{
		{name: "nothing to seal", in: `{"confUUID":"u","subject":"s","accessNumber":"+991117"}`},
		{name: "null stays null", in: `{"confUUID":"u","chairJoinUri":null,"confConfigInfo":{"guestPwd":null}}`},
		{name: "absent stays absent", in: `{"confUUID":"u","confConfigInfo":{"isAutoMute":true},"passwordEntry":[{"conferenceRole":"chair"}]}`},
		{
			name: "every default field",
			in:   `{"confUUID":"u","chairJoinUri":"c","guestJoinUri":"g","audienceJoinUri":"a","liveAddress":"l","auxAddress":"x","liveUrl":"v","passwordEntry":[{"conferenceRole":"chair","password":"1"}],"confConfigInfo":{"isAutoMute":true,"guestPwd":"2"}}`,
			want: `{"confUUID":"u","chairJoinUri":"` + d("chairJoinUri", `"c"`) + `","guestJoinUri":"` + d("guestJoinUri", `"g"`) +
				`","audienceJoinUri":"` + d("audienceJoinUri", `"a"`) + `","liveAddress":"` + d("liveAddress", `"l"`) + `","auxAddress":"` + d("auxAddress", `"x"`) +
				`","liveUrl":"` + d("liveUrl", `"v"`) +
				`","passwordEntry":[{"conferenceRole":"chair","password":"` + d("passwordEntry[].password", `"1"`) +
				`"}],"confConfigInfo":{"isAutoMute":true,"guestPwd":"` + d("confConfigInfo.guestPwd", `"2"`) + `"}}`,
		},
		{
			name: "every element, other elements kept",
			in:   `{"confUUID":"u","passwordEntry":[{"password":"1"},{"conferenceRole":"general"},null,{"password":null},{"password":"3","password":"4"}]}`,
			want: `{"confUUID":"u","passwordEntry":[{"password":"` + d("passwordEntry[].password", `"1"`) + `"},{"conferenceRole":"general"},null,{"password":null},{"password":"` +
				d("passwordEntry[].password", `"3"`) + `","password":"` + d("passwordEntry[].password", `"4"`) + `"}]}`,
		},
		{
			// A field on the way to a secret in another shape than the
			// path says cannot be told apart from a secret: it goes whole.
			name: "an element of another shape seals the array whole",
			in:   `{"confUUID":"u","passwordEntry":[{"password":"1"},"x",[{"password":"2"}]]}`,
			want: `{"confUUID":"u","passwordEntry":"` + d("passwordEntry", `[{"password":"1"},"x",[{"password":"2"}]]`) + `"}`,
		},
		{
			name: "an object where the path says an array is sealed whole",
			in:   `{"confUUID":"u","passwordEntry":{"password":"1"}}`,
			want: `{"confUUID":"u","passwordEntry":"` + d("passwordEntry", `{"password":"1"}`) + `"}`,
		},
		{
			name: "escaped key is the same key",
			in:   `{"confUUID":"u","chair\u004aoinUri":"c"}`,
			want: `{"confUUID":"u","chair\u004aoinUri":"` + d("chairJoinUri", `"c"`) + `"}`,
		},
		{
			name: "escaped value digests as its canonical form",
			in:   `{"confUUID":"u","liveAddress":"rtmp:\/\/x\u0041"}`,
			want: `{"confUUID":"u","liveAddress":"` + d("liveAddress", `"rtmp://xA"`) + `"}`,
		},
		{
			name: "html characters digest as json.Marshal writes them",
			in:   `{"confUUID":"u","liveAddress":"a&b"}`,
			want: `{"confUUID":"u","liveAddress":"` + d("liveAddress", `"a\u0026b"`) + `"}`,
		},
		{
			name: "object value sealed whole, keys sorted, numbers as written",
			in:   `{"confUUID":"u","liveAddress":{"b":1.50,"a":[true]}}`,
			want: `{"confUUID":"u","liveAddress":"` + d("liveAddress", `{"a":[true],"b":1.50}`) + `"}`,
		},
		{
			name: "number value",
			in:   `{"confUUID":"u","confConfigInfo":{"guestPwd":123456}}`,
			want: `{"confUUID":"u","confConfigInfo":{"guestPwd":"` + d("confConfigInfo.guestPwd", `123456`) + `"}}`,
		},
		{
			name: "every duplicate key",
			in:   `{"confUUID":"u","auxAddress":"1","auxAddress":"2"}`,
			want: `{"confUUID":"u","auxAddress":"` + d("auxAddress", `"1"`) + `","auxAddress":"` + d("auxAddress", `"2"`) + `"}`,
		},
		{
			name: "a digest is kept",
			in:   `{"confUUID":"u","auxAddress":"redacted:sha256:0123456789abcdef01234567"}`,
		},
		{
			name: "a lookalike is sealed",
			in:   `{"confUUID":"u","auxAddress":"redacted:sha256:0123456789ABCDEF01234567"}`,
			want: `{"confUUID":"u","auxAddress":"` + d("auxAddress", `"redacted:sha256:0123456789ABCDEF01234567"`) + `"}`,
		},
		{
			name: "numbers and unknown fields kept byte for byte",
			in:   `{"confUUID":"u","n":1.50,"big":123456789012345678901234567890,"e":1E+3,"s":"\u00e9\n","guestJoinUri":"g","z":{"y":[-0.0]}}`,
			want: `{"confUUID":"u","n":1.50,"big":123456789012345678901234567890,"e":1E+3,"s":"\u00e9\n","guestJoinUri":"` + d("guestJoinUri", `"g"`) + `","z":{"y":[-0.0]}}`,
		},
		{
			name:   "a parent path covers its children",
			policy: "confConfigInfo.guestPwd,confConfigInfo",
			in:     `{"confUUID":"u","confConfigInfo":{"guestPwd":"1"}}`,
			want:   `{"confUUID":"u","confConfigInfo":"` + d("confConfigInfo", `{"guestPwd":"1"}`) + `"}`,
		},
		{
			name:   "nested arrays",
			policy: "a[].b[].c",
			in:     `{"confUUID":"u","a":[{"b":[{"c":1},{"d":2}]},{"b":3}]}`,
			want:   `{"confUUID":"u","a":[{"b":[{"c":"` + d("a[].b[].c", `1`) + `"},{"d":2}]},{"b":"` + d("a[].b", `3`) + `"}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := redactor(t, tt.policy)
			m := meeting(t, tt.in)
			got := seal(t, r, m)
			if tt.want == "" {
				assert.Equal(t, m, got, "unchanged")
				return
			}
			assert.Equal(t, tt.want, string(got.Raw()))
			assert.Equal(t, tt.want, string(seal(t, r, got).Raw()), "idempotent")
		})
	}
}

func TestSealKnownFields(t *testing.T) {
	r := redactor(t, "subject")
	got := seal(t, r, meeting(t, `{"confUUID":"u","subject":"board: layoffs","conferenceID":"1"}`))
	assert.Equal(t, digest("u", "subject", `"board: layoffs"`), got.Subject, "the decoded subject must not keep the secret")
	assert.Equal(t, "1", got.ConferenceID)
	assert.Equal(t, "u", got.UUID)
}

func TestSealNothing(t *testing.T) {
	m := meeting(t, fixtureRecord(t))
	for name, r := range map[string]*redact.Policy{"none": redactor(t, "none"), "nil": nil, "zero": {}} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, m, seal(t, r, m))
			got, err := r.Strip(m.Raw())
			require.NoError(t, err)
			assert.Equal(t, string(m.Raw()), string(got))
			fields := []snapshot.FieldChange{{Field: "chairJoinUri", Old: json.RawMessage(`"a"`), New: json.RawMessage(`"b"`)}}
			assert.Equal(t, fields, r.RedactChanges(fields))
			assert.Empty(t, r.Paths())
		})
	}
	got := seal(t, redactor(t, ""), snapshot.Meeting{})
	assert.Nil(t, got.Raw(), "the zero Meeting has nothing to seal")
}

func TestStripFixture(t *testing.T) {
	r := redactor(t, "")
	m := meeting(t, fixtureRecord(t))
	for name, in := range map[string]snapshot.Meeting{"raw": m, "sealed": seal(t, r, m)} {
		t.Run(name, func(t *testing.T) {
			got, err := r.Strip(in.Raw())
			require.NoError(t, err)
			assert.Empty(t, redactedKeysIn(t, got, redact.Default))
			assert.NotContains(t, string(got), "redacted:")
			assert.NotContains(t, string(got), "JoinUri")

			changes := snapshot.CompareRecords(m.Raw(), got)
			require.Len(t, changes, 3)
			assert.Equal(t, snapshot.FieldChange{Field: "chairJoinUri", Old: changes[0].Old}, changes[0])
			assert.Equal(t, snapshot.FieldChange{Field: "guestJoinUri", Old: changes[1].Old}, changes[1])
			assert.Equal(t, "passwordEntry", changes[2].Field)
			assert.JSONEq(t, `[{"conferenceRole":"chair"},{"conferenceRole":"general"}]`, string(changes[2].New))
		})
	}
}

func TestStrip(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "nothing to strip", in: `{"confUUID":"u","accessNumber":"+991117"}`, want: `{"confUUID":"u","accessNumber":"+991117"}`},
		{name: "first member", in: `{"chairJoinUri":"c","a":1,"b":2}`, want: `{"a":1,"b":2}`},
		{name: "middle member", in: `{"a":1,"chairJoinUri":"c","b":2}`, want: `{"a":1,"b":2}`},
		{name: "last member", in: `{"a":1,"b":2,"chairJoinUri":"c"}`, want: `{"a":1,"b":2}`},
		{name: "only member", in: `{"chairJoinUri":"c"}`, want: `{}`},
		{name: "all of several", in: `{"chairJoinUri":"c","liveAddress":null,"auxAddress":{"x":[1]}}`, want: `{}`},
		{name: "every other", in: `{"chairJoinUri":"c","a":1,"liveAddress":"l","b":2,"auxAddress":"x"}`, want: `{"a":1,"b":2}`},
		{name: "duplicates", in: `{"auxAddress":"1","a":1,"auxAddress":"2"}`, want: `{"a":1}`},
		{name: "escaped key", in: `{"a":1,"aux\u0041ddress":"x"}`, want: `{"a":1}`},
		{
			name: "nested",
			in:   `{"passwordEntry":[{"conferenceRole":"chair","password":"1"},{"password":"2"}],"confConfigInfo":{"guestPwd":"p","isAutoMute":1}}`,
			want: `{"passwordEntry":[{"conferenceRole":"chair"},{}],"confConfigInfo":{"isAutoMute":1}}`,
		},
		{
			name: "an element of another shape takes the array",
			in:   `{"passwordEntry":[{"password":"1"},7],"confConfigInfo":[{"guestPwd":"p"}],"a":1}`,
			want: `{"a":1}`,
		},
		{
			name: "whitespace",
			in:   "{ \"chairJoinUri\" : \"c\" ,\n \"a\" : [ 1 ] , \"confConfigInfo\" : { \"isAutoMute\" : 1 , \"guestPwd\" : \"p\" } }",
			want: "{ \n \"a\" : [ 1 ] , \"confConfigInfo\" : { \"isAutoMute\" : 1  } }",
		},
	}
	r := redactor(t, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Strip(json.RawMessage(tt.in))
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got))
			assert.True(t, json.Valid(got))
		})
	}
}

func TestStripErrors(t *testing.T) {
	tests := []struct {
		name, in string
	}{
		{name: "empty", in: ``},
		{name: "array", in: `[{"chairJoinUri":"c"}]`},
		{name: "string", in: `"chairJoinUri"`},
		{name: "truncated", in: `{"chairJoinUri":"c"`},
		{name: "trailing comma", in: `{"chairJoinUri":"c",}`},
		{name: "two values", in: `{"a":1}{"chairJoinUri":"c"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := redactor(t, "").Strip(json.RawMessage(tt.in))
			require.ErrorContains(t, err, "stripping record")
			assert.Nil(t, got)
		})
	}
}

func TestRedactChangesEndToEnd(t *testing.T) {
	fixture := fixtureRecord(t)
	withSecrets := func(rec map[string]any) {
		rec["confConfigInfo"].(map[string]any)["guestPwd"] = "guest-111111"
		rec["passwordEntry"].([]any)[0].(map[string]any)["password"] = "chair-222222"
		rec["liveAddress"] = "rtmp://push.example/live-333333"
	}
	// Every value the changes below may touch: none may be published.
	secrets := []string{
		"guest-111111", "guest-999999", "chair-222222", "chair-888888", "rtmp://push", "redacted:",
		"6a30b8b5a325105da031442627828e496f91021ece36405f", "chair-new",
	}
	redacted := func(field string) snapshot.FieldChange { return snapshot.FieldChange{Field: field, Redacted: true} }

	tests := []struct {
		name   string
		change func(rec map[string]any)
		want   []snapshot.FieldChange
	}{
		{
			name:   "guest password",
			change: func(rec map[string]any) { rec["confConfigInfo"].(map[string]any)["guestPwd"] = "guest-999999" },
			want:   []snapshot.FieldChange{redacted("confConfigInfo.guestPwd")},
		},
		{
			name:   "guest password removed",
			change: func(rec map[string]any) { delete(rec["confConfigInfo"].(map[string]any), "guestPwd") },
			want:   []snapshot.FieldChange{redacted("confConfigInfo.guestPwd")},
		},
		{
			name: "chair password",
			change: func(rec map[string]any) {
				rec["passwordEntry"].([]any)[0].(map[string]any)["password"] = "chair-888888"
			},
			want: []snapshot.FieldChange{redacted("passwordEntry[].password")},
		},
		{
			name: "attendee added and chair password",
			change: func(rec map[string]any) {
				rec["partAttendeeInfo"] = append(rec["partAttendeeInfo"].([]any), map[string]any{"name": "user02", "phone": "+99111****816"})
				rec["passwordEntry"].([]any)[0].(map[string]any)["password"] = "chair-888888"
			},
			want: []snapshot.FieldChange{
				{
					Field: "partAttendeeInfo",
					Old:   json.RawMessage(`[{"name":"user01","phone":"+99111****815","type":"normal"}]`),
					New:   json.RawMessage(`[{"name":"user01","phone":"+99111****815","type":"normal"},{"name":"user02","phone":"+99111****816"}]`),
				},
				redacted("passwordEntry[].password"),
			},
		},
		{
			name: "password entry added",
			change: func(rec map[string]any) {
				rec["passwordEntry"] = append(rec["passwordEntry"].([]any), map[string]any{"conferenceRole": "audience", "password": "chair-new"})
			},
			want: []snapshot.FieldChange{
				{
					Field: "passwordEntry",
					Old:   json.RawMessage(`[{"conferenceRole":"chair"},{"conferenceRole":"general"}]`),
					New:   json.RawMessage(`[{"conferenceRole":"chair"},{"conferenceRole":"general"},{"conferenceRole":"audience"}]`),
				},
				redacted("passwordEntry[].password"),
			},
		},
		{
			name: "roles swapped, passwords kept in place",
			change: func(rec map[string]any) {
				pe := rec["passwordEntry"].([]any)
				pe[0].(map[string]any)["conferenceRole"], pe[1].(map[string]any)["conferenceRole"] = "general", "chair"
			},
			want: []snapshot.FieldChange{{
				Field: "passwordEntry",
				Old:   json.RawMessage(`[{"conferenceRole":"chair"},{"conferenceRole":"general"}]`),
				New:   json.RawMessage(`[{"conferenceRole":"general"},{"conferenceRole":"chair"}]`),
			}},
		},
		{
			name: "host link",
			change: func(rec map[string]any) {
				rec["chairJoinUri"] = "https://c.meeting.huaweicloud.com/#/j/914083136/chair-new"
			},
			want: []snapshot.FieldChange{redacted("chairJoinUri")},
		},
		{
			name: "live push address removed and guest link added",
			change: func(rec map[string]any) {
				delete(rec, "liveAddress")
				rec["audienceJoinUri"] = "https://c.meeting.huaweicloud.com/#/j/chair-new"
			},
			want: []snapshot.FieldChange{redacted("audienceJoinUri"), redacted("liveAddress")},
		},
		{
			// A string where the settings were could be the password.
			name:   "settings replaced by a string",
			change: func(rec map[string]any) { rec["confConfigInfo"] = "gone" },
			want: []snapshot.FieldChange{
				{Field: "confConfigInfo", Redacted: true},
			},
		},
		{
			name:   "other fields as they are",
			change: func(rec map[string]any) { rec["subject"] = "renamed"; rec["size"] = json.Number("2") },
			want: []snapshot.FieldChange{
				{Field: "size", Old: json.RawMessage(`1`), New: json.RawMessage(`2`)},
				{Field: "subject", Old: json.RawMessage(`"user01's meeting"`), New: json.RawMessage(`"renamed"`)},
			},
		},
	}
	r := redactor(t, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := seal(t, r, edit(t, fixture, withSecrets))
			after := seal(t, r, edit(t, fixture, func(rec map[string]any) { withSecrets(rec); tt.change(rec) }))
			changes := snapshot.Diff(snapshot.Snapshot{before.UUID: before}, snapshot.Snapshot{after.UUID: after})
			require.Len(t, changes, 1)
			require.Equal(t, snapshot.Changed, changes[0].Kind)

			got := r.RedactChanges(changes[0].Fields)
			assert.Equal(t, tt.want, got)

			published, err := json.Marshal(got)
			require.NoError(t, err)
			for _, s := range secrets {
				assert.NotContains(t, string(published), s)
			}
		})
	}
}

func TestRedactChanges(t *testing.T) {
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	tests := []struct {
		name   string
		policy string
		in     []snapshot.FieldChange
		want   []snapshot.FieldChange
	}{
		{name: "empty", in: nil, want: nil},
		{
			name: "plain values are hidden too",
			in:   []snapshot.FieldChange{{Field: "guestJoinUri", Old: raw(`"g1"`), New: raw(`"g2"`)}},
			want: []snapshot.FieldChange{{Field: "guestJoinUri", Redacted: true}},
		},
		{
			name: "inside a redacted path, once",
			in: []snapshot.FieldChange{
				{Field: "chairJoinUri.a", Old: raw(`1`)},
				{Field: "chairJoinUri.b", New: raw(`2`)},
				{Field: "conferenceID", Old: raw(`"1"`), New: raw(`"2"`)},
			},
			want: []snapshot.FieldChange{
				{Field: "chairJoinUri", Redacted: true},
				{Field: "conferenceID", Old: raw(`"1"`), New: raw(`"2"`)},
			},
		},
		{
			name: "a sibling of a secret",
			in:   []snapshot.FieldChange{{Field: "confConfigInfo.isAutoMute", Old: raw(`true`), New: raw(`false`)}},
			want: []snapshot.FieldChange{{Field: "confConfigInfo.isAutoMute", Old: raw(`true`), New: raw(`false`)}},
		},
		{
			name: "array appears",
			in:   []snapshot.FieldChange{{Field: "passwordEntry", New: raw(`[{"conferenceRole":"chair","password":"p"}]`)}},
			want: []snapshot.FieldChange{
				{Field: "passwordEntry", New: raw(`[{"conferenceRole":"chair"}]`)},
				{Field: "passwordEntry[].password", Redacted: true},
			},
		},
		{
			name: "array without secrets disappears",
			in:   []snapshot.FieldChange{{Field: "passwordEntry", Old: raw(`[{"conferenceRole":"chair"}]`)}},
			want: []snapshot.FieldChange{{Field: "passwordEntry", Old: raw(`[{"conferenceRole":"chair"}]`)}},
		},
		{
			name: "null password appears",
			in:   []snapshot.FieldChange{{Field: "passwordEntry", Old: raw(`[{"a":1}]`), New: raw(`[{"a":1,"password":null}]`)}},
			want: []snapshot.FieldChange{{Field: "passwordEntry[].password", Redacted: true}},
		},
		{
			name: "array became an object",
			in:   []snapshot.FieldChange{{Field: "passwordEntry", Old: raw(`[{"password":"p"}]`), New: raw(`{"password":"p"}`)}},
			want: []snapshot.FieldChange{{Field: "passwordEntry", Redacted: true}},
		},
		{
			name: "a step into an array as an object",
			in:   []snapshot.FieldChange{{Field: "passwordEntry.password", Old: raw(`"p"`), New: raw(`"q"`)}},
			want: []snapshot.FieldChange{{Field: "passwordEntry.password", Redacted: true}},
		},
		{
			name:   "two secrets below one array, only the changed one named",
			policy: "a[].p,a[].q",
			in:     []snapshot.FieldChange{{Field: "a", Old: raw(`[{"p":1,"q":2}]`), New: raw(`[{"q":2,"p":3}]`)}},
			want:   []snapshot.FieldChange{{Field: "a[].p", Redacted: true}},
		},
		{
			name:   "a root change",
			policy: "s",
			in:     []snapshot.FieldChange{{Field: "", Old: raw(`{"s":1,"t":2}`), New: raw(`{"t":3}`)}},
			want: []snapshot.FieldChange{
				{Field: "", Old: raw(`{"t":2}`), New: raw(`{"t":3}`)},
				{Field: "s", Redacted: true},
			},
		},
		{
			name:   "a root change to another shape is hidden",
			policy: "s",
			in:     []snapshot.FieldChange{{Field: "", Old: raw(`{"s":1,"t":2}`), New: raw(`[]`)}},
			want:   []snapshot.FieldChange{{Field: "", Redacted: true}},
		},
		{
			name: "not JSON is hidden whole",
			in:   []snapshot.FieldChange{{Field: "confConfigInfo", Old: raw(`{"guestPwd":`), New: raw(`1`)}},
			want: []snapshot.FieldChange{{Field: "confConfigInfo", Redacted: true}},
		},
		{
			name: "an escaped dot is part of a key, not a step into a secret",
			in: []snapshot.FieldChange{
				{Field: `confConfigInfo\.guestPwd`, Old: raw(`"1"`), New: raw(`"2"`)},
				{Field: "confConfigInfo.guestPwd", Old: raw(`"3"`), New: raw(`"4"`)},
				{Field: `chairJoinUri\\.a`, Old: raw(`5`)},
			},
			want: []snapshot.FieldChange{
				{Field: `chairJoinUri\\.a`, Old: raw(`5`)},
				{Field: "confConfigInfo.guestPwd", Redacted: true},
				{Field: `confConfigInfo\.guestPwd`, Old: raw(`"1"`), New: raw(`"2"`)},
			},
		},
		{
			name: "a field that looks like a redacted entry is hidden",
			in: []snapshot.FieldChange{
				{Field: "passwordEntry", Old: raw(`[{"password":"1"}]`), New: raw(`[{"password":"2"}]`)},
				{Field: "passwordEntry[].password", Old: raw(`"x"`)},
			},
			want: []snapshot.FieldChange{{Field: "passwordEntry[].password", Redacted: true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.in)
			got := redactor(t, tt.policy).RedactChanges(in)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.in, in, "the input is not modified")
			assert.True(t, slices.IsSortedFunc(got, func(a, b snapshot.FieldChange) int { return strings.Compare(a.Field, b.Field) }))
		})
	}
}

func TestFieldChangeRedactedJSON(t *testing.T) {
	got, err := json.Marshal([]snapshot.FieldChange{
		{Field: "chairJoinUri", Redacted: true},
		{Field: "size", Old: json.RawMessage(`1`), New: json.RawMessage(`2`)},
	})
	require.NoError(t, err)
	assert.JSONEq(t, `[{"field":"chairJoinUri","redacted":true},{"field":"size","old":1,"new":2}]`, string(got))
}

// FuzzSeal checks, on arbitrary records, that sealing never fails on a
// parsed record, is idempotent, touches only redacted fields, and that a
// sealed record stripped for publishing holds no redacted key.
func FuzzSeal(f *testing.F) {
	f.Add(fixtureRecord(f))
	f.Add(`{"confUUID":"u","passwordEntry":[{"password":"1"},"x",null,{"password":{"a":[1]}}],"confConfigInfo":{"guestPwd":null}}`)
	f.Add(`{"confUUID":"u","chair\u004aoinUri":"c","chairJoinUri":"redacted:sha256:0123456789abcdef01234567","x":"\"\\"}`)
	f.Add(`{"confUUID":"u","liveAddress":[],"auxAddress":{},"confConfigInfo":[{"guestPwd":"p"}]}`)

	def, err := redact.Parse("")
	require.NoError(f, err)
	none, err := redact.Parse("none")
	require.NoError(f, err)
	custom, err := redact.Parse("a,a.b,c[].d,c[].e[].f,passwordEntry,confConfigInfo[].guestPwd")
	require.NoError(f, err)

	f.Fuzz(func(t *testing.T, record string) {
		m, err := snapshot.ParseMeeting([]byte(record))
		if err != nil {
			return
		}
		for _, r := range []*redact.Policy{nil, none} {
			got, err := r.Seal(m)
			require.NoError(t, err)
			require.Equal(t, m, got)
			stripped, err := r.Strip(m.Raw())
			require.NoError(t, err)
			require.Equal(t, string(m.Raw()), string(stripped))
		}
		for _, r := range []*redact.Policy{def, custom} {
			sealed, err := r.Seal(m)
			require.NoError(t, err)
			require.Equal(t, m.UUID, sealed.UUID)
			var compact bytes.Buffer
			require.NoError(t, json.Compact(&compact, sealed.Raw()), "sealed: %s", sealed.Raw())
			require.Equal(t, compact.String(), string(sealed.Raw()))

			again, err := r.Seal(sealed)
			require.NoError(t, err)
			require.Equal(t, string(sealed.Raw()), string(again.Raw()), "idempotent")

			// Only secrets differ, and a published diff shows none of them.
			for _, fc := range r.RedactChanges(snapshot.CompareRecords(m.Raw(), sealed.Raw())) {
				require.True(t, fc.Redacted, "%+v", fc)
			}

			stripped, err := r.Strip(sealed.Raw())
			require.NoError(t, err)
			require.Empty(t, redactedKeysIn(t, stripped, r.Paths()), "stripped: %s", stripped)
			if !strings.Contains(record, "redacted:") {
				require.NotContains(t, string(stripped), `"redacted:sha256:`)
			}
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	r := redactor(b, "")
	fresh := meeting(b, fixtureRecord(b))
	sealed := seal(b, r, fresh)
	for _, bc := range []struct {
		name string
		m    snapshot.Meeting
	}{
		{name: "fixture", m: fresh},
		{name: "already-sealed", m: sealed},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.m.Raw())))
			for b.Loop() {
				if _, err := r.Seal(bc.m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkStrip(b *testing.B) {
	r := redactor(b, "")
	sealed := seal(b, r, meeting(b, fixtureRecord(b)))
	b.ReportAllocs()
	b.SetBytes(int64(len(sealed.Raw())))
	for b.Loop() {
		if _, err := r.Strip(sealed.Raw()); err != nil {
			b.Fatal(err)
		}
	}
}

func ExamplePolicy_RedactChanges() {
	r, _ := redact.Parse("") // the default policy
	before, _ := snapshot.ParseMeeting([]byte(`{"confUUID":"u","subject":"standup","confConfigInfo":{"guestPwd":"123456"}}`))
	after, _ := snapshot.ParseMeeting([]byte(`{"confUUID":"u","subject":"stand-up","confConfigInfo":{"guestPwd":"654321"}}`))
	before, _ = r.Seal(before)
	after, _ = r.Seal(after)

	changes := snapshot.Diff(snapshot.Snapshot{"u": before}, snapshot.Snapshot{"u": after})
	published, _ := json.Marshal(r.RedactChanges(changes[0].Fields))
	fmt.Println(string(published))
	// Output: [{"field":"confConfigInfo.guestPwd","redacted":true},{"field":"subject","old":"standup","new":"stand-up"}]
}

// A keyed policy seals with an HMAC under its key, named in the digest: a
// reader without the key cannot test guesses, and a rotation is told from
// a change of the secret.
func TestSealWithKey(t *testing.T) {
	plain := redactor(t, "")
	k1 := plain.WithKey([]byte("0123456789abcdef-first"))
	k2 := plain.WithKey([]byte("0123456789abcdef-second"))
	rec := meeting(t, `{"confUUID":"u","subject":"s","guestJoinUri":"123456"}`)
	pwd := func(m snapshot.Meeting) string {
		var v struct {
			GuestJoinURI string `json:"guestJoinUri"`
		}
		require.NoError(t, json.Unmarshal(m.Raw(), &v))
		return v.GuestJoinURI
	}
	unkeyed, first, second := seal(t, plain, rec), seal(t, k1, rec), seal(t, k2, rec)
	assert.Regexp(t, `^redacted:sha256:[0-9a-f]{24}$`, pwd(unkeyed))
	assert.Regexp(t, `^redacted:hmac-sha256:[0-9a-f]{8}:[0-9a-f]{24}$`, pwd(first))
	assert.NotEqual(t, pwd(first), pwd(second), "another key, another digest")
	assert.NotContains(t, string(first.Raw()), "123456")
	assert.Equal(t, pwd(first), pwd(seal(t, k1, rec)), "the same key, the same digest")
	assert.Equal(t, first.Raw(), seal(t, k2, first).Raw(), "a sealed value is kept, whatever its key")

	changes := func(a, b snapshot.Meeting) []snapshot.FieldChange {
		cs := snapshot.Diff(snapshot.Snapshot{"u": a}, snapshot.Snapshot{"u": b})
		require.Len(t, cs, 1)
		return cs[0].Fields
	}
	assert.True(t, k1.Rekeyed(changes(unkeyed, first)), "from no key to a key")
	assert.True(t, k2.Rekeyed(changes(first, second)), "from one key to another")
	assert.True(t, plain.Rekeyed(changes(first, unkeyed)), "from a key back to none")
	newPwd := seal(t, k1, meeting(t, `{"confUUID":"u","subject":"s","guestJoinUri":"654321"}`))
	assert.False(t, k1.Rekeyed(changes(first, newPwd)), "a new secret under the same key is a change")
	renamed := seal(t, k2, meeting(t, `{"confUUID":"u","subject":"renamed","guestJoinUri":"123456"}`))
	assert.False(t, k2.Rekeyed(changes(first, renamed)), "a rotation beside a real change is a change")
	var nilPolicy *redact.Policy
	assert.Nil(t, nilPolicy.WithKey([]byte("0123456789abcdef")))
}
