package redact_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot"
)

// everyFieldPath holds a record with every field of the API's
// ConferenceInfo model, whose secrets are the values that start with
// "secret-"; testdata/README.md says more.
const everyFieldPath = "testdata/every-field.json"

// leaves returns every scalar of the JSON document raw by where it is
// ("passwordEntry[2].password"), as compact JSON.
func leaves(tb testing.TB, raw []byte) map[string]string {
	tb.Helper()
	var v any
	require.NoError(tb, json.Unmarshal(raw, &v))
	out := map[string]string{}
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				walk(strings.TrimPrefix(at+"."+k, "."), x)
			}
		case []any:
			for i, x := range v {
				walk(at+"["+strconv.Itoa(i)+"]", x)
			}
		default:
			b, err := json.Marshal(v)
			require.NoError(tb, err)
			out[at] = string(b)
		}
	}
	walk("", v)
	return out
}

// TestDefaultCoversEverySecretOfTheModel checks the default policy against
// a record with every field of the API's model: each secret (the host,
// guest and audience links, the push addresses, the live viewing link, the
// guest password, and the host's, guests' and webinar audience's
// passwords) is removed from a published record and sealed in the state,
// a change of it is announced without its value, and every other value is
// kept as it was.
func TestDefaultCoversEverySecretOfTheModel(t *testing.T) {
	raw, err := os.ReadFile(everyFieldPath)
	require.NoError(t, err)
	m := meeting(t, string(raw))
	all := leaves(t, m.Raw())
	var secrets []string
	for at, v := range all {
		if strings.Contains(v, "secret-") {
			secrets = append(secrets, at)
		}
	}
	slices.Sort(secrets)
	require.Equal(t, []string{
		"audienceJoinUri", "auxAddress", "chairJoinUri", "confConfigInfo.guestPwd", "guestJoinUri", "liveAddress", "liveUrl",
		"passwordEntry[0].password", "passwordEntry[1].password", "passwordEntry[2].password",
	}, secrets, "the secrets of the record")

	r := redactor(t, "")
	stripped, err := r.Strip(m.Raw())
	require.NoError(t, err)
	sealed := seal(t, r, m)
	assert.False(t, strings.Contains(string(stripped), "secret-"), "a secret published")
	assert.False(t, strings.Contains(string(sealed.Raw()), "secret-"), "a secret stored")
	gotStripped, gotSealed := leaves(t, stripped), leaves(t, sealed.Raw())
	for at, v := range all {
		if slices.Contains(secrets, at) {
			_, published := gotStripped[at]
			assert.False(t, published, "%s published", at)
			assert.Regexp(t, `^"redacted:sha256:[0-9a-f]{24}"$`, gotSealed[at], "stored")
			continue
		}
		assert.Equal(t, v, gotStripped[at], "published %s", at)
		assert.Equal(t, v, gotSealed[at], "stored %s", at)
	}
	assert.Equal(t, len(all)-len(secrets), len(gotStripped), "values published")

	for _, at := range secrets {
		t.Run(at, func(t *testing.T) {
			changed := strings.Replace(string(m.Raw()), all[at], `"secret-changed"`, 1)
			require.NotEqual(t, string(m.Raw()), changed)
			after := seal(t, r, meeting(t, changed))
			changes := snapshot.Diff(snapshot.Snapshot{m.UUID: sealed}, snapshot.Snapshot{m.UUID: after})
			require.Len(t, changes, 1, "a changed secret is a change")
			got := r.RedactChanges(changes[0].Fields)
			policyPath := regexp.MustCompile(`\[\d+\]`).ReplaceAllString(at, "[]")
			assert.Equal(t, []snapshot.FieldChange{{Field: policyPath, Redacted: true}}, got)
		})
	}
}
