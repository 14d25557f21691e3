package main

import (
	"github.com/spf13/pflag"
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
