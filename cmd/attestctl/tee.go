package main

import (
	"encoding/hex"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/snp"
	"github.com/attestd/attestd/attest/tdx"
)

// teeOptions are the verify flags for SEV-SNP and TDX evidence. Their zero
// values trust AMD's and Intel's embedded roots and refuse debug guests.
type teeOptions struct {
	snpVCEK         *string
	snpMeasurements multiFlag
	tdxCollateral   *string
	tdxSkipColl     *bool
	tdxMRTDs        multiFlag
}

func teeFlags(fs *pflag.FlagSet) *teeOptions {
	o := &teeOptions{
		snpVCEK:       fs.String("snp-vcek", "", "`DER` VCEK certificate for SEV-SNP reports that ship none (fetched from AMD's KDS beforehand; no network is used)"),
		tdxCollateral: fs.String("tdx-collateral", "", "`DIR` of Intel PCS collateral: tcbinfo.json, tcbinfo-issuer-chain.pem, qeidentity.json, qeidentity-issuer-chain.pem"),
		tdxSkipColl:   fs.Bool("tdx-insecure-skip-collateral", false, "UNSAFE: do not check TDX TCB info and QE identity (the platform may be out of date)"),
	}
	fs.Var(&o.snpMeasurements, "snp-measurement", "accepted SEV-SNP launch measurement (`HEX`, 48 bytes; repeatable)")
	fs.Var(&o.tdxMRTDs, "tdx-mrtd", "accepted TDX MRTD (`HEX`, 48 bytes; repeatable)")
	return o
}

func (o *teeOptions) verifiers() ([]attest.Verifier, error) {
	sv := snp.Verifier{}
	if *o.snpVCEK != "" {
		der, err := readInput(*o.snpVCEK)
		if err != nil {
			return nil, fmt.Errorf("%w: --snp-vcek: %v", errUsage, err)
		}
		sv.VCEK = der
	}
	var err error
	if sv.Policy.Measurements, err = hex48s("--snp-measurement", o.snpMeasurements); err != nil {
		return nil, err
	}
	tv := tdx.Verifier{CollateralDir: *o.tdxCollateral, InsecureSkipCollateral: *o.tdxSkipColl}
	if tv.Policy.MRTDs, err = hex48s("--tdx-mrtd", o.tdxMRTDs); err != nil {
		return nil, err
	}
	return []attest.Verifier{sv, tv}, nil
}

func hex48s(flagName string, vals []string) ([][48]byte, error) {
	var out [][48]byte
	for _, v := range vals {
		b, err := hex.DecodeString(v)
		if err != nil || len(b) != 48 {
			return nil, fmt.Errorf("%w: %s %q: want 96 hex digits", errUsage, flagName, v)
		}
		out = append(out, [48]byte(b))
	}
	return out, nil
}
