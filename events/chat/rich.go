package chat

import (
	"strconv"
	"strings"
	"time"

	"github.com/meetwatch/meetwatch/snapshot"
)

// Documented limits of the platforms' rich messages.
const (
	// SlackMaxHeader is the most characters of a Block Kit header's text.
	SlackMaxHeader = 150
	// SlackMaxSection is the most characters of a section block's text.
	SlackMaxSection = 3000
	// SlackMaxField is the most characters of one of a section's fields.
	SlackMaxField = 2000
	// SlackMaxFields is the most fields of one section block.
	SlackMaxFields = 10
	// WeComMaxMarkdown is WeCom's limit on a markdown message's content,
	// in bytes of UTF-8.
	WeComMaxMarkdown = 4096
)

// fit returns render(n) for the most change lines n, from all of them
// down to none, whose rendering ok accepts, or render(0) when none is:
// a message too long for its platform loses changes from its end, never
// its first lines. The bounds on each value keep render(0) within every
// limit; the callers cut it all the same should it not be.
func fit[T any](m message, render func(n int) (T, error), ok func(T) bool) (T, error) {
	for n := len(m.changes); n > 0; n-- {
		v, err := render(n)
		if err != nil || ok(v) {
			return v, err
		}
	}
	return render(0)
}

// slackRich is a Block Kit message: the blocks, and the text that Slack
// shows in notifications and in clients that cannot show blocks.
func slackRich(m message) slackRichBody {
	body := slackRichBody{Text: slackEscape(m.headline())}
	subject := m.subject
	if subject == "" {
		subject = "(no subject)"
	}
	// The header names the kind alone: plain_text is not escaped, so
	// the subject goes in mrkdwn, where it is.
	body.Blocks = append(body.Blocks,
		slackBlock{Type: "header", Text: &slackText{Type: "plain_text", Text: "Meeting " + string(m.kind)}},
		slackBlock{Type: "section", Text: &slackText{Type: "mrkdwn", Text: TruncateUTF16("*"+slackEscape(oneLine(subject))+"*", SlackMaxSection)}},
	)
	fields := slackBlock{Type: "section"}
	for _, f := range m.facts[:min(len(m.facts), SlackMaxFields)] {
		fields.Fields = append(fields.Fields, slackText{
			Type: "mrkdwn",
			Text: TruncateUTF16("*"+f.label+"*\n"+slackEscape(oneLine(f.value)), SlackMaxField),
		})
	}
	body.Blocks = append(body.Blocks, fields)
	if len(m.changes) > 0 || m.more > 0 {
		section, _ := fit(m, func(n int) (string, error) {
			lines, more := m.changeLines(n)
			var b strings.Builder
			b.WriteString("*" + labelChanges + "*")
			for _, l := range lines {
				b.WriteString("\n• " + slackEscape(l))
			}
			if more != "" {
				b.WriteString("\n" + more)
			}
			return b.String(), nil
		}, func(s string) bool { return utf16Len(s) <= SlackMaxSection })
		body.Blocks = append(body.Blocks, slackBlock{
			Type: "section",
			Text: &slackText{Type: "mrkdwn", Text: TruncateUTF16(section, SlackMaxSection)},
		})
	}
	if m.initial {
		body.Blocks = append(body.Blocks, slackBlock{
			Type:     "context",
			Elements: []slackText{{Type: "plain_text", Text: initialNote}},
		})
	}
	return body
}

// feishuTemplates colour a card's header by the kind of event.
var feishuTemplates = map[snapshot.ChangeKind]string{
	snapshot.Started: "green",
	snapshot.Changed: "blue",
	snapshot.Ended:   "grey",
}

// feishuCard lays m out as an interactive card with its first n change
// lines. Every text is plain_text, which Feishu shows as it is: a
// meeting's subject cannot mention the group or forge a link.
func feishuCard(m message, n int) feishuCardContent {
	card := feishuCardContent{
		Config: feishuCardConfig{WideScreenMode: true},
		Header: feishuHeader{
			Title:    feishuTextObject{Tag: "plain_text", Content: defuseFeishu(m.title())},
			Template: feishuTemplates[m.kind],
		},
	}
	facts := feishuElement{Tag: "div"}
	for _, f := range m.facts {
		facts.Fields = append(facts.Fields, feishuField{
			IsShort: true,
			Text:    feishuTextObject{Tag: "plain_text", Content: f.label + ": " + defuseFeishu(oneLine(f.value))},
		})
	}
	card.Elements = append(card.Elements, facts)
	if len(m.changes) > 0 || m.more > 0 {
		lines, more := m.changeLines(n)
		var b strings.Builder
		b.WriteString(labelChanges + ":")
		for _, l := range lines {
			b.WriteString("\n• " + defuseFeishu(l))
		}
		if more != "" {
			b.WriteString("\n" + more)
		}
		card.Elements = append(card.Elements,
			feishuElement{Tag: "hr"},
			feishuElement{Tag: "div", Text: &feishuTextObject{Tag: "plain_text", Content: b.String()}},
		)
	}
	if m.initial {
		card.Elements = append(card.Elements, feishuElement{
			Tag:      "note",
			Elements: []feishuTextObject{{Tag: "plain_text", Content: initialNote}},
		})
	}
	return card
}

// feishuRich is the card message, signed when there is a secret, with as
// many change lines as keep the body within FeishuMaxBody.
func (w *Webhook) feishuRich(m message, now time.Time) ([]byte, error) {
	body := feishuCardBody{MsgType: "interactive"}
	if !w.secret.IsZero() {
		body.Timestamp = strconv.FormatInt(now.Unix(), 10)
		body.Sign = feishuSign(w.secret.Reveal(), body.Timestamp)
	}
	return fit(m, func(n int) ([]byte, error) {
		body.Card = feishuCard(m, n)
		return marshal(body)
	}, func(b []byte) bool { return len(b) <= FeishuMaxBody })
}

// markdownText lays m out in the markdown DingTalk and WeCom share: a
// heading, the facts, the changes. Lists are left out, since WeCom's
// markdown has none; each fact is a line of its own.
func markdownText(m message, n int) string {
	var b strings.Builder
	b.WriteString("### " + defuseMarkdown(m.title()) + "\n")
	for _, f := range m.facts {
		b.WriteString("\n**" + f.label + ":** " + defuseMarkdown(oneLine(f.value)) + "  ")
	}
	if len(m.changes) > 0 || m.more > 0 {
		lines, more := m.changeLines(n)
		b.WriteString("\n\n**" + labelChanges + ":**  ")
		for _, l := range lines {
			b.WriteString("\n• " + defuseMarkdown(l) + "  ")
		}
		if more != "" {
			b.WriteString("\n" + more)
		}
	}
	if m.initial {
		b.WriteString("\n\n> " + initialNote)
	}
	return strings.TrimRight(b.String(), " ")
}

// dingTalkRich is DingTalk's markdown message; its title is what the
// notification shows.
func dingTalkRich(m message) dingTalkMarkdownBody {
	return dingTalkMarkdownBody{
		MsgType:  "markdown",
		Markdown: dingTalkMarkdown{Title: defuseMarkdown(m.title()), Text: markdownText(m, maxChangeLines)},
		At:       dingTalkAt{AtMobiles: []string{}},
	}
}

// weComRich is WeCom's markdown message, with as many change lines as
// keep it within WeComMaxMarkdown.
func weComRich(m message) weComMarkdownBody {
	content, _ := fit(m, func(n int) (string, error) { return markdownText(m, n), nil },
		func(s string) bool { return len(s) <= WeComMaxMarkdown })
	return weComMarkdownBody{MsgType: "markdown", Markdown: weComMarkdown{Content: TruncateBytes(content, WeComMaxMarkdown)}}
}

// weLinkRich is the text of WeLink's message, which takes text only:
// the plain text, with as many whole change lines as fit WeLinkMaxText.
func weLinkRich(m message) string {
	m = m.shortened(weLinkMaxValue)
	text, _ := fit(m, func(n int) (string, error) { return m.text(n), nil },
		func(s string) bool { return utf16Len(s) <= WeLinkMaxText })
	return TruncateUTF16(text, WeLinkMaxText)
}

// weLinkMaxValue bounds each value of a WeLink message, in UTF-16 code
// units, so that the subject, the organiser, the start, the attendees and
// the duration all fit its 500 characters.
const weLinkMaxValue = 80

// shortened returns m with its subject, the values of its facts and its
// change lines cut to n UTF-16 code units each.
func (m message) shortened(n int) message {
	m.subject = TruncateUTF16(m.subject, n)
	m.facts = append([]fact(nil), m.facts...)
	for i := range m.facts {
		m.facts[i].value = TruncateUTF16(m.facts[i].value, n)
	}
	m.changes = append([]string(nil), m.changes...)
	for i := range m.changes {
		m.changes[i] = TruncateUTF16(m.changes[i], 2*n)
	}
	return m
}

// defuseMarkdown keeps a value of a meeting from being read as markup in
// DingTalk's and WeCom's markdown: "<" would open a tag (WeCom's
// <@userid> mentions someone) and "[" a link or an image, so both are
// replaced by their fullwidth forms, which read the same; the line breaks
// are already gone (oneLine), so no value starts a heading or a quote.
func defuseMarkdown(s string) string {
	return strings.NewReplacer("<", "\uFF1C", ">", "\uFF1E", "[", "\uFF3B", "]", "\uFF3D").Replace(s)
}

// The platforms' rich message bodies.
type (
	slackRichBody struct {
		Text   string       `json:"text"`
		Blocks []slackBlock `json:"blocks"`
	}
	slackBlock struct {
		Type     string      `json:"type"`
		Text     *slackText  `json:"text,omitempty"`
		Fields   []slackText `json:"fields,omitempty"`
		Elements []slackText `json:"elements,omitempty"`
	}
	slackText struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	feishuCardBody struct {
		Timestamp string            `json:"timestamp,omitempty"`
		Sign      string            `json:"sign,omitempty"`
		MsgType   string            `json:"msg_type"`
		Card      feishuCardContent `json:"card"`
	}
	feishuCardContent struct {
		Config   feishuCardConfig `json:"config"`
		Header   feishuHeader     `json:"header"`
		Elements []feishuElement  `json:"elements"`
	}
	feishuCardConfig struct {
		WideScreenMode bool `json:"wide_screen_mode"`
	}
	feishuHeader struct {
		Title    feishuTextObject `json:"title"`
		Template string           `json:"template"`
	}
	feishuTextObject struct {
		Tag     string `json:"tag"`
		Content string `json:"content"`
	}
	feishuElement struct {
		Tag      string             `json:"tag"`
		Text     *feishuTextObject  `json:"text,omitempty"`
		Fields   []feishuField      `json:"fields,omitempty"`
		Elements []feishuTextObject `json:"elements,omitempty"`
	}
	feishuField struct {
		IsShort bool             `json:"is_short"`
		Text    feishuTextObject `json:"text"`
	}
	dingTalkMarkdownBody struct {
		MsgType  string           `json:"msgtype"`
		Markdown dingTalkMarkdown `json:"markdown"`
		At       dingTalkAt       `json:"at"`
	}
	dingTalkMarkdown struct {
		Title string `json:"title"`
		Text  string `json:"text"`
	}
	weComMarkdownBody struct {
		MsgType  string        `json:"msgtype"`
		Markdown weComMarkdown `json:"markdown"`
	}
	weComMarkdown struct {
		Content string `json:"content"`
	}
)
