// Package journallog is a log/slog handler that writes to the systemd
// journal: each record becomes one journal entry with its priority, its
// message, and its attributes as structured fields (docs/operating.md,
// "Logs"). MESSAGE also carries the attributes as key=value text, so that
// journalctl's default output says as much as a text log line.
package journallog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"
)

// Options configure a Handler. The zero value logs at info and above and
// falls back to os.Stderr.
type Options struct {
	// Level is the minimum level logged; nil means slog.LevelInfo.
	Level slog.Leveler
	// Identifier, if set, is sent as SYSLOG_IDENTIFIER (journalctl -t).
	Identifier string
	// Fallback receives a record as one line with an sd-daemon "<N>"
	// priority prefix when the journal cannot be reached; nil means
	// os.Stderr. journald's stream transport reads the prefix, so a
	// service whose stderr goes to the journal keeps its priorities.
	Fallback io.Writer

	// send replaces journal.Send in tests.
	send func(msg string, p journal.Priority, fields map[string]string) error
}

// Handler is a slog.Handler sending records to the systemd journal.
type Handler struct {
	opts   Options
	mu     *sync.Mutex // guards writes to opts.Fallback
	fields []field     // from WithAttrs, already named
	prefix string      // from WithGroup: "group.subgroup."
}

// field is an attribute: its journal field name, its slog key (groups
// joined with "."), and its value.
type field struct{ name, key, value string }

// New returns a Handler with opts.
func New(opts Options) *Handler {
	if opts.Level == nil {
		opts.Level = slog.LevelInfo
	}
	if opts.Fallback == nil {
		opts.Fallback = os.Stderr
	}
	if opts.send == nil {
		opts.send = journal.Send
	}
	return &Handler{opts: opts, mu: &sync.Mutex{}}
}

// Enabled reports whether l is at or above the handler's level.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.opts.Level.Level()
}

// Handle sends r to the journal, or writes it to the fallback if that fails.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	fields := append([]field(nil), h.fields...)
	r.Attrs(func(a slog.Attr) bool {
		fields = appendAttr(fields, h.prefix, a)
		return true
	})
	p := Priority(r.Level)
	msg := text(r.Message, fields)
	vars := make(map[string]string, len(fields)+1)
	for _, f := range fields {
		vars[f.name] = f.value
	}
	if h.opts.Identifier != "" {
		vars["SYSLOG_IDENTIFIER"] = h.opts.Identifier
	}
	if err := h.opts.send(msg, p, vars); err == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := fmt.Fprintf(h.opts.Fallback, "<%d>%s\n", p, msg)
	return err
}

// text is the record as one line: "message key=value ...", values quoted
// where they hold spaces, quotes, "=" or line breaks.
func text(msg string, fields []field) string {
	var b strings.Builder
	b.WriteString(oneLine(msg))
	for _, f := range fields {
		fmt.Fprintf(&b, " %s=%s", f.key, quoteIfNeeded(f.value))
	}
	return b.String()
}

// WithAttrs returns a handler adding attrs to every record.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.fields = append([]field(nil), h.fields...)
	for _, a := range attrs {
		h2.fields = appendAttr(h2.fields, h.prefix, a)
	}
	return &h2
}

// WithGroup returns a handler whose later attributes are named
// GROUP_NAME.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + name + "."
	return &h2
}

// Priority maps a slog level to a journal priority: debug 7, info 6,
// warn 4, error 3; a level between two of these gets the priority of the
// lower one (slog.LevelInfo+2 is info).
func Priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	default:
		return journal.PriDebug
	}
}

// appendAttr appends a (groups flattened) to fields, under the groups in
// prefix ("tpm.pcr.").
func appendAttr(fields []field, prefix string, a slog.Attr) []field {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		attrs := v.Group()
		if len(attrs) == 0 {
			return fields
		}
		if a.Key != "" {
			prefix += a.Key + "."
		}
		for _, ga := range attrs {
			fields = appendAttr(fields, prefix, ga)
		}
		return fields
	}
	if a.Equal(slog.Attr{}) {
		return fields
	}
	key := prefix + a.Key
	return append(fields, field{name: FieldName(key), key: key, value: v.String()})
}

// maxFieldName is journald's limit on a field name's length.
const maxFieldName = 64

// reserved are the fields the handler sets itself; attributes by these
// names are sent as ATTR_<NAME> instead.
var reserved = map[string]bool{"MESSAGE": true, "PRIORITY": true, "SYSLOG_IDENTIFIER": true}

// FieldName turns an attribute key (groups joined with ".") into a journal
// field name: upper case, every character outside [A-Z0-9_] replaced by "_"
// (so groups are joined with "_"), leading underscores
// (reserved for journald's trusted fields) dropped, at most 64 characters.
// A name that would be empty, start with a digit, or clash with a field
// the handler sets itself gets an ATTR_ prefix.
func FieldName(key string) string {
	b := []byte(strings.ToUpper(key))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	name := strings.TrimLeft(string(b), "_")
	if name == "" || (name[0] >= '0' && name[0] <= '9') || reserved[name] {
		name = "ATTR_" + name
	}
	if len(name) > maxFieldName {
		name = name[:maxFieldName]
	}
	return name
}

func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool {
		return r <= ' ' || r == '"' || r == '=' || r == '\\' || r > '~'
	}) {
		return strconv.Quote(s)
	}
	return s
}
