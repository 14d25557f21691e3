#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine (run as
# root), then checks that it is really there: a package can be "installed"
# without the part the build uses (protobuf-compiler with
# --no-install-recommends has no well-known types), or a file can be gone.
# Go (>= 1.26, README.md) is not installed here, only checked.
set -euo pipefail
cd "$(dirname "$0")/.."

# protoc, and the well-known types attestd.proto imports
# (google/protobuf/struct.proto): protobuf-compiler only recommends
# libprotobuf-dev, and recommends are not installed here.
pkgs=(protobuf-compiler libprotobuf-dev)
# The in-process TPM simulator is cgo and links OpenSSL.
pkgs+=(gcc make libssl-dev)
# swtpm for the integration tests; tpm2-tools to poke at it.
pkgs+=(swtpm swtpm-tools tpm2-tools)
# images/ and the e2e test (issue 6): bake with debootstrap, boot under QEMU + OVMF + swtpm.
pkgs+=(systemd debootstrap qemu-system-x86 ovmf systemd-boot-efi cryptsetup-bin dosfstools mtools fdisk binutils e2fsprogs squashfs-tools cpio zstd)
# attestd probe-storage reads device-mapper tables with dmsetup (issue 7).
pkgs+=(dmsetup)
# PostgreSQL for the fleet store's tests (issue 14): internal/pgtest runs
# initdb and postgres from /usr/lib/postgresql/N/bin (off PATH on Debian) in
# a temp dir, as the postgres user the package creates when run as root. The
# system cluster the package's postinst may start is not used.
pkgs+=(postgresql)
# make demo makes the fleet service's result key with the openssl command.
pkgs+=(openssl)
# distribute/oci's tests run a registry without the OCI 1.1 referrers API
# (issue 15). The package also enables a docker-registry service on :5000;
# the tests start their own on loopback ports.
pkgs+=(docker-registry)

# What the build and the tests use, and the package that provides it. Checked
# after installing, whatever dpkg says.
commands=(
	protoc:protobuf-compiler gcc:gcc make:make
	swtpm:swtpm swtpm_setup:swtpm-tools swtpm_localca:swtpm-tools tpm2_pcrread:tpm2-tools
	systemd-analyze:systemd systemd-sysusers:systemd systemd-tmpfiles:systemd
	debootstrap:debootstrap qemu-system-x86_64:qemu-system-x86 veritysetup:cryptsetup-bin
	mkfs.vfat:dosfstools mmd:mtools mcopy:mtools sfdisk:fdisk objcopy:binutils objdump:binutils
	mkfs.ext4:e2fsprogs mksquashfs:squashfs-tools cpio:cpio zstd:zstd dmsetup:dmsetup
	openssl:openssl
	docker-registry:docker-registry
)
files=(
	/usr/include/google/protobuf/struct.proto:libprotobuf-dev
	/usr/include/openssl/evp.h:libssl-dev
	/usr/share/OVMF/OVMF_CODE_4M.fd:ovmf
	/usr/share/OVMF/OVMF_VARS_4M.fd:ovmf
	/usr/lib/systemd/boot/efi/linuxx64.efi.stub:systemd-boot-efi
)

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

problems=()
for c in "${commands[@]}"; do
	command -v "${c%%:*}" >/dev/null || problems+=("command ${c%%:*} (package ${c#*:})")
done
for f in "${files[@]}"; do
	[[ -f ${f%%:*} ]] || problems+=("file ${f%%:*} (package ${f#*:})")
done
pg_bin=
for d in /usr/lib/postgresql/*/bin; do
	[[ -x $d/initdb && -x $d/postgres ]] && pg_bin=$d
done
[[ -n $pg_bin ]] || problems+=("files /usr/lib/postgresql/*/bin/initdb and postgres (package postgresql)")
getent passwd postgres >/dev/null || problems+=("user postgres, which runs the tests' PostgreSQL when they run as root (package postgresql)")
# What make generate does, without the Go plugins: protoc must resolve every
# import of the API's .proto from its own include path.
if command -v protoc >/dev/null; then
	out=$(protoc --proto_path=agent/api/v1 --descriptor_set_out=/dev/null attestd.proto 2>&1) ||
		problems+=("protoc cannot compile agent/api/v1/attestd.proto: $out (packages protobuf-compiler, libprotobuf-dev)")
fi
if ! command -v go >/dev/null; then
	problems+=("command go (Go >= 1.26, README.md; this script does not install it)")
elif ! go_version=$(go env GOVERSION 2>/dev/null) || [[ ! $go_version =~ ^go1\.([0-9]+) ]] || ((BASH_REMATCH[1] < 26)); then
	problems+=("Go >= 1.26, found ${go_version:-unknown}")
fi
# Go tools the tests run, pinned, into bin/tools (internal/registrytest,
# distribute/oci): the distribution registry and the oras CLI.
tools="$PWD/bin/tools"
go_tools=(
	registry:github.com/distribution/distribution/v3/cmd/registry@v3.1.2
	oras:oras.land/oras/cmd/oras@v1.3.6
)
if command -v go >/dev/null; then
	for t in "${go_tools[@]}"; do
		[[ -x $tools/${t%%:*} ]] || GOBIN="$tools" go install "${t#*:}" ||
			problems+=("bin/tools/${t%%:*} (go install ${t#*:})")
	done
fi
if ((${#problems[@]})); then
	echo "install-deps: installed, but the build still lacks:" >&2
	printf '  %s\n' "${problems[@]}" >&2
	echo "install-deps: reinstall the packages named (apt-get install --reinstall PKG)" >&2
	exit 1
fi
echo "install-deps: everything the build and the tests need is there"
