#!/usr/bin/env bash
# polarc environment set-up: hugepages for the buffer pool and SPDK, and
# NVMe devices bound to a userspace driver for SPDK's NVMe driver.
#
#   env/setup.sh config   reserve hugepages, mount hugetlbfs, bind NVMe
#   env/setup.sh status   hugepages per NUMA node; each NVMe device, its
#                         driver, and what (if anything) blocks it
#   env/setup.sh reset    rebind NVMe devices to the kernel's nvme driver,
#                         free the hugepages
#
# Settings (environment variables):
#   HUGEMEM=MiB        hugepage memory to reserve (default 2048), or
#   NRHUGE=N           that many 2 MiB pages (wins over HUGEMEM)
#   HUGENODE=0,1       NUMA nodes to reserve on (default: all, split evenly)
#   HUGEPGSZ=KiB       hugepage size (default 2048)
#   PCI_ALLOWED="0000:01:00.0 0000:02:00.0"
#                      the NVMe devices to bind (default: every NVMe device
#                      that is not in use)
#   DRIVER_OVERRIDE=vfio-pci|uio_pci_generic
#                      the userspace driver (default: vfio-pci where the
#                      IOMMU is on, else uio_pci_generic)
#   DRY_RUN=1          print what would be done, change nothing
#
# For tests, the system's trees can be replaced: SYSFS_ROOT (/sys),
# PROCFS_ROOT (/proc), DEV_ROOT (/dev), and the commands MODPROBE and MOUNT.
#
# A device is refused (and left alone) when one of its namespaces or
# partitions is mounted, is used as swap, or has a holder (LVM, MD, dm).

set -euo pipefail

SYSFS_ROOT=${SYSFS_ROOT:-/sys}
PROCFS_ROOT=${PROCFS_ROOT:-/proc}
DEV_ROOT=${DEV_ROOT:-/dev}
MODPROBE=${MODPROBE:-modprobe}
MOUNT=${MOUNT:-mount}
DRY_RUN=${DRY_RUN:-0}
HUGEPGSZ=${HUGEPGSZ:-2048}
HUGEMNT=${HUGEMNT:-$DEV_ROOT/hugepages}

NVME_CLASS=0x010802

log() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# Runs a command, or prints it under DRY_RUN.
run() {
	if [[ $DRY_RUN == 1 ]]; then
		log "would run: $*"
	else
		"$@"
	fi
}

# Writes VALUE to FILE (a sysfs attribute), or prints it under DRY_RUN.
write() {
	local value=$1 file=$2
	if [[ $DRY_RUN == 1 ]]; then
		log "would write '$value' to $file"
	else
		printf '%s\n' "$value" >"$file" || die "cannot write '$value' to $file"
	fi
}

# --- hugepages --------------------------------------------------------------

numa_nodes() {
	local n found=0
	for n in "$SYSFS_ROOT"/devices/system/node/node[0-9]*; do
		[[ -d $n ]] || continue
		found=1
		printf '%s\n' "${n##*/node}"
	done
	if [[ $found == 0 ]]; then
		printf '%s\n' -
	fi
}

# The nr_hugepages file of NODE ("-": the system-wide one).
nr_file() {
	local node=$1
	if [[ $node == - ]]; then
		printf '%s\n' "$SYSFS_ROOT/kernel/mm/hugepages/hugepages-${HUGEPGSZ}kB/nr_hugepages"
	else
		printf '%s\n' "$SYSFS_ROOT/devices/system/node/node$node/hugepages/hugepages-${HUGEPGSZ}kB/nr_hugepages"
	fi
}

free_file() {
	local f
	f=$(nr_file "$1")
	printf '%s\n' "${f%/nr_hugepages}/free_hugepages"
}

wanted_pages() {
	if [[ -n ${NRHUGE:-} ]]; then
		[[ $NRHUGE =~ ^[0-9]+$ ]] || die "NRHUGE=$NRHUGE is not a number of pages"
		printf '%s\n' "$NRHUGE"
		return
	fi
	local mem=${HUGEMEM:-2048}
	[[ $mem =~ ^[0-9]+$ ]] || die "HUGEMEM=$mem is not a size in MiB"
	printf '%s\n' $(((mem * 1024 + HUGEPGSZ - 1) / HUGEPGSZ))
}

# Checks HUGENODE (in this shell: the lists below run in subshells,
# where `die` would not stop the script).
check_nodes() {
	local n h=${HUGENODE:-}
	for n in ${h//,/ }; do
		[[ $n =~ ^[0-9]+$ ]] || die "HUGENODE: '$n' is not a NUMA node number"
		[[ -d $SYSFS_ROOT/devices/system/node/node$n ]] || die "HUGENODE: there is no NUMA node $n"
	done
}

selected_nodes() {
	if [[ -n ${HUGENODE:-} ]]; then
		local -a list
		read -ra list <<<"${HUGENODE//,/ }"
		printf '%s\n' "${list[@]}"
	else
		numa_nodes
	fi
}

config_hugepages() {
	local pages nodes count per node file got
	pages=$(wanted_pages)
	check_nodes
	mapfile -t nodes < <(selected_nodes)
	count=${#nodes[@]}
	per=$(((pages + count - 1) / count))
	for node in "${nodes[@]}"; do
		file=$(nr_file "$node")
		[[ -e $file ]] || die "no ${HUGEPGSZ} KiB hugepages on this kernel ($file is missing)"
		log "hugepages: node $node: $per pages of $HUGEPGSZ KiB"
		write "$per" "$file"
		if [[ $DRY_RUN != 1 ]]; then
			got=$(<"$file")
			if ((got < per)); then
				warn "node $node: only $got of $per hugepages could be reserved (memory is fragmented or short)"
			fi
		fi
	done
	mount_hugetlbfs
}

mount_hugetlbfs() {
	if grep -qs "^[^ ]* [^ ]* hugetlbfs " "$PROCFS_ROOT/mounts"; then
		log "hugetlbfs: mounted"
		return
	fi
	log "hugetlbfs: mounting at $HUGEMNT"
	run mkdir -p "$HUGEMNT"
	run "$MOUNT" -t hugetlbfs -o "pagesize=${HUGEPGSZ}K" nodev "$HUGEMNT"
}

reset_hugepages() {
	local node file
	while read -r node; do
		file=$(nr_file "$node")
		[[ -e $file ]] || continue
		log "hugepages: node $node: freeing"
		write 0 "$file"
	done < <(numa_nodes)
}

status_hugepages() {
	local node file total free
	log "Hugepages ($HUGEPGSZ KiB)"
	printf '%-6s %8s %8s\n' node total free
	while read -r node; do
		file=$(nr_file "$node")
		if [[ -e $file ]]; then
			total=$(<"$file")
			free=$(cat "$(free_file "$node")" 2>/dev/null || printf '?')
		else
			total=- free=-
		fi
		printf '%-6s %8s %8s\n' "$node" "$total" "$free"
	done < <(numa_nodes)
	if grep -qs "^[^ ]* [^ ]* hugetlbfs " "$PROCFS_ROOT/mounts"; then
		log "hugetlbfs: mounted"
	else
		log "hugetlbfs: not mounted"
	fi
}

# --- NVMe devices ------------------------------------------------------------

# Every NVMe controller's PCI address.
nvme_devices() {
	local d
	for d in "$SYSFS_ROOT"/bus/pci/devices/*; do
		[[ -e $d/class ]] || continue
		if [[ $(<"$d/class") == "$NVME_CLASS" ]]; then
			printf '%s\n' "${d##*/}"
		fi
	done
}

driver_of() {
	local link=$SYSFS_ROOT/bus/pci/devices/$1/driver
	if [[ -L $link || -d $link ]]; then
		local target
		target=$(readlink -f "$link")
		printf '%s\n' "${target##*/}"
	else
		printf '%s\n' none
	fi
}

# The block devices (namespaces and their partitions) of controller BDF.
block_devices() {
	local bdf=$1 ns part
	for ns in "$SYSFS_ROOT"/bus/pci/devices/"$bdf"/nvme/nvme*/nvme*n*; do
		[[ -d $ns ]] || continue
		ns=${ns##*/}
		# With native multipath the path is nvmeXcYnZ; the block device
		# is nvmeXnZ.
		if [[ $ns =~ ^(nvme[0-9]+)c[0-9]+(n[0-9]+)$ ]]; then
			ns=${BASH_REMATCH[1]}${BASH_REMATCH[2]}
		fi
		printf '%s\n' "$ns"
		for part in "$SYSFS_ROOT/block/$ns/$ns"p*; do
			[[ -d $part ]] && printf '%s\n' "${part##*/}"
		done
	done
}

# Why BDF must not be taken from the kernel: one line per reason; empty
# when it is free.
blockers() {
	local bdf=$1 blk h
	while read -r blk; do
		[[ -n $blk ]] || continue
		if awk -v d="$DEV_ROOT/$blk" '$1 == d { found = 1 } END { exit !found }' "$PROCFS_ROOT/mounts" 2>/dev/null; then
			printf '%s\n' "$blk is mounted on $(awk -v d="$DEV_ROOT/$blk" '$1 == d { print $2; exit }' "$PROCFS_ROOT/mounts")"
		fi
		if awk -v d="$DEV_ROOT/$blk" '$1 == d { found = 1 } END { exit !found }' "$PROCFS_ROOT/swaps" 2>/dev/null; then
			printf '%s\n' "$blk is used as swap"
		fi
		for h in "$SYSFS_ROOT/block/$blk/holders/"* "$SYSFS_ROOT/block/${blk%p[0-9]*}/$blk/holders/"*; do
			[[ -e $h ]] || continue
			printf '%s\n' "$blk is held by ${h##*/} ($(holder_kind "${h##*/}"))"
		done
	done < <(block_devices "$bdf")
}

holder_kind() {
	case $1 in
	dm-*)
		local name
		name=$(cat "$SYSFS_ROOT/block/$1/dm/name" 2>/dev/null || true)
		if [[ -n $name ]]; then
			printf 'device-mapper %s: LVM or dm' "$name"
		else
			printf 'device-mapper: LVM or dm'
		fi
		;;
	md*) printf 'MD RAID' ;;
	*) printf 'a holder' ;;
	esac
}

# Checks PCI_ALLOWED (in this shell, as check_nodes).
check_allowed() {
	local bdf
	for bdf in ${PCI_ALLOWED:-}; do
		[[ -d $SYSFS_ROOT/bus/pci/devices/$bdf ]] || die "PCI_ALLOWED: no PCI device $bdf"
		[[ $(<"$SYSFS_ROOT/bus/pci/devices/$bdf/class") == "$NVME_CLASS" ]] ||
			die "PCI_ALLOWED: $bdf is not an NVMe device"
	done
}

# The devices config and reset work on: PCI_ALLOWED, or every NVMe device.
selected_devices() {
	if [[ -n ${PCI_ALLOWED:-} ]]; then
		local -a list
		read -ra list <<<"$PCI_ALLOWED"
		printf '%s\n' "${list[@]}"
	else
		nvme_devices
	fi
}

iommu_on() {
	compgen -G "$SYSFS_ROOT/kernel/iommu_groups/*" >/dev/null
}

# Loads and returns the userspace driver to bind to.
pick_driver() {
	local want=${DRIVER_OVERRIDE:-}
	if [[ -z $want ]]; then
		if iommu_on; then
			want=vfio-pci
		else
			log "no IOMMU groups: using uio_pci_generic" >&2
			want=uio_pci_generic
		fi
	fi
	if load_driver "$want"; then
		printf '%s\n' "$want"
		return
	fi
	if [[ $want == vfio-pci ]] && load_driver uio_pci_generic; then
		warn "vfio-pci is not available: falling back to uio_pci_generic"
		printf '%s\n' uio_pci_generic
		return
	fi
	die "cannot load the $want driver (modprobe $want)"
}

load_driver() {
	local drv=$1
	[[ -d $SYSFS_ROOT/bus/pci/drivers/$drv ]] && return 0
	run "$MODPROBE" "$drv" >/dev/null 2>&1 || return 1
	[[ $DRY_RUN == 1 || -d $SYSFS_ROOT/bus/pci/drivers/$drv ]]
}

bind() {
	local bdf=$1 drv=$2 cur
	cur=$(driver_of "$bdf")
	if [[ $cur == "$drv" ]]; then
		log "$bdf: already bound to $drv"
		return
	fi
	log "$bdf: $cur -> $drv"
	if [[ $cur != none ]]; then
		write "$bdf" "$SYSFS_ROOT/bus/pci/devices/$bdf/driver/unbind"
	fi
	write "$drv" "$SYSFS_ROOT/bus/pci/devices/$bdf/driver_override"
	write "$bdf" "$SYSFS_ROOT/bus/pci/drivers_probe"
}

config_nvme() {
	local devs bdf why drv="" refused=0 bound=0
	check_allowed
	mapfile -t devs < <(selected_devices)
	if ((${#devs[@]} == 0)); then
		log "nvme: no NVMe device found"
		return
	fi
	for bdf in "${devs[@]}"; do
		why=$(blockers "$bdf")
		if [[ -n $why ]]; then
			log "$bdf: refused, in use:"
			while read -r line; do log "  - $line"; done <<<"$why"
			refused=$((refused + 1))
			continue
		fi
		[[ -n $drv ]] || drv=$(pick_driver)
		bind "$bdf" "$drv"
		bound=$((bound + 1))
	done
	log "nvme: $bound bound, $refused refused"
}

reset_nvme() {
	local bdf cur
	check_allowed
	while read -r bdf; do
		[[ -n $bdf ]] || continue
		cur=$(driver_of "$bdf")
		case $cur in
		nvme)
			log "$bdf: already on nvme"
			continue
			;;
		vfio-pci | uio_pci_generic | none) ;;
		*)
			log "$bdf: left on $cur (not a userspace driver)"
			continue
			;;
		esac
		log "$bdf: $cur -> nvme"
		if [[ $cur != none ]]; then
			write "$bdf" "$SYSFS_ROOT/bus/pci/devices/$bdf/driver/unbind"
		fi
		write "" "$SYSFS_ROOT/bus/pci/devices/$bdf/driver_override"
		write "$bdf" "$SYSFS_ROOT/bus/pci/drivers_probe"
	done < <(selected_devices)
}

status_nvme() {
	local bdf drv state why devs
	log "NVMe devices"
	printf '%-14s %-16s %-10s %s\n' address driver state "blocked by"
	mapfile -t devs < <(nvme_devices)
	if ((${#devs[@]} == 0)); then
		log "(none)"
		return
	fi
	for bdf in "${devs[@]}"; do
		drv=$(driver_of "$bdf")
		case $drv in
		vfio-pci | uio_pci_generic) state=userspace ;;
		nvme) state=kernel ;;
		none) state=unbound ;;
		*) state=other ;;
		esac
		why=$(blockers "$bdf" | paste -sd ';' -)
		printf '%-14s %-16s %-10s %s\n' "$bdf" "$drv" "$state" "${why:--}"
	done
}

# --- main ---------------------------------------------------------------------

usage() {
	sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
}

require_root() {
	if [[ $DRY_RUN != 1 && $SYSFS_ROOT == /sys && $(id -u) != 0 ]]; then
		die "$1 changes the system: run it as root (or with DRY_RUN=1 to see what it would do)"
	fi
}

main() {
	local cmd=${1:-}
	case $cmd in
	config)
		require_root config
		config_hugepages
		config_nvme
		;;
	reset)
		require_root reset
		reset_nvme
		reset_hugepages
		;;
	status)
		status_hugepages
		log ""
		status_nvme
		;;
	-h | --help | help)
		usage
		;;
	*)
		usage >&2
		die "unknown command '${cmd}': use config, status or reset"
		;;
	esac
}

main "$@"
