package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/measure"
)

const encryptedConfig = "executors: [/bin/sh]\nstorage:\n  encrypted: [/var/lib/build-runner]\n"

// TestDaemonRefusesUnencryptedStorage: a work directory that is not on
// ephemeral dm-crypt (here: wherever this machine keeps /var/lib) stops the
// daemon before READY, before the socket, with one line.
func TestDaemonRefusesUnencryptedStorage(t *testing.T) {
	conn := fakeSystemdNotify(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(encryptedConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	err := runFn(context.Background(), []string{"--config", cfg, "--runtime-dir", run, "--backend=simulator"}, &syncBuffer{})
	if err == nil {
		t.Fatal("attestd started with an unencrypted work directory")
	}
	if !strings.HasPrefix(err.Error(), "storage: /var/lib/build-runner must be on an encrypted volume") || strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not the one clear line: %q", err)
	}
	if exitCode(err) != 1 {
		t.Errorf("exit code %d, want 1", exitCode(err))
	}
	for _, name := range []string{agent.SocketName, agent.EventLogName, agent.LaunchAttestName} {
		if _, err := os.Stat(filepath.Join(run, name)); err == nil {
			t.Errorf("%s exists after the refusal", name)
		}
	}
	conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 64)); err == nil {
		t.Errorf("systemd was notified (%d bytes) although attestd refused to start", n)
	}
}

// TestDaemonMeasuresStorageSnapshot: the probe's snapshot is what the
// launch records.
func TestDaemonMeasuresStorageSnapshot(t *testing.T) {
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	if err := os.MkdirAll(run, 0o750); err != nil {
		t.Fatal(err)
	}
	bootID, err := agent.BootID()
	if err != nil {
		t.Fatal(err)
	}
	s := runnerStorage()
	b, err := agent.EncodeStorageSnapshot(bootID, &s)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.WriteStorageSnapshot(filepath.Join(run, agent.StorageSnapshotName), b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(encryptedConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemonNoConfig(t, dir, "--backend=simulator")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(d.dir, agent.LaunchAttestName)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no launch attestation\n%s", d.log)
		}
	}
	raw, err := os.ReadFile(filepath.Join(d.dir, agent.EventLogName))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := measure.ParseCEL(raw)
	if err != nil {
		t.Fatal(err)
	}
	var got []measure.StorageMeasurement
	for _, r := range recs {
		if r.Type == measure.EventStorage {
			var m measure.StorageMeasurement
			if err := json.Unmarshal(r.Data, &m); err != nil {
				t.Fatal(err)
			}
			got = append(got, m)
		}
	}
	if len(got) != 1 || len(got[0].Mounts) != len(s.Mounts) {
		t.Fatalf("launch log holds %d storage event(s) %+v, want the snapshot's", len(got), got)
	}
	if err := got[0].EncryptedWritable(); err != nil {
		t.Errorf("recorded storage: %v", err)
	}
}

func TestProbeStorageCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, nil, 0o644)
	out := filepath.Join(dir, "storage.json")
	if err := runFn(context.Background(), []string{"probe-storage", "--config", cfg, "--out", out}, &syncBuffer{}); err != nil {
		t.Fatalf("probe-storage: %v", err)
	}
	bootID, _ := agent.BootID()
	s, err := agent.ReadStorageSnapshot(out, bootID)
	if err != nil {
		t.Fatal(err)
	}
	if s.MountOf("/") == nil {
		t.Errorf("no root mount in %+v", s)
	}
	os.WriteFile(cfg, []byte(encryptedConfig), 0o644)
	err = runFn(context.Background(), []string{"probe-storage", "--config", cfg, "--out", out + ".2"}, &syncBuffer{})
	if err == nil || !strings.HasPrefix(err.Error(), "storage: /var/lib/build-runner must be") {
		t.Errorf("probe-storage with an unencrypted work directory: %v", err)
	}
	if _, err := os.Stat(out + ".2"); err == nil {
		t.Error("snapshot written although the check failed")
	}
	if err := runFn(context.Background(), []string{"probe-storage", "--bogus"}, &syncBuffer{}); exitCode(err) != 2 {
		t.Errorf("bad flag: %v (exit %d), want exit 2", err, exitCode(err))
	}
}

// runnerStorage is the build-runner image's layout (images/bake.sh).
func runnerStorage() measure.StorageMeasurement {
	verity := &measure.DeviceMeasurement{Number: "253:0", Name: "dm-0", DM: &measure.DMMeasurement{
		Name: "root", UUID: "CRYPT-VERITY-7a0b1c2d3e4f4a5b8c6d7e8f9a0b1c2d-root",
		Targets: []measure.DMTargetMeasurement{{Type: "verity", Sectors: 417792, HashAlgorithm: "sha256",
			RootDigest: "5a4e2b41f4c1ff5e2d4c6f0cc7f5f3b5a2c1e7e9c5c4e4f2b6a1d8e3f0a9b7c6"}},
	}}
	crypt := &measure.DeviceMeasurement{Number: "253:1", Name: "dm-1", DM: &measure.DMMeasurement{
		Name: "scratch", UUID: "CRYPT-PLAIN-scratch", Backing: []string{"vdc"},
		Targets:  []measure.DMTargetMeasurement{{Type: "crypt", Sectors: 131072, Cipher: "aes-xts-plain64", KeyBits: 512, KeyType: "hex"}},
		Crypttab: &measure.CrypttabMeasurement{Device: "/dev/disk/by-id/virtio-attestd-scratch", KeyFile: "/dev/urandom", Options: []string{"plain", "tmp=ext4"}},
	}}
	return measure.StorageMeasurement{
		MountTable: "/proc/1/mountinfo",
		Crypttab:   "/etc/crypttab",
		Mounts: []measure.MountMeasurement{
			{MountPoint: "/", FSType: "squashfs", Source: "/dev/mapper/root", Kind: measure.MountBlock, Device: verity},
			{MountPoint: "/var", FSType: "tmpfs", Source: "tmpfs", Writable: true, Kind: measure.MountMemory},
			{MountPoint: "/var/lib/build-runner", FSType: "ext4", Source: "/dev/mapper/scratch", Writable: true, Kind: measure.MountBlock, Device: crypt},
		},
	}
}
