#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (run as root).
set -euo pipefail
pkgs=(swtpm swtpm-tools tpm2-tools protobuf-compiler libssl-dev gcc make)
# images/ and the e2e test (issue 6): bake with debootstrap, boot under QEMU + OVMF + swtpm.
pkgs+=(systemd debootstrap qemu-system-x86 ovmf systemd-boot-efi cryptsetup-bin dosfstools mtools fdisk binutils e2fsprogs squashfs-tools cpio zstd)
# attestd probe-storage reads device-mapper tables with dmsetup (issue 7).
pkgs+=(dmsetup)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
