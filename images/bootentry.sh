#!/usr/bin/env bash
# images/bootentry.sh: the e2e test's cmdline-override attack (issue 16). Add a
# firmware boot entry to an OVMF variable store that starts the image's UKI
# (\EFI\BOOT\BOOTX64.EFI on the disk's ESP) with load options: a kernel command
# line. Whoever can write a VM's UEFI variables (the host, an operator) can do
# this; the disk is not touched. With Secure Boot off, systemd-stub lets the
# load options replace the UKI's .cmdline and measures them into PCR 12 only.
#
#   images/bootentry.sh VARS DISK CMDLINE [LOG]
#
# VARS is an OVMF_VARS_4M.fd copy, changed in place: BootOrder starts with a new
# Boot#### "attestd attack" whose optional data is CMDLINE as UTF-16LE with a
# terminating NUL (what systemd-stub reads). LOG (default VARS.log) gets the
# firmware's serial console, with the shell's `bcfg boot dump -v`.
#
# How: one QEMU boot of OVMF with VARS, DISK and a small FAT disk holding
# startup.nsh. The FAT disk gets bootindex=1 and has nothing to boot, so OVMF
# prunes DISK's automatic boot option and falls through to the built-in UEFI
# Shell, which runs startup.nsh: connect and map all devices, find the ESP,
# `bcfg boot add 0 fsN:\EFI\BOOT\BOOTX64.EFI`, `bcfg boot -opt 0x0 FILE` (the
# file's bytes become the optional data; a plain "0" as index is refused by
# this shell's parser), `reset -s`. bcfg writes the full device path
# PciRoot(0x0)/Pci(0x1,0x0)/HD(1,GPT,...)/\EFI\BOOT\BOOTX64.EFI: DISK must be
# the first PCI device here and in the boot that uses VARS (images/e2e.sh's
# system disk is), and OVMF keeps the entry there because it matches the
# system disk's bootindex. Takes about 10 s under TCG.
#
# Environment: OVMF_CODE (default /usr/share/OVMF/OVMF_CODE_4M.fd),
# BOOTENTRY_TIMEOUT (seconds, default 300).
set -euo pipefail

die() { echo "bootentry: $*" >&2; exit 1; }
(($# == 3 || $# == 4)) || die "usage: bootentry.sh VARS DISK CMDLINE [LOG]"
vars=$1 disk=$2 cmdline=$3 logf=${4:-$1.log}
ovmf_code=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
[[ -f $vars && -f $disk && -f $ovmf_code ]] || die "missing $vars, $disk or $ovmf_code"
for t in qemu-system-x86_64 mkfs.vfat mcopy iconv od timeout; do
	command -v "$t" >/dev/null || die "$t missing; run scripts/install-deps.sh"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/attestd-bootentry.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The load options: UTF-16LE, NUL-terminated.
printf '%s\0' "$cmdline" | iconv -f UTF-8 -t UTF-16LE >"$work/attestd-bootentry.opt"
cat >"$work/startup.nsh" <<'EOF'
@echo -off
connect -r
map -r
for %a in fs0 fs1 fs2 fs3 fs4 fs5 fs6 fs7
  if exist %a:\attestd-bootentry.opt then
    set helper %a
  endif
endfor
for %a in fs0 fs1 fs2 fs3 fs4 fs5 fs6 fs7
  if exist %a:\EFI\BOOT\BOOTX64.EFI then
    set esp %a
  endif
endfor
echo "attestd-bootentry: options on %helper%, UKI on %esp%"
bcfg boot add 0 %esp%:\EFI\BOOT\BOOTX64.EFI "attestd attack"
bcfg boot -opt 0x0 %helper%:\attestd-bootentry.opt
bcfg boot dump -v
echo "attestd-bootentry: done"
reset -s
EOF
mkfs.vfat -C -n BOOTENTRY "$work/helper.img" 2048 >/dev/null
mcopy -i "$work/helper.img" "$work/startup.nsh" "$work/attestd-bootentry.opt" ::/

rc=0
timeout --foreground -k 10 "${BOOTENTRY_TIMEOUT:-300}" qemu-system-x86_64 \
	-machine q35 -accel tcg -cpu max -smp 1 -m 512 -nodefaults -no-reboot \
	-display none -serial "file:$work/serial.log" \
	-drive "if=pflash,format=raw,unit=0,readonly=on,file=$ovmf_code" \
	-drive "if=pflash,format=raw,unit=1,file=$vars" \
	-drive "if=none,id=system,format=raw,file=$disk,readonly=on" \
	-device virtio-blk-pci,drive=system \
	-drive "if=none,id=helper,format=raw,file=$work/helper.img" \
	-device virtio-blk-pci,drive=helper,bootindex=1 \
	-nic none >"$work/qemu.log" 2>&1 || rc=$?
# The console without its escape sequences and carriage returns.
sed 's/\x1b\[[0-9;?]*[A-Za-z]//g' "$work/serial.log" | tr -d '\r' >"$logf"
((rc == 0)) || { cat "$work/qemu.log" >&2; tail -n 30 "$logf" >&2; die "qemu exited $rc (console in $logf)"; }
grep -q '^attestd-bootentry: done' "$logf" || { tail -n 30 "$logf" >&2; die "the UEFI Shell did not run startup.nsh (console in $logf)"; }
grep -q '^bcfg: Add Boot[0-9A-Fa-f]* as 0' "$logf" || { tail -n 30 "$logf" >&2; die "bcfg boot add failed (console in $logf)"; }
if grep -q '^bcfg: ' <(grep -v '^bcfg: Add Boot' "$logf"); then
	grep '^bcfg: ' "$logf" >&2
	die "bcfg reported an error (console in $logf)"
fi
# The load options must be in the variable store as written.
hex() { od -An -tx1 -v "$1" | tr -d ' \n'; }
[[ $(hex "$vars") == *"$(hex "$work/attestd-bootentry.opt")"* ]] ||
	die "the load options are not in $vars after the shell ran (console in $logf)"
