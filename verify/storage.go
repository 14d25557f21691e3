package verify

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/attestd/attestd/measure"
)

// Storage policy: what the launch's storage event (measure.EventStorage)
// must show (docs/storage.md). The event is read only from an event log
// that replayed to authenticated evidence (Result.registers set), so its
// content is what attestd measured at launch; the rules applied to it are
// measure's, the ones the daemon applies to its own config.

// launchStorage returns the storage measurement of r's launch, the one
// storage event before the launch separator of r's authenticated event
// log, and that launch prefix.
func launchStorage(r *Result) (*measure.StorageMeasurement, []measure.Record, error) {
	if r.registers == nil {
		return nil, nil, fmt.Errorf("%s attestation: no authenticated event log (its evidence or event log did not verify; see its checks)", r.Purpose)
	}
	prefix, ok := measure.LaunchPrefix(r.Events)
	if !ok {
		return nil, nil, errors.New("the agent's event log has no launch separator")
	}
	var storage []measure.Record
	for _, rec := range prefix {
		if rec.Type == measure.EventStorage {
			storage = append(storage, rec)
		}
	}
	switch {
	case len(storage) == 0:
		return nil, nil, errors.New("the launch recorded no storage measurement (an attestd without storage measurement): what backs the root and the writable mounts is unknown")
	case len(storage) > 1:
		return nil, nil, fmt.Errorf("the launch recorded %d storage measurements, want exactly one", len(storage))
	}
	s, err := measure.ParseStorage(storage[0].Data)
	if err != nil {
		return nil, nil, err
	}
	return s, prefix, nil
}

// launchImage returns the image measurement of a launch prefix.
func launchImage(prefix []measure.Record) (*measure.ImageMeasurement, error) {
	var image []measure.Record
	for _, rec := range prefix {
		if rec.Type == measure.EventImage {
			image = append(image, rec)
		}
	}
	if len(image) != 1 {
		return nil, fmt.Errorf("the launch recorded %d image events, want exactly one", len(image))
	}
	var im measure.ImageMeasurement
	if err := measure.DecodeEventData(image[0].Data, &im); err != nil {
		return nil, fmt.Errorf("image event: %w", err)
	}
	return &im, nil
}

// storageRootVerity is storage-root-verity for one attestation: the root
// file system is read-only dm-verity with root hash want, and the kernel
// was booted with roothash= that same hash. what names where want came
// from ("the policy's", "the reference values'").
func storageRootVerity(r *Result, want, what string) (string, error) {
	s, prefix, err := launchStorage(r)
	if err != nil {
		return "", err
	}
	digest, err := s.RootVerity()
	if err != nil {
		return "", err
	}
	im, err := launchImage(prefix)
	if err != nil {
		return "", err
	}
	var problems []string
	if !strings.EqualFold(digest, want) {
		problems = append(problems, fmt.Sprintf("the root is dm-verity with root hash %s, not %s %s", digest, what, want))
	}
	switch {
	case im.RootHash == "":
		problems = append(problems, "the kernel was booted without roothash=")
	case !strings.EqualFold(digest, im.RootHash):
		problems = append(problems, fmt.Sprintf("the root is dm-verity with root hash %s, but the kernel was booted with roothash=%s", digest, im.RootHash))
	}
	if len(problems) > 0 {
		return "", errors.New(strings.Join(problems, "; "))
	}
	return fmt.Sprintf("the root file system is read-only dm-verity with root hash %s (%s); the kernel was booted with it", short(digest), what), nil
}

// storageEncrypted is storage-encrypted for one attestation: every
// writable persistent mount is dm-crypt with an ephemeral key.
func storageEncrypted(r *Result) (string, error) {
	s, _, err := launchStorage(r)
	if err != nil {
		return "", err
	}
	if err := s.EncryptedWritable(); err != nil {
		// One line per failing mount: keep the detail on one line.
		return "", errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	var writable []string
	for _, m := range s.Mounts {
		if m.Writable && m.Kind != measure.MountMemory && m.Kind != measure.MountVirtual {
			writable = append(writable, m.MountPoint)
		}
	}
	var swaps []string
	for _, sw := range s.Swaps {
		swaps = append(swaps, sw.Filename)
	}
	detail := "no writable persistent mounts: every writable file system is in memory"
	if len(writable) > 0 {
		detail = fmt.Sprintf("%d writable persistent mount(s), all dm-crypt with ephemeral keys: %s", len(writable), strings.Join(writable, ", "))
	}
	if len(swaps) > 0 {
		detail += fmt.Sprintf("; %d swap area(s), each dm-crypt with an ephemeral key or zram: %s", len(swaps), strings.Join(swaps, ", "))
	}
	return detail, nil
}

// rootVerityWant is the root hash storage.root_verity asks for, and where
// it came from.
func (p *Policy) rootVerityWant() (want, what string, err error) {
	rv := p.Storage.RootVerity
	if !rv.Reference {
		return hex.EncodeToString(rv.Hash[:]), "the policy's", nil
	}
	switch {
	case p.Resolved == nil || p.Resolved.Reference == nil && p.Resolved.ReferenceErr == nil:
		return "", "", errors.New("storage.root_verity is \"reference\", but no reference values were read")
	case p.Resolved.Reference == nil:
		return "", "", fmt.Errorf("storage.root_verity is \"reference\", but the reference values are unusable: %v", p.Resolved.ReferenceErr)
	case p.Resolved.Reference.RootHash == "":
		return "", "", errors.New("storage.root_verity is \"reference\", but the reference values name no roothash")
	}
	return p.Resolved.Reference.RootHash, "the reference values'", nil
}

// eachResultDetail is eachResult for checks whose success detail depends
// on the attestation: the first error wins, else the first detail.
func eachResultDetail(rs []*Result, f func(*Result) (string, error)) (string, error) {
	var first string
	err := eachResult(rs, func(r *Result) error {
		d, err := f(r)
		if first == "" {
			first = d
		}
		return err
	})
	return first, err
}
