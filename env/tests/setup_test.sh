#!/usr/bin/env bash
# Tests of env/setup.sh against fake sysfs/procfs trees: binding, refusing
# devices in use, driver fallback, hugepages, status, reset and DRY_RUN.
# Run: bash env/tests/setup_test.sh (also run by `cargo test`).

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
setup=$here/../setup.sh
failures=0
tests=0

fail() {
	printf 'FAIL: %s\n' "$*" >&2
	failures=$((failures + 1))
}

expect_eq() { # what, got, want
	tests=$((tests + 1))
	[[ $2 == "$3" ]] || fail "$1: got '$2', want '$3'"
}

expect_contains() { # what, text, needle
	tests=$((tests + 1))
	[[ $2 == *"$3"* ]] || fail "$1: '$3' not in output:
$2"
}

expect_missing() { # what, file
	tests=$((tests + 1))
	[[ ! -e $2 ]] || fail "$1: $2 exists (contents: $(cat "$2"))"
}

content() { cat "$1" 2>/dev/null || printf '<missing>'; }

# An NVMe controller BDF with controller NAME and namespace NS, on DRIVER.
add_nvme() {
	local bdf=$1 ctrl=$2 ns=$3 driver=$4 d=$T/sys/bus/pci/devices/$1
	mkdir -p "$d/nvme/$ctrl/$ns" "$T/sys/block/$ns/holders"
	printf '0x010802\n' >"$d/class"
	ln -s "../../../../bus/pci/drivers/$driver" "$d/driver"
	: >"$d/driver_override"
	rm "$d/driver_override" # absent until written
	[[ -n $bdf ]]
}

add_partition() { # ns part
	mkdir -p "$T/sys/block/$1/$2/holders"
}

# A fresh fake machine: two NUMA nodes, an IOMMU, five PCI devices.
make_tree() {
	T=$(mktemp -d)
	local n
	for n in 0 1; do
		local h=$T/sys/devices/system/node/node$n/hugepages/hugepages-2048kB
		mkdir -p "$h"
		printf '0\n' >"$h/nr_hugepages"
		printf '0\n' >"$h/free_hugepages"
	done
	mkdir -p "$T/sys/kernel/iommu_groups/0" "$T/proc" "$T/dev"
	for n in nvme vfio-pci uio_pci_generic e1000e; do
		mkdir -p "$T/sys/bus/pci/drivers/$n"
	done
	: >"$T/sys/bus/pci/drivers_probe"
	# A: free. B: a partition mounted. C: held by LVM. D: a swap partition.
	add_nvme 0000:01:00.0 nvme0 nvme0n1 nvme
	add_nvme 0000:02:00.0 nvme1 nvme1n1 nvme
	add_partition nvme1n1 nvme1n1p1
	add_nvme 0000:03:00.0 nvme2 nvme2n1 nvme
	mkdir -p "$T/sys/block/nvme2n1/holders/dm-0" "$T/sys/block/dm-0/dm"
	printf 'vg0-data\n' >"$T/sys/block/dm-0/dm/name"
	add_nvme 0000:04:00.0 nvme3 nvme3c3n1 nvme # native multipath naming
	add_partition nvme3n1 nvme3n1p2
	# E: a network card.
	mkdir -p "$T/sys/bus/pci/devices/0000:05:00.0"
	printf '0x020000\n' >"$T/sys/bus/pci/devices/0000:05:00.0/class"
	ln -s ../../../../bus/pci/drivers/e1000e "$T/sys/bus/pci/devices/0000:05:00.0/driver"
	cat >"$T/proc/mounts" <<-EOF
		/dev/vda1 / ext4 rw 0 0
		/dev/nvme1n1p1 /data xfs rw 0 0
	EOF
	cat >"$T/proc/swaps" <<-EOF
		Filename	Type	Size	Used	Priority
		/dev/nvme3n1p2	partition	1048572	0	-2
	EOF
	# Commands that record their calls instead of acting.
	cat >"$T/modprobe" <<-EOF
		#!/bin/sh
		echo "modprobe \$*" >>"$T/calls"
		exit \${MODPROBE_RC:-0}
	EOF
	cat >"$T/mount" <<-EOF
		#!/bin/sh
		echo "mount \$*" >>"$T/calls"
	EOF
	chmod +x "$T/modprobe" "$T/mount"
}

sh_setup() {
	SYSFS_ROOT=$T/sys PROCFS_ROOT=$T/proc DEV_ROOT=/dev MODPROBE=$T/modprobe MOUNT=$T/mount \
		HUGEMNT=$T/dev/hugepages bash "$setup" "$@" 2>&1
}

dev() { printf '%s\n' "$T/sys/bus/pci/devices/$1"; }

# --- config binds free devices and refuses the others ---------------------
make_tree
out=$(HUGEMEM=1024 sh_setup config)
expect_eq "A is bound to vfio-pci" "$(content "$(dev 0000:01:00.0)/driver_override")" vfio-pci
expect_contains "A was unbound from nvme" "$(content "$T/sys/bus/pci/drivers/nvme/unbind")" 0000:01:00.0
expect_contains "A was probed" "$(content "$T/sys/bus/pci/drivers_probe")" 0000:01:00.0
expect_missing "B (mounted) is left alone" "$(dev 0000:02:00.0)/driver_override"
expect_missing "C (LVM) is left alone" "$(dev 0000:03:00.0)/driver_override"
expect_missing "D (swap) is left alone" "$(dev 0000:04:00.0)/driver_override"
expect_missing "E (not NVMe) is left alone" "$(dev 0000:05:00.0)/driver_override"
expect_contains "why B is refused" "$out" "nvme1n1p1 is mounted on /data"
expect_contains "why C is refused" "$out" "nvme2n1 is held by dm-0 (device-mapper vg0-data: LVM or dm)"
expect_contains "why D is refused" "$out" "nvme3n1p2 is used as swap"
expect_contains "summary" "$out" "nvme: 1 bound, 3 refused"
expect_eq "node 0 hugepages" "$(content "$T/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages")" 256
expect_eq "node 1 hugepages" "$(content "$T/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages")" 256
expect_contains "hugetlbfs mounted" "$(content "$T/calls")" "mount -t hugetlbfs -o pagesize=2048K nodev $T/dev/hugepages"
rm -rf "$T"

# --- PCI_ALLOWED, NRHUGE and HUGENODE --------------------------------------
make_tree
out=$(PCI_ALLOWED=0000:01:00.0 NRHUGE=10 HUGENODE=1 sh_setup config)
expect_eq "allowed device bound" "$(content "$(dev 0000:01:00.0)/driver_override")" vfio-pci
expect_eq "node 1 only" "$(content "$T/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages")" 10
expect_eq "node 0 untouched" "$(content "$T/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages")" 0
tests=$((tests + 1))
if out=$(PCI_ALLOWED=0000:05:00.0 sh_setup config); then fail "a non-NVMe device was accepted"; fi
expect_contains "non-NVMe named" "$out" "0000:05:00.0 is not an NVMe device"
tests=$((tests + 1))
if out=$(PCI_ALLOWED=0000:09:00.0 sh_setup config); then fail "a missing device was accepted"; fi
expect_contains "missing device named" "$out" "no PCI device 0000:09:00.0"
tests=$((tests + 1))
if out=$(NRHUGE=lots sh_setup config); then fail "NRHUGE=lots was accepted"; fi
expect_contains "bad NRHUGE named" "$out" "NRHUGE=lots is not a number of pages"
tests=$((tests + 1))
if out=$(HUGENODE=7 sh_setup config); then fail "HUGENODE=7 was accepted"; fi
expect_contains "bad node named" "$out" "there is no NUMA node 7"
rm -rf "$T"

# --- driver choice: no IOMMU, and vfio-pci missing -------------------------
make_tree
rm -rf "$T/sys/kernel/iommu_groups/0"
sh_setup config >/dev/null
expect_eq "no IOMMU: uio_pci_generic" "$(content "$(dev 0000:01:00.0)/driver_override")" uio_pci_generic
rm -rf "$T"
make_tree
rm -rf "$T/sys/bus/pci/drivers/vfio-pci"
out=$(MODPROBE_RC=1 DRIVER_OVERRIDE=vfio-pci sh_setup config)
expect_eq "vfio-pci missing: fallback" "$(content "$(dev 0000:01:00.0)/driver_override")" uio_pci_generic
expect_contains "fallback said" "$out" "falling back to uio_pci_generic"
expect_contains "modprobe tried" "$(content "$T/calls")" "modprobe vfio-pci"
rm -rf "$T"

# --- DRY_RUN changes nothing -----------------------------------------------
make_tree
out=$(DRY_RUN=1 sh_setup config)
expect_missing "dry run: no override" "$(dev 0000:01:00.0)/driver_override"
expect_missing "dry run: no unbind" "$T/sys/bus/pci/drivers/nvme/unbind"
expect_eq "dry run: probe untouched" "$(content "$T/sys/bus/pci/drivers_probe")" ""
expect_eq "dry run: no hugepages" "$(content "$T/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages")" 0
expect_missing "dry run: no mount" "$T/calls"
expect_contains "dry run says what" "$out" "would write 'vfio-pci' to $(dev 0000:01:00.0)/driver_override"
expect_contains "dry run says mount" "$out" "would run: $T/mount -t hugetlbfs"
rm -rf "$T"

# --- status --------------------------------------------------------------
make_tree
printf '512\n' >"$T/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"
printf '500\n' >"$T/sys/devices/system/node/node0/hugepages/hugepages-2048kB/free_hugepages"
rm "$(dev 0000:01:00.0)/driver"
ln -s ../../../../bus/pci/drivers/vfio-pci "$(dev 0000:01:00.0)/driver"
out=$(sh_setup status)
expect_contains "hugepages per node" "$out" "0           512      500"
expect_contains "not mounted" "$out" "hugetlbfs: not mounted"
expect_contains "A in userspace" "$out" "0000:01:00.0   vfio-pci         userspace  -"
expect_contains "B blocked" "$out" "0000:02:00.0   nvme             kernel     nvme1n1p1 is mounted on /data"
expect_contains "D blocked" "$out" "0000:04:00.0   nvme             kernel     nvme3n1p2 is used as swap"
tests=$((tests + 1))
[[ $out != *0000:05:00.0* ]] || fail "status lists a non-NVMe device"

# --- reset rebinds to nvme and frees hugepages -------------------------------
out=$(sh_setup reset)
expect_contains "A unbound from vfio-pci" "$(content "$T/sys/bus/pci/drivers/vfio-pci/unbind")" 0000:01:00.0
expect_eq "A override cleared" "$(content "$(dev 0000:01:00.0)/driver_override")" ""
expect_contains "A reprobed" "$(content "$T/sys/bus/pci/drivers_probe")" 0000:01:00.0
expect_contains "B stays" "$out" "0000:02:00.0: already on nvme"
expect_eq "hugepages freed" "$(content "$T/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages")" 0
rm -rf "$T"

# --- bad command -------------------------------------------------------------
make_tree
tests=$((tests + 1))
if out=$(sh_setup frobnicate); then fail "an unknown command succeeded"; fi
expect_contains "unknown command named" "$out" "unknown command 'frobnicate'"
rm -rf "$T"

if ((failures > 0)); then
	printf '%d of %d checks failed\n' "$failures" "$tests" >&2
	exit 1
fi
printf 'env/setup.sh: all %d checks passed\n' "$tests"
