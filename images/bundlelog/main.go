// Command bundlelog prints the agent's event log carried by each attestd
// attestation of a bundle (.intoto.jsonl): one line per attestation with its
// purpose, build ID and the types of its events in order. The e2e test uses it
// on the host to check that the bundle records a daemon restart in the middle
// of the build. It authenticates nothing (`attestctl verify` does); other
// statements in the bundle (a signed provenance) are listed as "statement".
//
//	go run ./images/bundlelog bundle.intoto.jsonl
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: bundlelog BUNDLE.intoto.jsonl")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "bundlelog:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	bundle, err := scai.DecodeBundle(b)
	if err != nil {
		return err
	}
	for i, env := range bundle.Envelopes {
		o, err := scai.Open(env)
		if err != nil {
			fmt.Println("statement")
			continue
		}
		a := o.Attestation
		build := "-"
		if a.Build != nil {
			build = a.Build.ID
		}
		cel, ok := scai.FindLog(bundle.Logs, a.Log)
		if !ok {
			return fmt.Errorf("envelope %d (%s): the bundle carries no event log of %d bytes with sha256 %x", i+1, a.Purpose, a.Log.Size, a.Log.SHA256)
		}
		recs, err := measure.ParseCEL(cel)
		if err != nil {
			return fmt.Errorf("envelope %d (%s): %w", i+1, a.Purpose, err)
		}
		types := make([]string, len(recs))
		for j, r := range recs {
			types[j] = r.Type.String()
		}
		fmt.Printf("%s %s %s\n", a.Purpose, build, strings.Join(types, " "))
	}
	return nil
}
