package meetingapi_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

func TestDecodePageFixture(t *testing.T) {
	f, err := os.Open("testdata/online-example.json")
	require.NoError(t, err)
	defer f.Close()
	p, err := meetingapi.DecodePage(f, nil)
	require.NoError(t, err)
	assert.Equal(t, 1, p.Count)
	assert.Equal(t, 20, p.Limit)
	require.Len(t, p.Records, 1)
	assert.Equal(t, "050c7898216811eaa6958bf3bb9ac167", p.Records[0].UUID)
	assert.Contains(t, string(p.Records[0].Raw()), `"partAttendeeInfo":[{"phone":"+99111****815","name":"user01","type":"normal"}]`)
}

func TestDecodePageErrors(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{name: "empty", body: "", want: "empty body"},
		{name: "html", body: "<!DOCTYPE html>", want: "HTML"},
		{name: "array", body: "[]", want: "not a JSON object"},
		{name: "no count", body: `{"data":[]}`, want: "no count"},
		{name: "trailing data", body: `{"count":0,"data":[]} {}`, want: "data after"},
		{name: "more records than count", body: `{"count":1,"data":[{"confUUID":"a"},{"confUUID":"b"}]}`, want: "2 records but count is 1"},
		{name: "truncated", body: `{"count":1,"data":[{"confUUID":"a"}`, want: "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := meetingapi.DecodePage(strings.NewReader(tt.body), nil)
			require.ErrorIs(t, err, meetingapi.ErrBadPage)
			assert.ErrorContains(t, err, tt.want)
		})
	}
}

// FuzzDecodePage feeds arbitrary bodies to the page decoder: it must never
// panic, and whatever it accepts must be a page the watcher can trust.
func FuzzDecodePage(f *testing.F) {
	seed, err := os.ReadFile("testdata/online-example.json")
	require.NoError(f, err)
	f.Add(seed)
	f.Add([]byte(`{"offset":0,"limit":500,"count":0,"data":[]}`))
	f.Add([]byte(`{"count":2,"data":[{"confUUID":"a"},{"confUUID":"b","x":{"y":null}}]}`))
	f.Add([]byte(`{"count":1,"data":null}`))
	f.Add([]byte(`<html>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := meetingapi.DecodePage(strings.NewReader(string(body)), nil)
		if err != nil {
			return
		}
		assert.GreaterOrEqual(t, p.Count, len(p.Records))
		for _, m := range p.Records {
			assert.NotEmpty(t, m.UUID)
			assert.NotEmpty(t, m.Raw())
		}
	})
}

// BenchmarkDecodePage decodes a page of 500 simulated records: every
// record parsed, as in a first listing, and every record found in the memo
// of the listing before, as in a steady one.
func BenchmarkDecodePage(b *testing.B) {
	sim := apisim.New(apisim.Options{Token: "bench"})
	sim.AddN(500)
	req := httptest.NewRequest(http.MethodGet, meetingapi.OnlinePath+"?offset=0&limit=500", nil)
	req.Header.Set("X-Access-Token", "bench")
	rec := httptest.NewRecorder()
	sim.ServeHTTP(rec, req)
	body := rec.Body.Bytes()
	require.Equal(b, http.StatusOK, rec.Code)

	memo := snapshot.NewMemo(nil)
	_, err := meetingapi.DecodePage(bytes.NewReader(body), memo.Read)
	require.NoError(b, err)
	memo.Keep()
	policy, err := redact.New(redact.Default)
	require.NoError(b, err)
	for _, bb := range []struct {
		name string
		read func() snapshot.ReadFunc
	}{
		{"parsed", func() snapshot.ReadFunc { return nil }},
		// As a first listing reads: each record parsed, sealed and kept.
		{"sealed", func() snapshot.ReadFunc { return snapshot.NewMemo(policy.Seal).Read }},
		{"remembered", func() snapshot.ReadFunc { return memo.Read }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				p, err := meetingapi.DecodePage(bytes.NewReader(body), bb.read())
				if err != nil || len(p.Records) != 500 {
					b.Fatal(err, len(p.Records))
				}
			}
		})
	}
}
