// Package validate checks meetwatch events against their JSON Schemas
// (package schema), as a consumer in another language would with its own
// validator: the tests check every event they publish with it, and a Go
// consumer may check what it reads.
//
// It is apart from package schema so that the meetwatch binary, which
// only prints the schemas, does not carry the validator, which compiles
// every JSON Schema meta-schema when its package starts.
package validate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/schema"
)

// Errors returned for an event that does not keep its schema.
var (
	// ErrInvalid means a body is not an event of its kind as the kind's
	// schema describes it.
	ErrInvalid = errors.New("event does not keep its schema")
)

// Validator checks events against the compiled schemas. It is safe for
// concurrent use.
type Validator struct {
	byType map[string]*jsonschema.Schema
}

// New compiles the schemas of every kind. Formats (date-time, uri) are
// asserted, as the schemas' descriptions promise them.
func New() (*Validator, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.UseLoader(noLoader{})
	for _, k := range schema.Kinds() {
		body, err := schema.For(k)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("reading the %s schema: %w", k, err)
		}
		if err := c.AddResource(events.DataSchema(k), doc); err != nil {
			return nil, fmt.Errorf("adding the %s schema: %w", k, err)
		}
	}
	v := &Validator{byType: map[string]*jsonschema.Schema{}}
	for _, k := range schema.Kinds() {
		s, err := c.Compile(events.DataSchema(k))
		if err != nil {
			return nil, fmt.Errorf("compiling the %s schema: %w", k, err)
		}
		v.byType[events.TypePrefix+string(k)] = s
	}
	return v, nil
}

// noLoader refuses to load anything: the schemas are self-contained, and
// one that referred elsewhere must fail to compile rather than be fetched.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("loading %s: the schemas refer to nothing outside themselves", url)
}

// Event checks body, a message body, against the schema of the kind its
// type names. The error names each violation's place in the event (a
// JSON pointer such as /data/incarnation) and the reason, and wraps
// ErrInvalid; a body that is not JSON, or whose type is no meetwatch
// kind, is invalid too.
func (v *Validator) Event(body []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: not JSON: %w", ErrInvalid, err)
	}
	obj, _ := doc.(map[string]any)
	typ, _ := obj["type"].(string)
	s := v.byType[typ]
	if s == nil {
		return fmt.Errorf("%w: type %q is none of %s", ErrInvalid, typ, events.TypePrefix+"{"+strings.ReplaceAll(schema.KindNames(), " ", "")+"}")
	}
	if err := s.Validate(doc); err != nil {
		var verr *jsonschema.ValidationError
		if errors.As(err, &verr) {
			return fmt.Errorf("%w: %s", ErrInvalid, reasons(verr))
		}
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// reasons lists the innermost violations, each at its place in the event:
// the ones that say what is wrong, rather than the anyOf and $ref above
// them.
func reasons(verr *jsonschema.ValidationError) string {
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			out = append(out, fmt.Sprintf("at %s: %s", pointer(e.InstanceLocation), e.ErrorKind.LocalizedString(printer)))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(verr)
	return strings.Join(out, "; ")
}

// printer words the reasons, as the validator's own messages do.
var printer = message.NewPrinter(language.English)

// pointer writes an instance location as a JSON pointer.
func pointer(tokens []string) string {
	if len(tokens) == 0 {
		return "/"
	}
	var b strings.Builder
	for _, t := range tokens {
		b.WriteString("/" + strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1"))
	}
	return b.String()
}

// shared is the validator Event uses, compiled on first use.
var shared = sync.OnceValues(New)

// Event checks body against its kind's schema, as Validator.Event does,
// with schemas compiled once for the process.
func Event(body []byte) error {
	v, err := shared()
	if err != nil {
		return err
	}
	return v.Event(body)
}

// IsMeetingEvent reports whether body claims to be a meetwatch event: a
// JSON object whose type starts with events.TypePrefix. A stream may hold
// other messages, which a check of every event skips.
func IsMeetingEvent(body []byte) bool {
	var head struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(body, &head) == nil && strings.HasPrefix(head.Type, events.TypePrefix)
}
