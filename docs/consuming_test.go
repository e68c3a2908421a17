package docs_test

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
)

// stream is the default of MEETWATCH_STREAM, which the examples consume.
const stream = "MEETINGS"

// codeBlocks returns the fenced code blocks of the Markdown text md in
// language lang, without their fences.
func codeBlocks(md, lang string) []string {
	var blocks []string
	for _, m := range regexp.MustCompile("(?ms)^```"+regexp.QuoteMeta(lang)+"\n(.*?)^```$").FindAllStringSubmatch(md, -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// quoted returns the string literals of code, in double or single quotes.
func quoted(code string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`"([^"\n]*)"|'([^'\n]*)'`).FindAllStringSubmatch(code, -1) {
		out = append(out, m[1]+m[2])
	}
	return out
}

// TestConsumersInConsumingMdKeepTheContract checks the examples of
// docs/consuming.md against the code and the AsyncAPI document: their
// subjects, stream, headers and schemas are those meetwatch uses, each
// validates with a draft 2020-12 validator and acknowledges, and each is
// under 40 lines.
func TestConsumersInConsumingMdKeepTheContract(t *testing.T) {
	b, err := os.ReadFile("consuming.md")
	require.NoError(t, err)
	md := string(b)

	// The headers meetwatch sends, as the AsyncAPI document lists them
	// (TestAsyncAPIDocumentDescribesWhatMeetwatchSends holds the document
	// to what the publisher sends).
	headers := at(t, loadYAML(t, asyncAPIFile), "/components/schemas/headers/properties").(map[string]any)
	subjects := []string{events.DefaultPrefix + ".>"}
	for _, kind := range kinds {
		subjects = append(subjects, events.DefaultPrefix+"."+string(kind)+".>", events.DefaultPrefix+".*."+string(kind)+".>")
	}

	for _, tc := range []struct {
		lang string
		// validator and consumer name what validates with draft 2020-12,
		// and what makes a durable consumer; ack acknowledges a message.
		validator, consumer, ack string
	}{
		{lang: "python", validator: "Draft202012Validator(s)", consumer: `durable="my-service"`, ack: "await msg.ack()"},
		{lang: "ts", validator: `"ajv/dist/2020.js"`, consumer: `durable_name: "my-service"`, ack: "msg.ack()"},
	} {
		t.Run(tc.lang, func(t *testing.T) {
			blocks := codeBlocks(md, tc.lang)
			require.Len(t, blocks, 1, "```%s blocks in docs/consuming.md", tc.lang)
			code := blocks[0]
			lits := quoted(code)

			assert.Less(t, strings.Count(code, "\n"), 40, "lines")

			var named []string
			for _, s := range lits {
				if strings.HasPrefix(s, events.DefaultPrefix+".") {
					named = append(named, s)
				}
			}
			if assert.NotEmpty(t, named, "no subject") {
				for _, s := range named {
					assert.Contains(t, subjects, s, "subject")
				}
			}
			var streams []string
			for _, s := range lits {
				if regexp.MustCompile(`^[A-Z][A-Z0-9_-]*$`).MatchString(s) {
					streams = append(streams, s)
				}
			}
			if assert.NotEmpty(t, streams, "no stream") {
				for _, s := range streams {
					assert.Equal(t, stream, s, "stream")
				}
			}

			var read []string
			for _, s := range lits {
				if regexp.MustCompile(`^[A-Z][a-z]+(-[A-Z][A-Za-z]*)+$`).MatchString(s) {
					read = append(read, s)
				}
			}
			for _, h := range read {
				assert.Contains(t, slices.Collect(maps.Keys(headers)), h, "header read")
			}
			if slices.Contains(read, "Content-Type") {
				assert.Contains(t, lits, events.ContentType, "the Content-Type compared with")
			}

			for _, kind := range kinds {
				uri := events.DataSchema(kind)
				path := schemaPath(t, kind)
				assert.True(t, slices.Contains(lits, uri) || slices.Contains(lits, path),
					"names neither the schema %s nor its file %s", uri, path)
			}
			assert.Contains(t, code, tc.validator, "validator")
			assert.Contains(t, code, tc.consumer, "durable consumer")
			assert.Contains(t, code, tc.ack, "acknowledgement")
		})
	}

	t.Run("python compiles", func(t *testing.T) {
		python, err := exec.LookPath("python3")
		if err != nil {
			t.Skip("python3 is not installed: the Python example is not compiled")
		}
		blocks := codeBlocks(md, "python")
		require.Len(t, blocks, 1)
		file := filepath.Join(t.TempDir(), "consumer.py")
		require.NoError(t, os.WriteFile(file, []byte(blocks[0]), 0o644))
		out, err := exec.CommandContext(t.Context(), python, "-m", "py_compile", file).CombinedOutput()
		assert.NoError(t, err, "python3 -m py_compile:\n%s", out)
	})
}
