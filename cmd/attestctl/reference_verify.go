package main

import (
	"crypto"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/verify"
)

// referenceFlags are verify's --reference and --reference-key.
type referenceFlags struct {
	files, keys multiFlag
}

func newReferenceFlags(fs *pflag.FlagSet) *referenceFlags {
	rf := &referenceFlags{}
	fs.Var(&rf.files, "reference", "`FILE` of signed reference values of the image (attestctl reference); needs --reference-key")
	fs.Var(&rf.keys, "reference-key", "`PEM` public key of the image baker that signed --reference (repeatable)")
	return rf
}

// apply appraises every attestd attestation of rep against the reference
// values and adds the checks to rep. A reference file that is not signed by
// a --reference-key fails the "reference-values" check of every attestation.
func (rf *referenceFlags) apply(rep *verify.Report) error {
	if len(rf.files) == 0 {
		if len(rf.keys) > 0 {
			return fmt.Errorf("%w: --reference-key without --reference", errUsage)
		}
		return nil
	}
	if len(rf.files) > 1 {
		return fmt.Errorf("%w: --reference given more than once", errUsage)
	}
	if len(rf.keys) == 0 {
		return fmt.Errorf("%w: --reference needs --reference-key", errUsage)
	}
	var keys []crypto.PublicKey
	for _, f := range rf.keys {
		k, err := readPublicKey(f)
		if err != nil {
			return fmt.Errorf("%w: --reference-key: %v", errUsage, err)
		}
		keys = append(keys, k)
	}
	b, err := readInput(rf.files[0])
	if err != nil {
		return fmt.Errorf("%w: --reference: %v", errUsage, err)
	}
	rv, refErr := verify.OpenReference(b, keys)
	for _, r := range rep.Results {
		if r.Purpose == "" || r.Purpose == verify.PurposeSignedStatement {
			continue
		}
		if refErr != nil {
			r.Checks = append(r.Checks, attest.Check{Name: verify.CheckReference, Detail: refErr.Error()})
		} else {
			r.Checks = append(r.Checks, attest.Check{Name: verify.CheckReference, OK: true,
				Detail: "reference values signed by the bake key"})
			r.Checks = append(r.Checks, r.Appraise(rv)...)
		}
		r.OK = len(r.Failed()) == 0
		rep.OK = rep.OK && r.OK
	}
	return nil
}
