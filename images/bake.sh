#!/usr/bin/env bash
# images/bake.sh: bake the build-runner image (issue 6, docs/operating.md).
#
#   images/bake.sh [OUT]          (default OUT=images/out; run as root)
#
# Debian bookworm root (debootstrap, cached) + attestd (CGO_ENABLED=0) + its
# unit + a stand-in runner + the e2e test unit -> squashfs root protected by
# dm-verity (roothash= on the kernel command line) -> a small busybox initrd
# that opens the verity device -> a UKI (objcopy + systemd-stub) on an ESP ->
# one GPT disk image. Then `attestctl reference` computes the reference values
# from exactly these artifacts and signs them with the bake key.
#
# Environment (used by the e2e test for its negative variants):
#   ATTESTD_BIN      attestd binary to bake instead of a fresh build
#   ATTESTCTL_BIN    attestctl binary to bake instead of a fresh build
#   EXTRA_CMDLINE    appended to the kernel command line
#   STORAGE          the runner's work directory /var/lib/build-runner:
#                    "encrypted" (default): plain dm-crypt with a fresh random
#                    key from /etc/crypttab on the scratch disk, formatted at
#                    every boot, required by attestd's config;
#                    "plain": the scratch disk as ext4, unencrypted, not
#                    required (a misconfigured image, for the e2e test)
#   SCRATCH          the build's writable volumes, space-separated
#                    MOUNTPOINT=DEVICE pairs (default
#                    /var/lib/build-runner=/dev/disk/by-id/virtio-attestd-scratch);
#                    each gets a crypttab line, an fstab line and an entry in
#                    attestd's storage.encrypted
#   SWAP             swap device on plain dm-crypt ("" for none; default
#                    /dev/disk/by-id/virtio-attestd-swap)
#   BAKE_KEY         PEM EC private key signing the reference values
#                    (default: OUT/../bake-key.pem, created if missing)
#   IMAGE_VERSION    recorded in the image metadata (default: git describe)
#   DEBIAN_MIRROR    the Debian mirror debootstrap uses (default: the first
#                    enabled "deb" source of this machine's apt configuration
#                    that serves the suite's main component: sources.list,
#                    sources.list.d/*.list and deb822 *.sources); recorded
#                    in the image's provenance either way
#   DEVICE_TIMEOUT   how long the image's systemd waits for its disks and for
#                    a unit to start (default 5min: software emulation on a
#                    loaded host brings virtio disks late)
set -euo pipefail
storage=${STORAGE:-encrypted}
scratch_volumes=${SCRATCH-/var/lib/build-runner=/dev/disk/by-id/virtio-attestd-scratch}
swap_device=${SWAP-/dev/disk/by-id/virtio-attestd-swap}
device_timeout=${DEVICE_TIMEOUT:-5min}
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out=$(realpath -m "${1:-$here/out}")
cache=$here/.cache
suite=bookworm
stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
# Packages of the image. The rootfs cache is keyed by this list. dmsetup
# (attestd probe-storage) and e2fsprogs (mkfs.ext4 of the scratch volume)
# are named although cryptsetup-bin and minbase pull them in today.
packages=systemd,systemd-sysv,udev,kmod,busybox-static,cryptsetup-bin,dmsetup,e2fsprogs
# The kernel is unpacked, not installed: installing it pulls in initramfs-tools,
# which builds an initrd this image throws away (minutes of a CI run).
kernel_pkg=linux-image-amd64

die() { echo "bake: $*" >&2; exit 1; }
log() { printf 'bake: %s\n' "$*" >&2; }

[[ $storage == encrypted || $storage == plain ]] || die "STORAGE=$storage: want encrypted or plain"
for v in $scratch_volumes; do
	[[ $v =~ ^/[A-Za-z0-9._/-]*=/[A-Za-z0-9._/:-]+$ ]] || die "SCRATCH: $v: want /MOUNTPOINT=/DEVICE (no spaces or commas)"
done
[[ -z $swap_device || $swap_device =~ ^/[A-Za-z0-9._/:-]+$ ]] || die "SWAP=$swap_device: want a device path"
[[ $device_timeout =~ ^[1-9][0-9]*(s|min)$ ]] || die "DEVICE_TIMEOUT=$device_timeout: want a systemd time span like 300s or 5min"
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot, file ownership)"

# apt_mirror SUITE: the URI of the first enabled "deb" source in this machine's
# apt configuration that serves SUITE with the main component, in apt's order
# (sources.list, then sources.list.d/ by name; one-line *.list and deb822
# *.sources). Only http, https and file URIs (what debootstrap takes).
apt_mirror() {
	local suite=$1 f uris
	uris=$(for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do
		[[ -f $f && -r $f ]] || continue
		case $f in
		*.list) awk -v suite="$suite" '
			{ sub(/#.*/, "") }
			$1 != "deb" { next }
			{
				i = 2
				if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
				if ($(i + 1) != suite) next
				for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit }
			}' "$f" ;;
		*.sources) awk -v suite="$suite" '
			function field(name,   v) { v = f[name]; gsub(/^[ \t]+|[ \t]+$/, "", v); return v }
			function has(list, word,   n, a, k) { n = split(list, a, /[ \t]+/); for (k = 1; k <= n; k++) if (a[k] == word) return 1; return 0 }
			function flush(   n, u) {
				if (has(field("types"), "deb") && has(field("suites"), suite) && has(field("components"), "main") && tolower(field("enabled")) != "no") {
					n = split(field("uris"), u, /[ \t]+/)
					if (n > 0 && u[1] != "") { print u[1]; found = 1 }
				}
				delete f; last = ""
			}
			/^#/ { next }
			/^[ \t]*$/ { flush(); if (found) exit; next }
			/^[ \t]/ { if (last != "") f[last] = f[last] " " $0; next }
			{ k = tolower(substr($0, 1, index($0, ":") - 1)); f[k] = substr($0, index($0, ":") + 1); last = k }
			END { if (!found) flush() }' "$f" ;;
		*) continue ;;
		esac
	done)
	grep -E -m1 '^(https?|file)://' <<<"$uris"
}
if [[ -n ${DEBIAN_MIRROR:-} ]]; then
	mirror=$DEBIAN_MIRROR
else
	mirror=$(apt_mirror "$suite") ||
		die "no enabled apt source for \"$suite main\" (http, https or file) in /etc/apt/sources.list or /etc/apt/sources.list.d/; set DEBIAN_MIRROR=URL"
fi
for t in debootstrap mksquashfs veritysetup objcopy objdump sfdisk mkfs.vfat mmd mcopy go cpio zstd; do
	command -v "$t" >/dev/null || die "$t missing; run scripts/install-deps.sh"
done
[[ -f $stub ]] || die "$stub missing (package systemd-boot-efi); run scripts/install-deps.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/attestd-bake.XXXXXX")
cleanup() {
	local rc=$?
	# Nothing is mounted in the work dir; just remove it.
	rm -rf "$work"
	((rc == 0)) || echo "bake: FAILED (exit $rc)" >&2
}
trap cleanup EXIT
mkdir -p "$out" "$cache"

# --- 1. base root file system (cached) ------------------------------------
key=$(printf '%s\n' "v3" "$suite" "$mirror" "$packages" "$kernel_pkg" | sha256sum | cut -c1-16)
base=$cache/rootfs-$suite-$key.tar
if [[ ! -f $base ]]; then
	log "debootstrap $suite (not cached: $base)"
	mkdir "$work/ds"
	debootstrap --variant=minbase --include="$packages" "$suite" "$work/ds" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		{ tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
	# dpkg --unpack runs no postinst: no initramfs-tools, no initrd, no hooks.
	kdeb=$(chroot "$work/ds" apt-cache depends "$kernel_pkg" | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
	[[ -n $kdeb ]] || die "no kernel package behind $kernel_pkg"
	chroot "$work/ds" sh -c 'cd /tmp && apt-get -q -o APT::Sandbox::User=root download "$1" && dpkg --unpack /tmp/*.deb && rm -f /tmp/*.deb' \
		sh "$kdeb" >>"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "unpacking $kdeb failed (log above)"; }
	# Trim what a runner never needs; the initramfs-tools initrd is replaced.
	rm -rf "$work/ds"/boot/initrd.img* "$work/ds"/var/lib/apt/lists/* "$work/ds"/var/cache/apt/*.bin \
		"$work/ds"/usr/share/{doc,man,locale,info}/* "$work/ds"/var/log/* "$work/ds"/var/cache/debconf/*-old
	kver=$(ls "$work/ds/lib/modules")
	(cd "$work/ds/lib/modules/$kver/kernel" && find . -mindepth 1 -maxdepth 1 ! -name drivers ! -name fs ! -name lib ! -name crypto ! -name arch -exec rm -rf {} + &&
		find drivers -mindepth 1 -maxdepth 1 ! -name virtio ! -name block ! -name md ! -name char -exec rm -rf {} +)
	chroot "$work/ds" depmod "$kver"
	tar -C "$work/ds" --numeric-owner -cf "$base.tmp" .
	sha256sum "$base.tmp" | cut -d' ' -f1 >"$base.sha256"
	mv "$base.tmp" "$base"
	rm -rf "$work/ds"
fi
root=$work/root
mkdir "$root"
tar -C "$root" --numeric-owner -xf "$base"
kver=$(ls "$root/lib/modules")

# --- 2. attestd, units, config, runner, test unit --------------------------
version=${IMAGE_VERSION:-$(git -C "$repo" describe --always --dirty 2>/dev/null || echo dev)}
if [[ -n ${ATTESTD_BIN:-} ]]; then
	install -m 0755 "$ATTESTD_BIN" "$root/usr/bin/attestd"
else
	(cd "$repo" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-buildid= -X main.version=$version" -o "$root/usr/bin/attestd" ./cmd/attestd)
fi
if [[ -n ${ATTESTCTL_BIN:-} ]]; then
	install -m 0755 "$ATTESTCTL_BIN" "$root/usr/bin/attestctl"
else
	(cd "$repo" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-buildid=" -o "$root/usr/bin/attestctl" ./cmd/attestctl)
fi

install -D -m 0644 "$repo/systemd/attestd.service" "$root/usr/lib/systemd/system/attestd.service"
install -D -m 0644 "$repo/systemd/attestd.sysusers.conf" "$root/usr/lib/sysusers.d/attestd.conf"
install -D -m 0644 "$repo/systemd/attestd.tmpfiles.conf" "$root/usr/lib/tmpfiles.d/attestd.conf"
install -D -m 0644 "$repo/systemd/60-attestd.rules" "$root/usr/lib/udev/rules.d/60-attestd.rules"
install -D -m 0755 "$here/rootfs/build-runner" "$root/usr/libexec/build-runner/runner"
install -D -m 0644 "$here/rootfs/build-runner.service" "$root/usr/lib/systemd/system/build-runner.service"
install -D -m 0644 "$repo/systemd/build-runner.service.d/50-attestd.conf" "$root/usr/lib/systemd/system/build-runner.service.d/50-attestd.conf"
install -D -m 0644 "$here/rootfs/runner.sysusers.conf" "$root/usr/lib/sysusers.d/build-runner.conf"
install -D -m 0755 "$here/rootfs/attestd-e2e" "$root/usr/libexec/attestd/e2e"
install -D -m 0644 "$here/rootfs/attestd-e2e.service" "$root/usr/lib/systemd/system/attestd-e2e.service"
install -D -m 0644 "$here/rootfs/config.yaml" "$root/etc/attestd/config.yaml"
if [[ $storage == encrypted && -n $scratch_volumes ]]; then
	# The volumes below must be encrypted when attestd starts. (A plain image
	# is an operator who did not ask for it: attestd measures it anyway.)
	printf '# The build'"'"'s writable volumes must be on dm-crypt with an ephemeral key\n# (/etc/crypttab); otherwise attestd refuses to start (docs/storage.md).\nstorage:\n  encrypted: [%s]\n' \
		"$(for v in $scratch_volumes; do printf '%s\n' "${v%%=*}"; done | paste -sd, | sed 's/,/, /g')" >>"$root/etc/attestd/config.yaml"
fi
printf '{"name":"attestd-build-runner","suite":"%s","version":"%s","storage":"%s"}\n' "$suite" "$version" "$storage" |
	install -D -m 0644 /dev/stdin "$root/usr/lib/attestd/image.json"

# Users exist at bake time: the root file system is read-only at run time.
systemd-sysusers --root="$root" >/dev/null
for u in attestd.service build-runner.service attestd-e2e.service; do
	ln -sf "/usr/lib/systemd/system/$u" "$root/etc/systemd/system/multi-user.target.wants/$u"
done
# Read-only root: volatile /var and /tmp; machine-id generated per boot.
cat >"$root/etc/fstab" <<'EOF'
tmpfs /var tmpfs mode=0755,nosuid,nodev 0 0
tmpfs /tmp tmpfs mode=1777,nosuid,nodev 0 0
EOF
# The build's writable storage (SCRATCH): by default the scratch disk
# (virtio serial attestd-scratch) on the runner's work directory
# (docs/storage.md). nofail: a failed setup must not stop the boot in
# emergency mode; attestd, ordered after the mounts, then finds the volume
# unencrypted and refuses to start, so the runner does not start either.
# The timeouts are DEVICE_TIMEOUT (minutes): under software emulation on a
# loaded host the disks' device units appear long after systemd starts
# waiting (30 s failed 3 runs of 3 at load 10-25), and a timed-out disk is an
# unencrypted work directory, so attestd refuses to start.
mountopts=nofail,nosuid,nodev,x-systemd.device-timeout=$device_timeout,x-systemd.mount-timeout=$device_timeout,x-systemd.before=attestd.service
rm -f "$root/etc/crypttab"
i=0
for v in $scratch_volumes; do
	mnt=${v%%=*} dev=${v#*=} name=scratch
	((i == 0)) || name=scratch$i
	i=$((i + 1))
	if [[ $storage == encrypted ]]; then
		# Plain dm-crypt, key read from the kernel's random source at every
		# open and never stored; tmp=ext4 formats the mapping each time.
		printf '%s %s /dev/urandom plain,cipher=aes-xts-plain64,size=512,tmp=ext4,nofail,x-systemd.device-timeout=%s\n' "$name" "$dev" "$device_timeout" >>"$root/etc/crypttab"
		printf '/dev/mapper/%s %s ext4 %s 0 0\n' "$name" "$mnt" "$mountopts" >>"$root/etc/fstab"
	else
		printf '%s %s ext4 %s 0 0\n' "$dev" "$mnt" "$mountopts" >>"$root/etc/fstab"
	fi
done
if [[ $storage == encrypted && -n $swap_device ]]; then
	# Swap the same way (memory is only ephemeral if it is not swapped out in
	# the clear), mkswap at every boot.
	printf 'swap %s /dev/urandom swap,cipher=aes-xts-plain64,size=512,nofail,x-systemd.device-timeout=%s\n' "$swap_device" "$device_timeout" >>"$root/etc/crypttab"
	printf '/dev/mapper/swap none swap nofail,x-systemd.device-timeout=%s 0 0\n' "$device_timeout" >>"$root/etc/fstab"
fi
# Every other device and unit start of the image gets the same time (device
# units without an fstab/crypttab line, swap activation, udev coldplug, the
# cryptsetup and makefs steps), and attestd's start (measurements, key, first
# quote: 41 s seen under load) more than its unit's 120 s.
install -D -m 0644 /dev/stdin "$root/etc/systemd/system.conf.d/50-emulation.conf" <<EOF
# images/bake.sh: software emulation on a loaded host is slow (DEVICE_TIMEOUT).
[Manager]
DefaultTimeoutStartSec=$device_timeout
EOF
install -D -m 0644 /dev/stdin "$root/etc/systemd/system/attestd.service.d/50-emulation.conf" <<EOF
# images/bake.sh: software emulation on a loaded host is slow (DEVICE_TIMEOUT).
[Service]
TimeoutStartSec=$device_timeout
EOF
: >"$root/etc/machine-id"
echo attestd-runner >"$root/etc/hostname"
# No interactive first boot; no phase measurements into PCR 11 (the image has
# no tpm2-tss, docs/reference-values.md); nothing periodic.
for u in systemd-firstboot.service systemd-pcrphase.service systemd-pcrphase-sysinit.service \
	systemd-pcrphase-initrd.service apt-daily.timer apt-daily-upgrade.timer systemd-random-seed.service \
	e2scrub_all.timer e2scrub_reap.service getty@tty1.service; do
	ln -sf /dev/null "$root/etc/systemd/system/$u"
done
# The initrd opens the verity root and mounts the ESP nowhere: without this the
# veritysetup generator waits 90 s for a device named after roothash= and the
# GPT generator tries to automount the ESP on /boot.
mkdir -p "$root/etc/systemd/system-generators"
for g in systemd-veritysetup-generator systemd-gpt-auto-generator; do
	ln -sf /dev/null "$root/etc/systemd/system-generators/$g"
done

# --- 3. initrd: busybox + veritysetup + the modules to reach the root -------
ird=$work/initrd
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules,run}
cp "$root/bin/busybox" "$ird/bin/busybox"
cp "$root/usr/sbin/veritysetup" "$ird/bin/veritysetup"
chroot "$root" ldd /usr/sbin/veritysetup | awk '/=>/ {print $3} /ld-linux/ {print $1}' | while read -r l; do
	install -D "$root$l" "$ird$l"
done
for m in virtio_pci virtio_blk dm_verity squashfs; do
	chroot "$root" modprobe -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' >"$work/modules.list"
while read -r m; do
	cp "$root$m" "$ird/lib/modules/"
	basename "$m" >>"$ird/lib/modules/order"
done <"$work/modules.list"
install -m 0755 "$here/initrd-init" "$ird/init"
find "$ird" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$ird" && find . | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible -R 0:0 | zstd -q -19 -T0 >"$work/initrd.img")

# --- 4. root file system + dm-verity ---------------------------------------
# The kernel goes into the UKI, not the root file system.
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
# Same inputs, same root hash: every file gets the same time.
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
# zstd level 3, not mksquashfs's default 15: a few MB larger, minutes faster on 2 loaded cores.
mksquashfs "$root" "$work/root.img" -noappend -quiet -no-progress -comp zstd -Xcompression-level 3 -e boot >/dev/null
# dm-verity covers whole 4 KiB blocks.
truncate -s %4096 "$work/root.img"
salt=$(printf 'attestd-image-%s' "$suite" | sha256sum | cut -c1-64)
veritysetup format "$work/root.img" "$work/verity.img" --salt="$salt" \
	--uuid=7a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d >"$work/verity.txt"
roothash=$(awk '/^Root hash:/ {print $3}' "$work/verity.txt")
[[ $roothash =~ ^[0-9a-f]{64}$ ]] || die "no root hash from veritysetup"
log "dm-verity root hash $roothash"

# --- 5. UKI -----------------------------------------------------------------
# no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can
# fail and panic the boot (as cloud images do, skip it).
cmdline="console=ttyS0 roothash=$roothash ro panic=-1 no_timer_check systemd.show_status=error${EXTRA_CMDLINE:+ $EXTRA_CMDLINE}"
printf '%s' "$cmdline" >"$work/cmdline.txt"
cp "$root/usr/lib/os-release" "$work/os-release"
kernel=$work/vmlinuz
align=0x1000
end=$(objdump -h "$stub" | awk 'NF == 7 && $1 ~ /^[0-9]+$/ {print $3, $4}' | while read -r size vma; do
	echo $((16#$vma + 16#$size))
done | sort -n | tail -1)
args=()
add() { # name file
	local off=$(((end + align - 1) / align * align))
	args+=(--add-section "$1=$2" --change-section-vma "$1=$(printf '0x%x' "$off")")
	end=$((off + $(stat -c %s "$2")))
}
add .osrel "$work/os-release"
add .cmdline "$work/cmdline.txt"
add .linux "$kernel"
add .initrd "$work/initrd.img"
objcopy "${args[@]}" "$stub" "$work/uki.efi"

# --- 6. ESP + GPT disk --------------------------------------------------------
uki_kib=$(($(stat -c %s "$work/uki.efi") / 1024))
esp_kib=$(((uki_kib + 4096) / 1024 * 1024))
mkfs.vfat -C -i 0a77e57d -n ESP "$work/esp.img" "$esp_kib" >/dev/null
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
mcopy -i "$work/esp.img" "$work/uki.efi" ::/EFI/BOOT/BOOTX64.EFI
mib() { echo $((($(stat -c %s "$1") + (1 << 20) - 1) >> 20)); }
esp_mib=$(mib "$work/esp.img") root_mib=$(mib "$work/root.img") ver_mib=$(mib "$work/verity.img")
total_mib=$((1 + esp_mib + root_mib + ver_mib + 1))
rm -f "$work/disk.img"
truncate -s "${total_mib}M" "$work/disk.img"
sfdisk --quiet "$work/disk.img" <<EOF
label: gpt
label-id: 5E0A7D1E-0000-4000-8000-00000A77E57D
first-lba: 2048
start=1MiB, size=${esp_mib}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=5E0A7D1E-0001-4000-8000-00000A77E57D, name=esp
size=${root_mib}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=5E0A7D1E-0002-4000-8000-00000A77E57D, name=attestd-root
size=${ver_mib}MiB, type=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5, uuid=5E0A7D1E-0003-4000-8000-00000A77E57D, name=attestd-verity
EOF
dd if="$work/esp.img" of="$work/disk.img" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.img" of="$work/disk.img" bs=1M seek=$((1 + esp_mib)) conv=notrunc,sparse status=none
dd if="$work/verity.img" of="$work/disk.img" bs=1M seek=$((1 + esp_mib + root_mib)) conv=notrunc,sparse status=none

# --- 7. reference values ------------------------------------------------------
bakekey=${BAKE_KEY:-$out/../bake-key.pem}
attestctl=$work/attestctl
(cd "$repo" && go build -o "$attestctl" ./cmd/attestctl)
# The image's SLSA provenance (BuildEnv L1) comes with the reference values.
prov=(--provenance-out "$work/provenance.intoto.json" --subject "$work/disk.img" --subject "$work/uki.efi"
	--started-on "$started" --param "suite=$suite" --param "storage=$storage" --param "scratch=$scratch_volumes" --param "swap=$swap_device" --param "packages=$packages" --param "kernel=$kernel_pkg"
	--param "version=$version" --param "cmdline=$cmdline" --param "mirror=$mirror")
[[ -f $base.sha256 ]] || sha256sum "$base" | cut -d' ' -f1 >"$base.sha256"
prov+=(--dep "file:images/.cache/$(basename "$base")=sha256:$(cat "$base.sha256")")
if commit=$(git -C "$repo" rev-parse HEAD 2>/dev/null); then
	prov+=(--dep "git+https://github.com/attestd/attestd@$commit=gitCommit:$commit")
fi
"$attestctl" reference --root "$root" --uki "$work/uki.efi" --key "$bakekey" --new-key \
	--pub-out "$work/bake-key.pub.pem" --out "$work/reference.intoto.json" "${prov[@]}" >"$work/reference.json"

install -m 0644 "$work/disk.img" "$out/disk.img"
install -m 0644 "$work/uki.efi" "$out/uki.efi"
printf '%s\n' "$roothash" >"$out/roothash"
printf '%s\n' "$cmdline" >"$out/cmdline"
install -m 0644 "$work/reference.intoto.json" "$work/provenance.intoto.json" "$work/bake-key.pub.pem" "$work/reference.json" "$out/"
sha256sum "$out/disk.img" "$out/uki.efi" | sed "s#$out/##" >"$out/SHA256SUMS"
log "image in $out: disk.img ($(du -h "$out/disk.img" | cut -f1)), uki.efi, roothash, cmdline"
