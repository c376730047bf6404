#!/usr/bin/env bash
# Tests of env/setup.sh against fake sysfs/procfs/dev trees: binding,
# refusing devices in use (mounts in any namespace, swap, holders, loop,
# btrfs, open files, exclusive open, vfio/uio users), driver fallback,
# hugepages, checked settings, status, reset and DRY_RUN.
# Run: bash env/tests/setup_test.sh (also run by `cargo test`).
# SETUP_SH=/path/to/other/setup.sh runs the same checks against another copy
# of the script (to see which checks an older version fails).

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
setup=${SETUP_SH:-$here/../setup.sh}
failures=0
tests=0
case_name="-"
declare -A failed_cases=()
failed_order=()

# Names the checks that follow (in FAIL lines and the summary).
case_() { case_name=$1; }

fail() {
	printf 'FAIL [%s]: %s\n' "$case_name" "$*" >&2
	failures=$((failures + 1))
	if [[ -z ${failed_cases[$case_name]:-} ]]; then
		failed_cases[$case_name]=1
		failed_order+=("$case_name")
	fi
}

# Runs a command that should succeed; its output goes to $out.
run_ok() {
	tests=$((tests + 1))
	if ! out=$("$@" 2>&1); then
		fail "'$*' failed:
$out"
	fi
}

# Runs a command that should fail; its output goes to $out.
run_fails() {
	tests=$((tests + 1))
	if out=$("$@" 2>&1); then
		fail "'$*' succeeded:
$out"
	fi
}

expect_count() { # what, text, needle, times
	tests=$((tests + 1))
	local n
	n=$(grep -cF -- "$3" <<<"$2" || true)
	[[ $n == "$4" ]] || fail "$1: '$3' is in the output $n times, want $4:
$2"
}

expect_not_contains() { # what, text, needle
	tests=$((tests + 1))
	[[ $2 != *"$3"* ]] || fail "$1: '$3' in output:
$2"
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

# The fake device number of block device NAME: nvmeKnM[pP] is 259:KMP.
devno() {
	[[ $1 =~ ^nvme([0-9]+)n([0-9]+)(p([0-9]+))?$ ]]
	printf '259:%d\n' $((BASH_REMATCH[1] * 100 + BASH_REMATCH[2] * 10 + ${BASH_REMATCH[4]:-0}))
}

# A block device NAME with sysfs directory DIR (relative to sys/): its
# dev number, holders, /sys/class/block link and a fake /dev node.
add_block() { # name dir
	mkdir -p "$T/sys/$2/holders" "$T/sys/class/block"
	devno "$1" >"$T/sys/$2/dev"
	ln -s "../../$2" "$T/sys/class/block/$1"
	: >"$T/dev/$1"
}

# An NVMe controller BDF with controller CTRL and namespace NS, on DRIVER
# (CTRL and NS "-": none, as when bound to a userspace driver).
add_nvme() {
	local bdf=$1 ctrl=$2 ns=$3 driver=$4 d=$T/sys/bus/pci/devices/$1
	mkdir -p "$d"
	if [[ $ctrl != - ]]; then
		mkdir -p "$d/nvme/$ctrl/$ns"
		printf '241:%s\n' "${ctrl#nvme}" >"$d/nvme/$ctrl/dev"
		local blk=$ns
		if [[ $ns =~ ^(nvme[0-9]+)c[0-9]+(n[0-9]+)$ ]]; then
			blk=${BASH_REMATCH[1]}${BASH_REMATCH[2]}
		fi
		add_block "$blk" "block/$blk"
	fi
	printf '0x010802\n' >"$d/class"
	ln -s "../../../../bus/pci/drivers/$driver" "$d/driver"
	[[ -n $bdf ]]
}

add_partition() { # ns part
	add_block "$2" "block/$1/$2"
}

# Process PID named COMM in mount namespace NS ("-": unreadable).
add_proc() { # pid comm ns
	mkdir -p "$T/proc/$1/fd" "$T/proc/$1/ns"
	printf '%s\n' "$2" >"$T/proc/$1/comm"
	if [[ $3 != - ]]; then
		ln -s "mnt:[$3]" "$T/proc/$1/ns/mnt"
	fi
}

# Process PID has TARGET open as fd FD.
add_fd() { # pid fd target
	ln -s "$3" "$T/proc/$1/fd/$2"
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
	mkdir -p "$T/sys/kernel/iommu_groups/0" "$T/proc/self/ns" "$T/dev"
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
	# (The fake /dev is $T/dev: mounts and swaps name its nodes.)
	cat >"$T/proc/mounts" <<-EOF
		/dev/vda1 / ext4 rw 0 0
		$T/dev/nvme1n1p1 /data xfs rw 0 0
	EOF
	cat >"$T/proc/self/mountinfo" <<-EOF
		22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
		40 22 $(devno nvme1n1p1) / /data rw,relatime shared:20 - xfs /dev/nvme1n1p1 rw
	EOF
	ln -s 'mnt:[4026531840]' "$T/proc/self/ns/mnt"
	cat >"$T/proc/swaps" <<-EOF
		Filename	Type	Size	Used	Priority
		$T/dev/nvme3n1p2	partition	1048572	0	-2
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
	SYSFS_ROOT=$T/sys PROCFS_ROOT=$T/proc DEV_ROOT=$T/dev MODPROBE=$T/modprobe MOUNT=$T/mount \
		HUGEMNT=$T/dev/hugepages bash "$setup" "$@" 2>&1
}

dev() { printf '%s\n' "$T/sys/bus/pci/devices/$1"; }

# --- config binds free devices and refuses the others ---------------------
make_tree
case_ "config binds free devices and refuses the others"
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
case_ "PCI_ALLOWED, NRHUGE and HUGENODE"
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
case_ "driver choice"
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
case_ "DRY_RUN changes nothing"
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
case_ "status"
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
case_ "reset"
out=$(sh_setup reset)
expect_contains "A unbound from vfio-pci" "$(content "$T/sys/bus/pci/drivers/vfio-pci/unbind")" 0000:01:00.0
expect_eq "A override cleared" "$(content "$(dev 0000:01:00.0)/driver_override")" ""
expect_contains "A reprobed" "$(content "$T/sys/bus/pci/drivers_probe")" 0000:01:00.0
expect_contains "B stays" "$out" "0000:02:00.0: already on nvme"
expect_eq "hugepages freed" "$(content "$T/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages")" 0
rm -rf "$T"

# --- bad command -------------------------------------------------------------
make_tree
case_ "bad command"
tests=$((tests + 1))
if out=$(sh_setup frobnicate); then fail "an unknown command succeeded"; fi
expect_contains "unknown command named" "$out" "unknown command 'frobnicate'"
rm -rf "$T"

# ===========================================================================
# Devices in use that a name match on /proc/mounts and /proc/swaps missed.
# A (0000:01:00.0, nvme0n1, 259:10) is the free device each case uses.
A=0000:01:00.0

# --- new: refusals are one line each, naming the device and the reason -------
make_tree
case_ "new: one line per refusal"
run_ok sh_setup config
expect_contains "B refused in one line" "$out" "0000:02:00.0: refused: nvme1n1p1 is mounted on /data"
expect_contains "C refused in one line" "$out" "0000:03:00.0: refused: nvme2n1 is held by dm-0 (device-mapper vg0-data: LVM or dm)"
expect_contains "D refused in one line" "$out" "0000:04:00.0: refused: nvme3n1p2 is used as swap"
rm -rf "$T"

# --- new: a mount is matched by device number: /dev/root ---------------------
make_tree
case_ "new: mounted as /dev/root (by device number)"
sed -i "1s|.*|22 1 $(devno nvme0n1) / / rw,relatime shared:1 - ext4 /dev/root rw|" "$T/proc/self/mountinfo"
run_ok sh_setup config
expect_missing "A (root filesystem) is left alone" "$(dev $A)/driver_override"
expect_contains "why A is refused" "$out" "$A: refused: nvme0n1 is mounted on /"
expect_contains "summary" "$out" "nvme: 0 bound, 4 refused"
run_ok sh_setup status
expect_contains "status says so" "$out" "$A   nvme             kernel     nvme0n1 is mounted on /"
rm -rf "$T"

# --- new: mounts in other mount namespaces (containers), read once each -----
make_tree
case_ "new: mounted in another mount namespace"
add_proc 1 systemd 4026531840 # the host namespace, ours too
cp "$T/proc/self/mountinfo" "$T/proc/1/mountinfo"
for pid in 1234 1235; do # a container: two processes, one namespace
	add_proc "$pid" postgres 4026532100
	printf '90 80 %s / /var/lib/db rw - xfs /dev/nvme0n1 rw\n' "$(devno nvme0n1)" >"$T/proc/$pid/mountinfo"
done
run_ok sh_setup config
expect_missing "A (mounted in a container) is left alone" "$(dev $A)/driver_override"
expect_count "the container's mount, once" "$out" "$A: refused: nvme0n1 is mounted on /var/lib/db in the mount namespace of pid 1234 (postgres)" 1
expect_not_contains "its second process adds nothing" "$out" "pid 1235"
expect_count "our mount, once (pid 1 shares our namespace)" "$out" "nvme1n1p1 is mounted on /data" 1
rm -rf "$T"
make_tree
add_proc 1 systemd 4026531999 # we run in a container; the host has A mounted
printf '30 1 %s / /host/data rw - xfs /dev/nvme0n1 rw\n' "$(devno nvme0n1)" >"$T/proc/1/mountinfo"
add_proc 77 backup - # namespace unknown: its mountinfo is read anyway
printf '31 1 %s /snap /mnt/snap ro - ext4 /dev/nvme0n1 ro\n' "$(devno nvme0n1)" >"$T/proc/77/mountinfo"
run_ok sh_setup config
expect_missing "A (mounted on the host) is left alone" "$(dev $A)/driver_override"
expect_contains "the host's mount" "$out" "$A: refused: nvme0n1 is mounted on /host/data in the mount namespace of pid 1 (systemd)"
expect_contains "pid 77's mount" "$out" "$A: refused: nvme0n1 is mounted on /mnt/snap in the mount namespace of pid 77 (backup)"
rm -rf "$T"

# --- new: swap matched by device number -------------------------------------
make_tree
case_ "new: swap on /dev/root (by device number)"
printf '/dev/root\tpartition\t1048572\t0\t-3\n' >>"$T/proc/swaps"
mkdir -p "$T/sys/class/block/root"
devno nvme0n1 >"$T/sys/class/block/root/dev"
run_ok sh_setup config
expect_missing "A (swap) is left alone" "$(dev $A)/driver_override"
expect_contains "why A is refused" "$out" "$A: refused: nvme0n1 is used as swap (/dev/root)"
expect_contains "D still refused" "$out" "nvme3n1p2 is used as swap"
rm -rf "$T"

# --- new: holders of every kind (sysfs holders are symlinks) ---------------
make_tree
case_ "new: holders of every kind"
add_partition nvme0n1 nvme0n1p1
ln -s ../../../../bcache0 "$T/sys/block/nvme0n1/nvme0n1p1/holders/bcache0"
ln -s ../../md127 "$T/sys/block/nvme0n1/holders/md127"
run_ok sh_setup config
expect_missing "A (held) is left alone" "$(dev $A)/driver_override"
expect_contains "bcache named" "$out" "$A: refused: nvme0n1p1 is held by bcache0 (bcache)"
expect_contains "MD named" "$out" "$A: refused: nvme0n1 is held by md127 (MD RAID)"
rm -rf "$T"

# --- new: a loop device backed by the namespace -----------------------------
make_tree
case_ "new: loop device backing file"
mkdir -p "$T/sys/block/loop0/loop"
printf '/dev/nvme0n1\n' >"$T/sys/block/loop0/loop/backing_file"
run_ok sh_setup config
expect_missing "A (behind loop0) is left alone" "$(dev $A)/driver_override"
expect_contains "why A is refused" "$out" "$A: refused: nvme0n1 is the backing file of loop0"
rm -rf "$T"

# --- new: a (secondary) device of a mounted btrfs ----------------------------
make_tree
case_ "new: btrfs device"
uuid=6c1b5d9e-0f7a-4c52-9d4e-2b7f0e8a1c33
mkdir -p "$T/sys/fs/btrfs/$uuid/devices"
ln -s ../../../../block/nvme0n1 "$T/sys/fs/btrfs/$uuid/devices/nvme0n1"
run_ok sh_setup config
expect_missing "A (btrfs) is left alone" "$(dev $A)/driver_override"
expect_contains "why A is refused" "$out" "$A: refused: nvme0n1 is a device of the mounted btrfs filesystem $uuid"
rm -rf "$T"

# --- new: raw openers: open file descriptors ------------------------------
make_tree
case_ "new: open by a process"
add_partition nvme0n1 nvme0n1p3
add_proc 4242 qemu-system-x86 4026531840
add_fd 4242 17 "$T/dev/nvme0n1"
add_proc 4243 postgres 4026531840
add_fd 4243 5 "$T/dev/nvme0n1p3"
add_fd 4243 6 "$T/dev/nvme0n1p3 (deleted)"
add_fd 4243 7 "socket:[1234]"
add_proc 4244 nvme 4026531840
add_fd 4244 3 "$T/dev/nvme0"
run_ok sh_setup config
expect_missing "A (open) is left alone" "$(dev $A)/driver_override"
expect_contains "the VM" "$out" "$A: refused: nvme0n1 is open by pid 4242 (qemu-system-x86)"
expect_count "the database, once" "$out" "$A: refused: nvme0n1p3 is open by pid 4243 (postgres)" 1
expect_contains "the controller's user" "$out" "$A: refused: nvme0 (controller) is open by pid 4244 (nvme)"
run_ok sh_setup status
expect_contains "status says so" "$out" "$A   nvme             kernel     nvme0n1 is open by pid 4242 (qemu-system-x86)"
rm -rf "$T"

# --- new: no device number in sysfs: refused, not guessed -----------------
make_tree
case_ "new: no device number"
rm "$T/sys/block/nvme0n1/dev"
run_ok sh_setup config
expect_missing "A is left alone" "$(dev $A)/driver_override"
expect_contains "why A is refused" "$out" "$A: refused: nvme0n1 has no device number in $T/sys/block/nvme0n1/dev"
rm -rf "$T"

# --- new: the exclusive open -------------------------------------------------
# A stub for it: records its calls; nvme0n1 is busy when BUSY is set.
make_excl() {
	printf '%s\n' '#!/bin/sh' \
		"echo \"excl \$1\" >>'$T/calls'" \
		"if [ -n \"\${BUSY:-}\" ] && [ \"\$1\" = '$T/dev/nvme0n1' ]; then" \
		'	echo "Device or resource busy" >&2' \
		'	exit 1' \
		'fi' >"$T/excl"
	chmod +x "$T/excl"
}
make_tree
case_ "new: exclusive open fails"
make_excl
BUSY=1 EXCL_OPEN=$T/excl run_ok sh_setup config
expect_missing "A (claimed) is left alone" "$(dev $A)/driver_override"
expect_contains "why A is refused" "$out" "$A: refused: nvme0n1: exclusive open failed (Device or resource busy)"
expect_contains "summary" "$out" "nvme: 0 bound, 4 refused"
expect_contains "A's namespace was tried" "$(content "$T/calls")" "excl $T/dev/nvme0n1"
expect_not_contains "a refused device is not opened" "$(content "$T/calls")" "excl $T/dev/nvme1n1"
BUSY=1 EXCL_OPEN=$T/excl run_ok sh_setup status
expect_contains "status says so" "$out" "$A   nvme             kernel     nvme0n1: exclusive open failed (Device or resource busy)"
rm -rf "$T"
make_tree
case_ "new: exclusive open succeeds"
make_excl
EXCL_OPEN=$T/excl run_ok sh_setup config
expect_eq "A is bound" "$(content "$(dev $A)/driver_override")" vfio-pci
expect_contains "A's namespace was tried first" "$(content "$T/calls")" "excl $T/dev/nvme0n1"
rm -rf "$T"
make_tree
case_ "new: exclusive open skipped, and said"
run_ok sh_setup config
expect_contains "no block device: said" "$out" "$A: note: exclusive-open check of nvme0n1 skipped: $T/dev/nvme0n1 is not a block device"
expect_eq "A is still bound" "$(content "$(dev $A)/driver_override")" vfio-pci
PYTHON3=$T/no-python3 run_ok sh_setup status
expect_contains "no python3: said" "$out" "$A: note: exclusive-open check of nvme0n1 skipped: python3 not found"
rm -rf "$T"

# --- new: devices on vfio-pci / uio that a process uses ----------------------
# F: vfio-pci, IOMMU group 12, open by a VM. G: vfio-pci, group 13, unused.
# H: uio_pci_generic, /dev/uio0 open by SPDK.
F=0000:06:00.0 G=0000:08:00.0 H=0000:07:00.0
make_vfio_tree() {
	make_tree
	add_nvme $F - - vfio-pci
	add_nvme $G - - vfio-pci
	add_nvme $H - - uio_pci_generic
	mkdir -p "$T/sys/kernel/iommu_groups/12" "$T/sys/kernel/iommu_groups/13"
	ln -s ../../../../kernel/iommu_groups/12 "$T/sys/bus/pci/devices/$F/iommu_group"
	ln -s ../../../../kernel/iommu_groups/13 "$T/sys/bus/pci/devices/$G/iommu_group"
	mkdir -p "$T/sys/bus/pci/devices/$H/uio/uio0" "$T/dev/vfio"
	printf '240:0\n' >"$T/sys/bus/pci/devices/$H/uio/uio0/dev"
	add_proc 5000 qemu-system-x86 4026531840
	add_fd 5000 20 "$T/dev/vfio/12"
	add_fd 5000 21 "$T/dev/vfio/vfio"
	add_proc 5001 spdk_tgt 4026531840
	add_fd 5001 9 "$T/dev/uio0"
}
make_vfio_tree
case_ "new: config leaves vfio/uio devices in use"
run_ok sh_setup config
expect_missing "H (uio, in use) keeps its driver" "$(dev $H)/driver_override"
expect_not_contains "H was not unbound" "$(content "$T/sys/bus/pci/drivers/uio_pci_generic/unbind")" $H
expect_contains "why H is refused" "$out" "$H: refused: bound to uio_pci_generic and open by pid 5001 (spdk_tgt) via $T/dev/uio0"
expect_contains "why F is refused" "$out" "$F: refused: bound to vfio-pci and open by pid 5000 (qemu-system-x86) via $T/dev/vfio/12"
expect_contains "G is already there" "$out" "$G: already bound to vfio-pci"
rm -rf "$T"
make_vfio_tree
DRIVER_OVERRIDE=uio_pci_generic run_ok sh_setup config
expect_missing "F (vfio, in use) keeps its driver" "$(dev $F)/driver_override"
expect_not_contains "F was not unbound" "$(content "$T/sys/bus/pci/drivers/vfio-pci/unbind")" $F
expect_contains "G (vfio, unused) moves" "$(content "$T/sys/bus/pci/drivers/vfio-pci/unbind")" $G
rm -rf "$T"
make_vfio_tree
case_ "new: reset leaves vfio/uio devices in use"
run_ok sh_setup reset
expect_not_contains "F was not unbound" "$(content "$T/sys/bus/pci/drivers/vfio-pci/unbind")" $F
expect_missing "F keeps its override" "$(dev $F)/driver_override"
expect_not_contains "H was not unbound" "$(content "$T/sys/bus/pci/drivers/uio_pci_generic/unbind")" $H
expect_contains "G (unused) goes back to nvme" "$(content "$T/sys/bus/pci/drivers/vfio-pci/unbind")" $G
expect_eq "G override cleared" "$(content "$(dev $G)/driver_override")" ""
expect_contains "why F stays" "$out" "$F: refused: bound to vfio-pci and open by pid 5000 (qemu-system-x86) via $T/dev/vfio/12"
expect_contains "why H stays" "$out" "$H: refused: bound to uio_pci_generic and open by pid 5001 (spdk_tgt) via $T/dev/uio0"
rm -rf "$T"
make_vfio_tree
case_ "new: status shows vfio/uio users"
run_ok sh_setup status
expect_contains "F's user" "$out" "$F   vfio-pci         userspace  bound to vfio-pci and open by pid 5000 (qemu-system-x86) via $T/dev/vfio/12"
expect_contains "H's user" "$out" "$H   uio_pci_generic  userspace  bound to uio_pci_generic and open by pid 5001 (spdk_tgt) via $T/dev/uio0"
expect_contains "G is free" "$out" "$G   vfio-pci         userspace  -"
rm -rf "$T"

# --- new: numbers are checked before any arithmetic --------------------------
make_tree
case_ "new: hostile numbers run nothing"
# (a[...] trips set -u before the command runs; PATH[...] does not.)
for bad in "a[\$(touch $T/pwned)]" "PATH[\$(touch $T/pwned)]"; do
	for var in HUGEPGSZ HUGEMEM NRHUGE HUGENODE; do
		# (env: the variable's name is itself a variable here)
		run_fails env "$var=$bad" SYSFS_ROOT="$T/sys" PROCFS_ROOT="$T/proc" DEV_ROOT="$T/dev" \
			MODPROBE="$T/modprobe" MOUNT="$T/mount" HUGEMNT="$T/dev/hugepages" bash "$setup" config
		expect_contains "config: $var=${bad%%[*}[...] named" "$out" "error: $var"
		expect_missing "config: $var=${bad%%[*}[...] ran nothing" "$T/pwned"
		rm -f "$T/pwned"
	done
	for cmd in status reset; do
		HUGEPGSZ=$bad run_fails sh_setup "$cmd"
		expect_contains "$cmd: HUGEPGSZ=${bad%%[*}[...] named" "$out" "error: HUGEPGSZ="
		expect_missing "$cmd: HUGEPGSZ=${bad%%[*}[...] ran nothing" "$T/pwned"
		rm -f "$T/pwned"
	done
done
expect_missing "no device was touched" "$(dev $A)/driver_override"
rm -rf "$T"
make_tree
case_ "new: numbers in range, in decimal"
HUGEPGSZ=3000 run_fails sh_setup config
expect_contains "HUGEPGSZ=3000" "$out" "HUGEPGSZ=3000 is not a power of two"
HUGEMEM=99999999999 run_fails sh_setup config
expect_contains "HUGEMEM too big" "$out" "HUGEMEM=99999999999 is not a size in MiB"
NRHUGE=010 HUGENODE=0 run_ok sh_setup config
expect_eq "NRHUGE=010 is ten, not octal eight" "$(content "$T/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages")" 10
HUGENODE=0,,1 NRHUGE=4 run_ok sh_setup config
expect_eq "HUGENODE=0,,1: node 1" "$(content "$T/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages")" 2
rm -rf "$T"

# --- new: other settings that could do harm ------------------------------------
make_tree
case_ "new: DRY_RUN and PCI_ALLOWED checked"
DRY_RUN=yes run_fails sh_setup config
expect_contains "DRY_RUN=yes named" "$out" "DRY_RUN=yes is not 0 or 1"
expect_missing "DRY_RUN=yes changed nothing" "$(dev $A)/driver_override"
expect_eq "DRY_RUN=yes: no hugepages" "$(content "$T/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages")" 0
PCI_ALLOWED=../devices/$A run_fails sh_setup config
expect_contains "a path is no PCI address" "$out" "PCI_ALLOWED: '../devices/$A' is not a PCI address"
expect_eq "nothing was probed" "$(content "$T/sys/bus/pci/drivers_probe")" ""
run_ok sh_setup help
expect_contains "help shows the settings" "$out" "PCI_ALLOWED="
rm -rf "$T"

if ((failures > 0)); then
	printf '%d of %d checks failed, in %d cases:\n' "$failures" "$tests" "${#failed_order[@]}" >&2
	printf '  %s\n' "${failed_order[@]}" >&2
	exit 1
fi
printf 'env/setup.sh: all %d checks passed\n' "$tests"
