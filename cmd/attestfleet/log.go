package main

import (
	"io"
	"log/slog"
	"os"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/attestd/attestd/internal/journallog"
)

// newLogger logs to the systemd journal, with priorities and structured
// fields, when stderr is connected to it (a systemd service); otherwise as
// text lines to stderr.
func newLogger(stderr io.Writer, level slog.Level) *slog.Logger {
	if stderr == os.Stderr && journalStream() {
		return slog.New(journallog.New(journallog.Options{Level: level, Identifier: "attestfleet", Fallback: stderr}))
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}

// journalStream reports whether stderr is journald's stream transport.
func journalStream() bool {
	ok, err := journal.StderrIsJournalStream()
	return ok && err == nil
}
