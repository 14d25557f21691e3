package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/verify"
)

// referenceJSON is reference's --json output.
type referenceJSON struct {
	Reference  fileSummary             `json:"reference"`
	Provenance *fileSummary            `json:"provenance,omitempty"`
	PublicKey  string                  `json:"publicKeyFile,omitempty"`
	Values     *verify.ReferenceValues `json:"values"`
}

// bakeFlags are reference's flags.
type bakeFlags struct {
	root, uki, binary, config, keyFile, pubOut, outFile *string
	secureBoot                                          *string
	sysexts                                             *[]string
	newKey, asJSON                                      *bool
	prov                                                *provenanceFlags
	format                                              *format
}

func (e *env) referenceCmd() *cobra.Command {
	f := &bakeFlags{}
	cmd := &cobra.Command{
		Use:     "reference --root DIR --uki FILE --key PEM [--out FILE] [--provenance-out FILE]",
		GroupID: groupOffline,
		Short:   "Compute and sign the reference values of a baked image",
		Long: `Compute the reference values of a baked image from its artifacts (attestd's launch
events and register value from the files under --root at their in-image paths; PCR 4, 9, 11
and 12 from the UKI; PCR 7 for Secure Boot off unless --secure-boot pinned) and write them as an in-toto statement signed with the bake key
(docs/reference-values.md). Without --out the signed statement goes to stdout; with --out,
the reference values are printed as JSON. --provenance-out also writes the image's signed
SLSA provenance v1 statement (subjects: --subject files, default the --uki). --format sigstore
writes both as Sigstore bundles v0.3 whose key hint names the bake key (docs/formats.md).

--json (with --out) prints {"reference": {"file", "bytes", "sha256"}, "provenance": {…},
"publicKeyFile", "values"}.`,
		Example: `  attestctl reference --root rootfs --uki uki.efi --key bake-key.pem --new-key \
      --pub-out bake-key.pub.pem --out reference.intoto.json \
      --provenance-out provenance.intoto.json --subject disk.img --subject uki.efi --param suite=bookworm`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return e.reference(f) },
	}
	fs := cmd.Flags()
	f.root = fs.String("root", "", "the image's root file system: a `DIR` (required)")
	f.uki = fs.String("uki", "", "the image's UKI (PE `FILE`; required)")
	f.binary = fs.String("binary", "/usr/bin/attestd", "attestd's `PATH` inside the image")
	f.config = fs.String("config", agent.DefaultConfigPath, "attestd's config `PATH` inside the image")
	f.keyFile = fs.String("key", "", "bake key: `PEM` EC private key that signs the statement (required)")
	f.newKey = fs.Bool("new-key", false, "create --key (P-256) if it does not exist")
	f.pubOut = fs.String("pub-out", "", "also write the bake key's public key (PEM) to `FILE`")
	f.outFile = fs.String("out", "", "write the signed statement to `FILE` (default stdout)")
	f.asJSON = fs.Bool("json", false, "print a JSON summary of the files written (needs --out)")
	f.secureBoot = fs.String("secure-boot", verify.SecureBootOff, "the Secure Boot state PCR 7 is predicted for: `off` (no keys enrolled, as the image's firmware variables are), or pinned: PCR 7 is not predicted and the platform policy pins it (reference.registers.PCR7)")
	f.sysexts = fs.StringArray("sysext", nil, "a system extension image `FILE` the image ships in <uki>.extra.d/ on the ESP (repeat for each): systemd-stub measures them into PCR 13 before attestd starts, which attestd records as a preboot event (docs/reference-values.md)")
	f.prov = newProvenanceFlags(fs)
	f.format = newFormat(fs, "format", "the signed reference values and provenance")
	for _, n := range []string{"root", "uki", "key"} {
		cmd.MarkFlagRequired(n)
	}
	cmd.MarkFlagDirname("root")
	for _, n := range []string{"uki", "key", "pub-out", "out", "provenance-out", "subject"} {
		cmd.MarkFlagFilename(n)
	}
	return cmd
}

// reference computes the reference values of a baked image from its
// artifacts and writes them as a signed in-toto statement
// (docs/reference-values.md).
func (e *env) reference(f *bakeFlags) error {
	root, uki, binary, config, keyFile, newKey, pubOut, outFile, prov := f.root, f.uki, f.binary, f.config, f.keyFile, f.newKey, f.pubOut, f.outFile, f.prov
	if *root == "" || *uki == "" || *keyFile == "" {
		return fmt.Errorf("%w: reference needs --root, --uki and --key", errUsage)
	}
	if err := jsonNeedsOut(*f.asJSON, *outFile); err != nil {
		return err
	}
	if *f.secureBoot != verify.SecureBootOff && *f.secureBoot != "pinned" {
		return fmt.Errorf("%w: --secure-boot %q: want off or pinned", errUsage, *f.secureBoot)
	}
	rv, img, err := computeReference(*root, *uki, *binary, *config, *f.sysexts)
	if err != nil {
		return err
	}
	err = predictBoot(rv, img, *f.secureBoot == verify.SecureBootOff, *f.sysexts)
	if err != nil {
		return err
	}
	key, err := loadBakeKey(*keyFile, *newKey)
	if err != nil {
		return err
	}
	if *pubOut != "" {
		der, err := x509.MarshalPKIXPublicKey(key.Public())
		if err != nil {
			return err
		}
		if err := os.WriteFile(*pubOut, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
			return err
		}
	}
	sum := sha256.Sum256(img)
	st, err := verify.NewReferenceStatement([]verify.ReferenceSubject{{Name: filepath.Base(*uki), SHA256: hex.EncodeToString(sum[:])}}, rv)
	if err != nil {
		return err
	}
	env, err := f.sign(key, st)
	if err != nil {
		return err
	}
	var summary referenceJSON
	if *prov.out != "" {
		pst, err := prov.statement(*uki, rv.Boot.Cmdline, e.clock())
		if err != nil {
			return err
		}
		penv, err := f.sign(key, pst)
		if err != nil {
			return fmt.Errorf("sign image provenance: %w", err)
		}
		penv = append(penv, '\n')
		if err := os.WriteFile(*prov.out, penv, 0o644); err != nil {
			return err
		}
		ps := summarize(*prov.out, penv)
		summary.Provenance = &ps
	}
	if *outFile == "" {
		_, err = fmt.Fprintf(e.stdout, "%s\n", env)
		return err
	}
	env = append(env, '\n')
	if err := os.WriteFile(*outFile, env, 0o644); err != nil {
		return err
	}
	if *f.asJSON {
		summary.Reference, summary.PublicKey, summary.Values = summarize(*outFile, env), *pubOut, rv
		return e.printJSON(summary)
	}
	pretty, _ := json.MarshalIndent(rv, "", "  ")
	fmt.Fprintf(e.stdout, "%s\n", pretty)
	return nil
}

// sign signs a statement with the bake key in the --format chosen.
func (f *bakeFlags) sign(key crypto.Signer, statement []byte) ([]byte, error) {
	env, err := verify.SignReference(context.Background(), key, statement)
	if err != nil {
		return nil, err
	}
	return f.format.encode(env, key.Public())
}

// computeReference predicts attestd's launch events from the files in root
// at their in-image paths, and PCR 4 and 11 from the UKI (predictBoot adds
// the other boot PCRs).
func computeReference(root, ukiPath, binaryPath, configPath string, sysexts []string) (*verify.ReferenceValues, []byte, error) {
	img, err := os.ReadFile(ukiPath)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: --uki: %v", errUsage, err)
	}
	cfgRaw, err := readInImage(root, configPath)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := agent.ParseConfig(configPath, cfgRaw)
	if err != nil {
		return nil, nil, err
	}
	cmdlineRaw, ok, err := measure.UKISection(img, ".cmdline")
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, fmt.Errorf("%s has no .cmdline section", ukiPath)
	}
	// attestd measures strings.TrimSpace(/proc/cmdline); the stub passes
	// .cmdline as it is (a trailing NUL is not part of the command line).
	cmdline := strings.TrimSpace(strings.TrimRight(string(cmdlineRaw), "\x00"))

	var events []measure.Event
	fileEvent := func(t measure.EventType, p string) error {
		b, err := readInImage(root, p)
		if err != nil {
			return fmt.Errorf("%s %s: %w", t, p, err)
		}
		ev, err := measure.FileEventFromDigest(t, p, sha256.Sum256(b))
		if err != nil {
			return err
		}
		events = append(events, ev)
		return nil
	}
	if err := fileEvent(measure.EventBinary, binaryPath); err != nil {
		return nil, nil, err
	}
	ev, err := measure.ConfigEvent(configPath, cfgRaw)
	if err != nil {
		return nil, nil, err
	}
	events = append(events, ev)
	var metaSum *[32]byte
	if cfg.ImageMetadata != "" {
		b, err := readInImage(root, cfg.ImageMetadata)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, nil, fmt.Errorf("image metadata: %w", err)
		default:
			s := sha256.Sum256(b)
			metaSum = &s
		}
	}
	if ev, err = measure.ImageEventFromDigest(cfg.ImageMetadata, metaSum, cmdline); err != nil {
		return nil, nil, err
	}
	events = append(events, ev)
	for _, p := range cfg.Executors {
		if err := fileEvent(measure.EventExecutor, p); err != nil {
			return nil, nil, err
		}
	}
	events = append(events, measure.SeparatorEvent())
	pre, err := sysextReference(sysexts, cfg.Register)
	if err != nil {
		return nil, nil, err
	}
	var preboot []measure.PrebootMeasurement
	if pre != nil {
		preboot = []measure.PrebootMeasurement{pre.m}
	}
	launch, err := measure.PredictWithPreboot(crypto.SHA256, preboot, events)
	if err != nil {
		return nil, nil, err
	}
	rv := &verify.ReferenceValues{
		Bank:     "sha256",
		Agent:    verify.AgentReference{Register: fmt.Sprintf("PCR%d", cfg.Register), Launch: hex.EncodeToString(launch)},
		RootHash: measure.ParseCmdline(cmdline)["roothash"],
		PCRs:     map[string]string{},
	}
	if pre != nil {
		rv.Agent.Events = append(rv.Agent.Events, verify.ReferenceEvent{Type: pre.m.Event.Type.String(), Data: json.RawMessage(pre.m.Event.Data),
			SHA256: hex.EncodeToString(pre.m.Digests[crypto.SHA256]), What: pre.what})
	}
	for _, ev := range events {
		rv.Agent.Events = append(rv.Agent.Events, verify.ReferenceEvent{Type: ev.Type.String(), Data: json.RawMessage(ev.Data)})
	}
	auth, err := measure.AuthenticodeDigest(img, crypto.SHA256)
	if err != nil {
		return nil, nil, err
	}
	// systemd-stub 252 starts the embedded kernel with LoadImage, so the
	// firmware measures it into PCR 4 too, right after the UKI.
	linux, ok, err := measure.UKISection(img, ".linux")
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, fmt.Errorf("%s has no .linux section", ukiPath)
	}
	kauth, err := measure.AuthenticodeDigest(linux, crypto.SHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("the UKI's kernel: %w", err)
	}
	rv.Boot = &verify.BootReference{UKIAuthenticodeSHA256: hex.EncodeToString(auth), KernelAuthenticodeSHA256: hex.EncodeToString(kauth), Cmdline: cmdline, PCR11Phases: []string{},
		Events: map[string][]verify.BootEvent{}}
	setPCR(rv, 4, measure.PCR4Events(crypto.SHA256, [][]byte{auth, kauth}))
	// The image masks systemd-pcrphase: no phase strings (docs/reference-values.md).
	pcr11, err := measure.PCR11Events(crypto.SHA256, img, nil)
	if err != nil {
		return nil, nil, err
	}
	setPCR(rv, 11, pcr11)
	return rv, img, nil
}

// setPCR predicts PCR i as the value of evs, and keeps the events to
// explain a difference.
func setPCR(rv *verify.ReferenceValues, i int, evs []measure.FirmwareEvent) {
	k := strconv.Itoa(i)
	rv.PCRs[k] = hex.EncodeToString(measure.PCRValue(crypto.SHA256, evs))
	rv.Boot.Events[k] = verify.BootEvents(evs)
}

// predictBoot adds the PCRs that show how the image was booted: PCR 9 (the
// kernel's load options and initrd: the UKI's own), PCR 12 (nothing: no
// command line from the boot entry, no credentials or add-ons on the ESP)
// and, with secureBootOff, PCR 7 (Secure Boot off, no keys enrolled). The
// system extension images sysexts are appended to the kernel's initrd by
// the stub, as one archive.
func predictBoot(rv *verify.ReferenceValues, img []byte, secureBootOff bool, sysexts []string) error {
	var files []measure.SysextFile
	for _, p := range sysexts {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("%w: --sysext: %v", errUsage, err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		files = append(files, measure.SysextFile{Name: filepath.Base(p), Size: fi.Size(), Content: f})
	}
	pcr9, err := measure.UKIKernelEventsWithSysexts(crypto.SHA256, img, files)
	if err != nil {
		return err
	}
	setPCR(rv, 9, pcr9)
	setPCR(rv, 12, nil)
	if secureBootOff {
		setPCR(rv, 7, measure.SecureBootOffEvents(crypto.SHA256))
		rv.Boot.SecureBoot = verify.SecureBootOff
	}
	return nil
}

// readInImage reads the file at the absolute in-image path p under root,
// resolving symbolic links inside root (an absolute link target is relative
// to root, as it is in the booted image).
func readInImage(root, p string) ([]byte, error) {
	if !path.IsAbs(p) {
		return nil, fmt.Errorf("path %q is not absolute", p)
	}
	cur := "/"
	rest := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	for hops := 0; len(rest) > 0; {
		next := path.Join(cur, rest[0])
		rest = rest[1:]
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			return nil, err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return nil, fmt.Errorf("%s: too many symbolic links", p)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return nil, err
		}
		if !path.IsAbs(target) {
			target = path.Join(cur, target)
		}
		rest = append(strings.Split(strings.TrimPrefix(path.Clean(target), "/"), "/"), rest...)
		cur = "/"
	}
	fi, err := os.Stat(filepath.Join(root, cur))
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	return os.ReadFile(filepath.Join(root, cur))
}

func loadBakeKey(file string, create bool) (crypto.Signer, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) && create {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("write bake key: %w", err)
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: --key: %v", errUsage, err)
	}
	k, err := verify.ParsePEMPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: --key %s: %v", errUsage, file, err)
	}
	return k, nil
}

// sysextPrediction is the preboot event systemd-stub's measurement of the
// image's system extensions gives, and what it covers, for the statement.
type sysextPrediction struct {
	m    measure.PrebootMeasurement
	what string
}

// sysextReference predicts the preboot event for the system extension
// images paths (all the *.raw files the image ships in <uki>.extra.d/):
// systemd-stub 252 measures them as one cpio archive into PCR 13, before
// attestd starts. nil if there are none.
func sysextReference(paths []string, register int) (*sysextPrediction, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	if register != 13 {
		return nil, fmt.Errorf("%w: --sysext: systemd-stub measures system extensions into PCR 13, and attestd's register is PCR %d: nothing to predict there", errUsage, register)
	}
	var (
		files []measure.SysextFile
		sums  = make([]hash.Hash, len(paths))
		names = make([]string, len(paths))
	)
	for i, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("%w: --sysext: %v", errUsage, err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		sums[i], names[i] = sha256.New(), filepath.Base(p)
		files = append(files, measure.SysextFile{Name: names[i], Size: fi.Size(), Content: io.TeeReader(f, sums[i])})
	}
	m, err := measure.SysextPreboot(files, []crypto.Hash{crypto.SHA256})
	if err != nil {
		return nil, err
	}
	what := make([]string, len(paths))
	for i := range paths {
		what[i] = fmt.Sprintf("%s sha256:%x", names[i], sums[i].Sum(nil))
	}
	sort.Strings(what)
	return &sysextPrediction{m: m, what: "system extensions (systemd-stub's archive of <uki>.extra.d/*.raw): " + strings.Join(what, ", ")}, nil
}
