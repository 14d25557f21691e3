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
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/verify"
)

// reference computes the reference values of a baked image from its
// artifacts and writes them as a signed in-toto statement
// (docs/reference-values.md).
func (e *env) reference(args []string) error {
	fs := e.newFlagSet("reference")
	root := fs.String("root", "", "the image's root file system (a directory)")
	uki := fs.String("uki", "", "the image's UKI (PE file)")
	binary := fs.String("binary", "/usr/bin/attestd", "attestd's path inside the image")
	config := fs.String("config", agent.DefaultConfigPath, "attestd's config path inside the image")
	keyFile := fs.String("key", "", "bake key: PEM EC private key that signs the statement")
	newKey := fs.Bool("new-key", false, "create --key (P-256) if it does not exist")
	pubOut := fs.String("pub-out", "", "also write the bake key's public key (PEM) here")
	outFile := fs.String("out", "", "write the signed statement here (default stdout)")
	prov := newProvenanceFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *root == "" || *uki == "" || *keyFile == "" || fs.NArg() != 0 {
		return fmt.Errorf("%w: reference needs --root, --uki and --key", errUsage)
	}
	rv, img, err := computeReference(*root, *uki, *binary, *config)
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
	env, err := verify.SignReference(context.Background(), key, st)
	if err != nil {
		return err
	}
	if *prov.out != "" {
		pst, err := prov.statement(*uki, e.clock())
		if err != nil {
			return err
		}
		penv, err := verify.SignReference(context.Background(), key, pst)
		if err != nil {
			return fmt.Errorf("sign image provenance: %w", err)
		}
		if err := os.WriteFile(*prov.out, append(penv, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *outFile == "" {
		_, err = fmt.Fprintf(e.stdout, "%s\n", env)
		return err
	}
	if err := os.WriteFile(*outFile, append(env, '\n'), 0o644); err != nil {
		return err
	}
	pretty, _ := json.MarshalIndent(rv, "", "  ")
	fmt.Fprintf(e.stdout, "%s\n", pretty)
	return nil
}

// computeReference predicts attestd's launch events from the files in root
// at their in-image paths, and PCR 4 and 11 from the UKI.
func computeReference(root, ukiPath, binaryPath, configPath string) (*verify.ReferenceValues, []byte, error) {
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
	launch, err := measure.PredictRegister(crypto.SHA256, events)
	if err != nil {
		return nil, nil, err
	}
	rv := &verify.ReferenceValues{
		Bank:     "sha256",
		Agent:    verify.AgentReference{Register: fmt.Sprintf("PCR%d", cfg.Register), Launch: hex.EncodeToString(launch)},
		RootHash: measure.ParseCmdline(cmdline)["roothash"],
		PCRs:     map[string]string{},
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
	rv.PCRs["4"] = hex.EncodeToString(measure.PredictPCR4(crypto.SHA256, [][]byte{auth, kauth}))
	// The image masks systemd-pcrphase: no phase strings (docs/reference-values.md).
	pcr11, err := measure.PredictPCR11(crypto.SHA256, img, nil)
	if err != nil {
		return nil, nil, err
	}
	rv.PCRs["11"] = hex.EncodeToString(pcr11)
	rv.Boot = &verify.BootReference{UKIAuthenticodeSHA256: hex.EncodeToString(auth), KernelAuthenticodeSHA256: hex.EncodeToString(kauth), Cmdline: cmdline, PCR11Phases: []string{}}
	return rv, img, nil
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
	k, err := parsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: --key %s: %v", errUsage, file, err)
	}
	return k, nil
}
