// Package doccmd holds a test that runs every command README.md and
// docs/*.md show, as written, against freshly built binaries and attestd on
// the in-process TPM simulator (docs/cli/ is generated from the command
// definitions and tested in cmd/attestctl). A command that cannot run in a
// test is marked in the doc, right before its block, with
// <!-- doccmd: skip: REASON -->; a block that shows a refusal with
// <!-- doccmd: exit N -->.
package doccmd
