package cmdline

import (
	"io"
	"log/slog"
	"os"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/attestd/attestd/internal/journallog"
)

// NewLogger logs to the systemd journal, with priorities, structured
// fields and name as SYSLOG_IDENTIFIER, when the process's stderr is
// connected to it (a systemd service); otherwise as text lines to stderr.
func NewLogger(name string, stderr io.Writer, level slog.Level) *slog.Logger {
	if stderr == os.Stderr && journalStream() {
		return slog.New(journallog.New(journallog.Options{Level: level, Identifier: name, Fallback: stderr}))
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}

// journalStream reports whether stderr is journald's stream transport. A
// malformed JOURNAL_STREAM counts as no.
func journalStream() bool {
	ok, err := journal.StderrIsJournalStream()
	return ok && err == nil
}
