// Package fleet is the control plane's verifier service: it challenges
// freshly booted environments, admits them, dispatches each to exactly one
// build across every replica, verifies completion and issues the signed
// results, over a ledger (Store) that a real database keeps consistent.
// docs/fleet.md is the operator's guide.
package fleet
