package main

import "testing"

func TestStorageSummary(t *testing.T) {
	const event = `{"mountTable":"/proc/1/mountinfo","crypttab":"/etc/crypttab","mounts":[` +
		`{"mountPoint":"/","fsType":"squashfs","source":"/dev/mapper/root","writable":false,"kind":"block","device":{"number":"253:0","name":"dm-0","dm":{"name":"root","targets":[{"type":"verity","sectors":8,"hashAlgorithm":"sha256","rootDigest":"020352f9f354b08b0000"}]}}},` +
		`{"mountPoint":"/proc","fsType":"proc","source":"proc","writable":true,"kind":"virtual"},` +
		`{"mountPoint":"/var","fsType":"tmpfs","source":"tmpfs","writable":true,"kind":"memory"},` +
		`{"mountPoint":"/var/lib/build-runner","fsType":"ext4","source":"/dev/mapper/scratch","writable":true,"kind":"block","device":{"number":"253:1","name":"dm-1","dm":{"name":"scratch","targets":[{"type":"crypt","sectors":8,"cipher":"aes-xts-plain64","keyBits":512,"keyType":"hex"}]}}},` +
		`{"mountPoint":"/data","fsType":"ext4","source":"/dev/vdc","writable":true,"kind":"block","device":{"number":"252:32","name":"vdc"}}],` +
		`"swaps":[{"filename":"/dev/dm-2","type":"partition","device":{"number":"253:2","name":"dm-2","dm":{"name":"swap","error":"dmsetup: denied"}}}]}`
	want := "/ ro squashfs on root: verity 020352f9f354b08b…; writable: /var tmpfs, " +
		"/var/lib/build-runner ext4 on scratch: crypt aes-xts-plain64/512, /data ext4 on vdc; " +
		"swap /dev/dm-2 on swap (table unreadable) (5 mounts in /proc/1/mountinfo)"
	if got := storageSummary([]byte(event)); got != want {
		t.Errorf("storageSummary =\n%s\nwant\n%s", got, want)
	}
	if got := storageSummary([]byte("not json")); got != "not json" {
		t.Errorf("undecodable event: %q, want it verbatim", got)
	}
}
