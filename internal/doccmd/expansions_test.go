package doccmd

// An expansion is how the test runs one command that the docs show as
// syntax (a row of README's tour, or a block marked synopsis): one concrete
// command line, the first alternative of each a|b, optional parts included
// where they can run here. Files the commands name are made by newWorkdir.
type expansion struct {
	run    string // the concrete command line(s), run in the document's session
	skip   string // why it cannot run in a test here, and what runs it instead
	daemon bool   // the command startDaemon runs for every session
}

// Nonces the expansions use: an admission's and a dispatch's.
const (
	admissionNonce = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
	dispatchNonce  = "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1"
)

// expansions maps each command as the docs spell it (continuation lines
// joined, spaces collapsed, "\|" read as "|") to how it runs. README's tour
// rows run in table order in one session: identity, attest, bind, extend,
// complete, sign and bundle make the files verify reads.
var expansions = map[string]expansion{
	// README.md, "A short tour".
	"attestd --backend=simulator --runtime-dir DIR": {daemon: true},
	"attestd --backend=tpm [--tpm-device /dev/tpmrm0 | unix:/path | tcp:host:port]": {
		skip: "needs a TPM device or a swtpm; cmd/attestd's TestSecondDaemonFailsBeforeTPM and internal/e2e run it with --tpm-device=unix:… on swtpm (make test)"},
	"attestctl identity [--pem] [--out FILE.intoto.jsonl]": {
		run: "attestctl identity --pem --out launch.intoto.jsonl"},
	"attestctl attest --nonce HEX --out FILE.intoto.jsonl": {
		run: "attestctl attest --nonce " + admissionNonce + " --out admission.intoto.jsonl"},
	"attestctl log": {run: "attestctl log"},
	"attestd --backend=snp|tdx|auto": {
		skip: "needs an SEV-SNP or TDX guest; cmd/attestd's TestDaemonOnFakeSNP, TestDaemonOnFakeTDX and TestAutoPicksTDXBeforeSNP run the daemon on fake guests"},
	"attestctl bind --build-id ID [--request FILE] [--nonce HEX]": {
		run: "attestctl bind --build-id build-1 --request request.json --nonce " + dispatchNonce},
	"attestctl extend --domain D --operation O --content S": {
		run: "attestctl extend --domain deps --operation fetch --content dep.tar"},
	"attestctl complete --build-id ID --input F --output F": {
		run: "attestctl complete --build-id build-1 --input dep.tar --output app.bin"},
	"attestctl sign --build-id ID --statement FILE": {
		run: "attestctl sign --build-id build-1 --statement provenance.json"},
	"attestctl bundle --out FILE.intoto.jsonl": {
		run: "attestctl bundle --out build.intoto.jsonl"},
	// --ak-roots: the simulator's AK has no certificate to anchor.
	"attestctl verify [--nonce [PURPOSE=]HEX] [--build-id ID] [--trust-ak PEM] [--ak-roots PEM] [--json] FILE": {
		run: "attestctl verify --nonce attest=" + admissionNonce + " --nonce dispatch=" + dispatchNonce +
			" --build-id build-1 --trust-ak ak.pem --json build.intoto.jsonl"},
	"attestctl verify --policy POLICY.yaml [--result-key KEY --result-out FILE] BUNDLE...": {
		run: "attestctl verify --policy policy.yaml --result-key result-key.pem --result-out results.intoto.jsonl build.intoto.jsonl"},
	"attestd probe-storage [--config FILE] [--out FILE|-]": {
		run: "attestd probe-storage --config attestd.yaml --out storage.json"},
	"attestctl register --ek-roots PEM --out ak.pem": {
		skip: "needs a TPM with an EK certificate; cmd/attestctl's TestRegisterOnSwtpm runs it on swtpm (make test)"},
	"DEMO_BACKEND=snp|tdx make demo": {
		skip: "a make target (builds and runs scripts/demo.sh); not run by make test"},
	"make e2e": {
		skip: "needs root, QEMU, OVMF and swtpm, 3-5 minutes; make test runs it as root (images/e2e.sh)"},
	// Without --param: the UKI's command line is the provenance's one
	// external parameter. Its own file: verify-image below checks the
	// provenance that names disk.img too.
	"attestctl reference --root DIR --uki FILE --key PEM [--provenance-out FILE]": {
		run: "attestctl reference --root rootfs --uki uki.efi --key bake-key.pem --provenance-out tour-provenance.intoto.json"},
	"attestctl verify-image --key PEM --provenance FILE disk.img uki.efi": {
		run: "attestctl verify-image --key bake-key.pub.pem --provenance provenance.intoto.json disk.img uki.efi"},
	"attestctl --help":           {run: "attestctl --help"},
	"attestctl help verify":      {run: "attestctl help verify"},
	"attestd --help":             {run: "attestd --help"},
	"attestctl version [--json]": {run: "attestctl version --json"},
	"attestd version [--json]":   {run: "attestd version --json"},
	"attestctl completion bash|zsh|fish": {
		run: "attestctl completion bash"},
	"attestd completion bash|zsh|fish": {
		run: "attestd completion bash"},

	// docs/operating.md: the end of images/bake.sh, with values elided.
	"attestctl reference --root ROOTFS --uki uki.efi --key bake-key.pem --new-key --pub-out bake-key.pub.pem " +
		"--out reference.intoto.json --provenance-out provenance.intoto.json --subject disk.img --subject uki.efi " +
		"--started-on … --param suite=bookworm … --dep git+https://github.com/attestd/attestd@COMMIT=gitCommit:COMMIT": {
		run: "attestctl reference --root rootfs --uki uki.efi --key bake-key.pem --new-key --pub-out bake-key.pub.pem " +
			"--out reference.intoto.json --provenance-out provenance.intoto.json --subject disk.img --subject uki.efi " +
			"--started-on 2026-11-24T10:58:00Z --param suite=bookworm --param kernel=linux-image-amd64 " +
			"--dep git+https://github.com/attestd/attestd@" + commit + "=gitCommit:" + commit},
	// docs/operating.md: a verifier's check of an attestation against the
	// reference values; HEX is the admission's nonce in the e2e bundle.
	"attestctl verify --trust-ak ak.pem --reference reference.intoto.json --reference-key bake-key.pub.pem --nonce HEX attestation.intoto.jsonl": {
		run: "(cd e2e && attestctl verify --trust-ak ak.pem --reference reference.intoto.json --reference-key bake-key.pub.pem " +
			"--nonce " + e2eAdmissionNonce + " bundle.intoto.jsonl)"},
	// docs/verifying.md: the synopsis, on the e2e bundle (N and BUILD are
	// its dispatch's nonce and build ID).
	"attestctl verify --policy policy.yaml --nonce dispatch=$N --build-id $BUILD [--json] " +
		"[--result-key result-key.pem --result-out results.intoto.jsonl] bundle.intoto.jsonl [more…]": {
		run: "(cd e2e && attestctl verify --policy policy.yaml --nonce dispatch=" + e2eDispatchNonce + " --build-id " + e2eBuildID +
			" --json --result-key ../result-key.pem --result-out results.intoto.jsonl bundle.intoto.jsonl)"},
}

// What verify/testdata/e2e/bundle.intoto.jsonl holds, and a commit ID.
const (
	e2eAdmissionNonce = "ba0306912f8293b51f6ab6cedfa2ee96995d1f55f3523c5d56da624868321e43"
	e2eDispatchNonce  = "249e7c29805ca6a772fec7cce0042000502914154425abbedcdfe82013fc20b7"
	e2eBuildID        = "e2e-good-1796049675"
	commit            = "da13e33f0123456789abcdef0123456789abcdef"
)
