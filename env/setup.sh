#!/usr/bin/env bash
# polarc environment set-up: hugepages for the buffer pool and SPDK, and
# NVMe devices bound to a userspace driver for SPDK's NVMe driver.
#
#   env/setup.sh config   reserve hugepages, mount hugetlbfs, bind the NVMe
#                         devices nothing uses
#   env/setup.sh status   hugepages per NUMA node; each NVMe device, its
#                         driver, and what (if anything) blocks it
#   env/setup.sh reset    rebind NVMe devices on a userspace driver that no
#                         process uses to the kernel's nvme driver, free the
#                         hugepages
#
# Settings (environment variables). Numbers are plain decimal digits in the
# range shown, checked before any arithmetic (anything else is an error
# naming the variable):
#   HUGEMEM=MiB        hugepage memory to reserve (default 2048; 0-16777216), or
#   NRHUGE=N           that many hugepages (wins over HUGEMEM; 0-268435456)
#   HUGENODE=0,1       NUMA nodes to reserve on (default: all, split evenly;
#                      each 0-1023)
#   HUGEPGSZ=KiB       hugepage size, a power of two (default 2048; 64-16777216)
#   PCI_ALLOWED="0000:01:00.0 0000:02:00.0"
#                      the NVMe devices to bind or reset (default: every NVMe
#                      device that is not in use)
#   DRIVER_OVERRIDE=vfio-pci|uio_pci_generic
#                      the userspace driver (default: vfio-pci where the
#                      IOMMU is on, else uio_pci_generic)
#   DRY_RUN=1          print what would be done, change nothing (0 or 1)
#   PYTHON3=python3    the python3 that tries the exclusive open (below)
#
# For tests, the system's trees can be replaced: SYSFS_ROOT (/sys),
# PROCFS_ROOT (/proc), DEV_ROOT (/dev), and the commands MODPROBE, MOUNT and
# EXCL_OPEN (run as `$EXCL_OPEN $DEV_ROOT/nvmeXnY`, it exits 0 when the
# namespace can be opened exclusively; by default python3 does that, on real
# block devices only).
#
# A device is refused (left alone, one line per reason naming its PCI
# address, the namespace or partition, and the user) when a namespace or
# partition of it
#   - is mounted, in this or any other readable mount namespace (pid 1's,
#     containers'): /proc/*/mountinfo is matched by device number, so
#     /dev/root and bind mounts count, and by source, for btrfs;
#   - is used as swap (matched by device number too);
#   - has a holder of any kind (LVM/dm, MD, bcache, ...), backs a loop
#     device, or is a device of a mounted btrfs filesystem;
#   - is open by a process (a VM, a database, dd, ...), found through
#     /proc/<pid>/fd by path and by device number;
#   - cannot be opened O_EXCL: something in the kernel claims it (a
#     filesystem, swap, md/dm, a btrfs device, a ZFS vdev, ...);
#   - has no device number in sysfs (then nothing above can be checked);
# or when a process has the controller's /dev/nvmeX or /dev/ngXnY open; or
# when it is bound to vfio-pci or a uio driver and a process has its
# /dev/vfio/<group> (or /dev/vfio/devices/vfioX) or /dev/uioN open (a VM,
# another SPDK process): then neither config nor reset unbinds it.

set -euo pipefail

SYSFS_ROOT=${SYSFS_ROOT:-/sys}
PROCFS_ROOT=${PROCFS_ROOT:-/proc}
DEV_ROOT=${DEV_ROOT:-/dev}
MODPROBE=${MODPROBE:-modprobe}
MOUNT=${MOUNT:-mount}
EXCL_OPEN=${EXCL_OPEN:-}
PYTHON3=${PYTHON3:-python3}
DRY_RUN=${DRY_RUN:-0}
HUGEPGSZ=${HUGEPGSZ:-2048}
HUGEMEM=${HUGEMEM:-2048}
HUGEMNT=${HUGEMNT:-$DEV_ROOT/hugepages}

NVME_CLASS=0x010802
TAB=$'\t'

# Opens argv[1] read-only with O_EXCL and closes it; on failure prints why
# (e.g. "Device or resource busy") and exits 1.
EXCL_PY='import os, sys
try:
    os.close(os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL))
except OSError as e:
    sys.exit(e.strerror)'

# Who uses what, read once per run by scan_usage (see there).
MOUNT_INDEX=""
SWAP_INDEX=""
FD_INDEX=""

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

# --- settings ------------------------------------------------------------------

# Checks that VALUE (called LABEL in the error) is a plain decimal number
# from MIN to MAX, WHAT it should be, and stores it in the variable VAR
# without leading zeros (which bash would read as octal). Inside $(( )),
# (( )) and [[ -lt ]] bash evaluates a variable's value as an expression, so
# a value such as 'a[$(cmd)]' would run cmd, as root: every number that comes
# from outside goes through here, in this shell, before any arithmetic.
to_number() { # var label value min max what
	local var=$1 label=$2 value=$3 min=$4 max=$5 what=$6
	if [[ ! $value =~ ^[0-9]{1,10}$ ]] || ((10#$value < min || 10#$value > max)); then
		die "$label is not $what (plain decimal digits, $min to $max)"
	fi
	printf -v "$var" '%d' "$((10#$value))"
}

# Checks every setting (in this shell: the lists below run in subshells,
# where `die` would not stop the script).
check_settings() {
	[[ $DRY_RUN == [01] ]] || die "DRY_RUN=$DRY_RUN is not 0 or 1"
	to_number HUGEPGSZ "HUGEPGSZ=$HUGEPGSZ" "$HUGEPGSZ" 64 16777216 "a hugepage size in KiB"
	if ((HUGEPGSZ & (HUGEPGSZ - 1))); then
		die "HUGEPGSZ=$HUGEPGSZ is not a power of two"
	fi
	to_number HUGEMEM "HUGEMEM=$HUGEMEM" "$HUGEMEM" 0 16777216 "a size in MiB"
	if [[ -n ${NRHUGE:-} ]]; then
		to_number NRHUGE "NRHUGE=$NRHUGE" "$NRHUGE" 0 268435456 "a number of pages"
	fi
	if [[ -n ${HUGENODE:-} ]]; then
		local n
		local -a list=() nodes=()
		IFS=', ' read -ra list <<<"$HUGENODE"
		for n in "${list[@]}"; do
			[[ -n $n ]] || continue
			to_number n "HUGENODE: '$n'" "$n" 0 1023 "a NUMA node number"
			nodes+=("$n")
		done
		((${#nodes[@]} > 0)) || die "HUGENODE=$HUGENODE names no NUMA node"
		HUGENODE=${nodes[*]}
	fi
	if [[ -n ${DRIVER_OVERRIDE:-} && ! $DRIVER_OVERRIDE =~ ^[A-Za-z0-9_-]+$ ]]; then
		die "DRIVER_OVERRIDE=$DRIVER_OVERRIDE is not a driver name"
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

# (NRHUGE, HUGEMEM and HUGEPGSZ are checked numbers: see check_settings.)
wanted_pages() {
	if [[ -n ${NRHUGE:-} ]]; then
		printf '%s\n' "$NRHUGE"
		return
	fi
	printf '%s\n' $(((HUGEMEM * 1024 + HUGEPGSZ - 1) / HUGEPGSZ))
}

# Checks that the HUGENODE nodes exist (in this shell, as check_settings).
check_nodes() {
	local n
	for n in ${HUGENODE:-}; do
		[[ -d $SYSFS_ROOT/devices/system/node/node$n ]] || die "HUGENODE: there is no NUMA node $n"
	done
}

selected_nodes() {
	if [[ -n ${HUGENODE:-} ]]; then
		local -a list
		read -ra list <<<"$HUGENODE"
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
			if [[ ! $got =~ ^[0-9]{1,10}$ ]]; then
				warn "node $node: $file reads '$got', not a number of pages"
			elif ((10#$got < per)); then
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

# --- who uses a device ---------------------------------------------------------
#
# scan_usage reads, once per run, three indexes of "key<TAB>..." lines that
# blockers looks devices up in. A key is "b:MAJ:MIN" (a block device number),
# "c:MAJ:MIN" (a character device number) or "p:PATH" (a device path).
#   MOUNT_INDEX  key<TAB>mount point<TAB>pid ("self": our mount namespace)
#   SWAP_INDEX   key<TAB>swap device as /proc/swaps names it
#   FD_INDEX     key<TAB>pid of a process with a file descriptor on it
# Names can lie (/dev/root; a container's own /dev; a device opened by a
# symlink), device numbers do not, so devices are matched by number first.

# The MAJ:MIN in FILE (a sysfs "dev" attribute); nothing if it is missing
# or malformed.
sysfs_dev() {
	local v=""
	{ read -r v <"$1"; } 2>/dev/null || true
	if [[ $v =~ ^[0-9]+:[0-9]+$ ]]; then
		printf '%s\n' "$v"
	fi
}

# The device number of the block device the kernel calls PATH (/dev/...):
# from the node's stat when it is a block device, else from sysfs by its
# name ($SYSFS_ROOT/class/block/NAME/dev: /dev/root has no node, and no
# entry unless made so for tests); nothing if neither knows it.
block_dev_number() {
	local path=$1 node hex
	case $path in
	"$DEV_ROOT"/*) node=$path ;;
	/dev/*) node=$DEV_ROOT/${path#/dev/} ;;
	*) return 0 ;;
	esac
	if [[ -b $node ]]; then
		hex=$(stat -L -c '%t:%T' "$node" 2>/dev/null || true)
		if [[ $hex =~ ^([0-9a-f]{1,8}):([0-9a-f]{1,8})$ ]]; then
			printf '%d:%d\n' "$((16#${BASH_REMATCH[1]}))" "$((16#${BASH_REMATCH[2]}))"
			return 0
		fi
	fi
	sysfs_dev "$SYSFS_ROOT/class/block/${node##*/}/dev"
}

# The /proc/<pid> directory of every process with SUFFIX appended,
# NUL-terminated.
proc_dirs() { # suffix
	find "$PROCFS_ROOT" -mindepth 1 -maxdepth 1 -name '[0-9]*' -printf "%p$1\\0" 2>/dev/null || true
}

# MOUNT_INDEX lines for the mounts of every mount namespace that can be
# read: ours first, then pid 1's (the host's, when we run in a container),
# then every other process's (containers'), each namespace read once (the
# target of /proc/<pid>/ns/mnt names it). Field 3 of mountinfo is the
# device number of the mounted filesystem, field 5 the mount point (as seen
# in that namespace), and the field after " - " and the type is the source,
# which names the device where the number is an anonymous one (btrfs).
scan_mounts() {
	local self_ns pid ns d
	local -A seen=() seen_pid=() ns_of=()
	local -a files=("$PROCFS_ROOT/self/mountinfo")
	self_ns=$(readlink "$PROCFS_ROOT/self/ns/mnt" 2>/dev/null || true)
	[[ -z $self_ns ]] || seen[$self_ns]=1
	while IFS=$TAB read -r d ns; do
		d=${d%/ns/mnt}
		ns_of[${d##*/}]=$ns
	done < <(proc_dirs /ns/mnt | xargs -0 -r sh -c 'find "$@" -maxdepth 0 -type l -printf "%p\t%l\n" 2>/dev/null; exit 0' sh)
	for d in "$PROCFS_ROOT/1" "$PROCFS_ROOT"/[0-9]*; do
		pid=${d##*/}
		[[ $pid =~ ^[0-9]+$ && -z ${seen_pid[$pid]:-} && -r $d/mountinfo ]] || continue
		seen_pid[$pid]=1
		ns=${ns_of[$pid]:-}
		if [[ -n $ns ]]; then
			[[ -z ${seen[$ns]:-} ]] || continue
			seen[$ns]=1
		fi
		files+=("$d/mountinfo")
	done
	printf '%s\0' "${files[@]}" | { xargs -0 grep -H -- '' 2>/dev/null || true; } |
		SELF="$PROCFS_ROOT/self/mountinfo" awk -v OFS='\t' '{
			i = index($0, "/mountinfo:")
			if (!i) next
			file = substr($0, 1, i + 9)
			pid = file
			sub(/\/mountinfo$/, "", pid)
			sub(/.*\//, "", pid)
			if (file == ENVIRON["SELF"]) pid = "self"
			n = split(substr($0, i + 11), f, " ")
			for (j = 7; j < n && f[j] != "-"; j++)
				;
			print "b:" f[3], f[5], pid
			if (f[j] == "-" && substr(f[j + 2], 1, 1) == "/") print "p:" f[j + 2], f[5], pid
		}'
}

# SWAP_INDEX lines, for each swap area of /proc/swaps: its path, and its
# device number where the path is a block device (a swap file is on a
# filesystem, which the mount check covers).
scan_swaps() {
	local path rest num
	[[ -r $PROCFS_ROOT/swaps ]] || return 0
	while read -r path rest; do
		[[ $path == /* ]] || continue # the header
		printf 'p:%s\t%s\n' "$path" "$path"
		num=$(block_dev_number "$path")
		if [[ -n $num ]]; then
			printf 'b:%s\t%s\n' "$num" "$path"
		fi
	done <"$PROCFS_ROOT/swaps"
}

# FD_INDEX lines, for every file descriptor of every process: "p:" the path
# that readlink gives when it is under /dev, and "b:"/"c:" the device number
# when it is a block or character device (which also finds a device opened
# through a node made elsewhere, such as a container's /dev, that readlink
# names differently). A process that exits meanwhile is skipped.
scan_fds() {
	{
		proc_dirs /fd | xargs -0 -r sh -c 'find "$@" -mindepth 1 -maxdepth 1 -type l -printf "L\t%h\t%l\n" 2>/dev/null; exit 0' sh
		proc_dirs /fd | xargs -0 -r sh -c 'find -L "$@" -mindepth 1 -maxdepth 1 \( -type b -o -type c \) -print0 2>/dev/null; exit 0' sh |
			{ xargs -0 -r stat -L -c "N${TAB}%n${TAB}%t${TAB}%T${TAB}%F" 2>/dev/null || true; }
	} | D=$DEV_ROOT awk -F '\t' -v OFS='\t' '
		function hex(s, i, v) {
			v = 0
			for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
			return v
		}
		$1 == "L" {
			t = $3
			sub(/ \(deleted\)$/, "", t)
			if (index(t, "/dev/") != 1 && index(t, ENVIRON["D"] "/") != 1) next
			pid = $2
			sub(/\/fd$/, "", pid)
			sub(/.*\//, "", pid)
			print "p:" t, pid
		}
		$1 == "N" {
			pid = $2
			sub(/\/fd\/[^\/]*$/, "", pid)
			sub(/.*\//, "", pid)
			print ($5 ~ /^block/ ? "b:" : "c:") hex($3) ":" hex($4), pid
		}' | sort -u
}

scan_usage() {
	[[ -r $PROCFS_ROOT/self/mountinfo ]] ||
		die "cannot read $PROCFS_ROOT/self/mountinfo: cannot tell which devices are mounted"
	MOUNT_INDEX=$(scan_mounts)
	SWAP_INDEX=$(scan_swaps)
	FD_INDEX=$(scan_fds)
}

# The rest of each line of an index (stdin) whose key is one of KEYS, once.
pick() { # key...
	awk -F '\t' '
		BEGIN { for (i = 1; i < ARGC; i++) want[ARGV[i]] = 1; ARGC = 1 }
		($1 in want) { rest = substr($0, length($1) + 2); if (!seen[rest]++) print rest }' "$@"
}

# "pid P (its command name)". The name is the process's own to choose:
# only its first line is shown, control characters masked.
who_is() {
	local pid=$1 comm=""
	{ read -r comm <"$PROCFS_ROOT/$pid/comm"; } 2>/dev/null || true
	comm=${comm//[[:cntrl:]]/?}
	printf 'pid %s (%s)\n' "$pid" "${comm:-?}"
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

# The block devices of controller BDF: "name<TAB>sysfs dir<TAB>ns|part" for
# each namespace and each of its partitions.
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
		printf '%s\t%s\tns\n' "$ns" "$SYSFS_ROOT/block/$ns"
		for part in "$SYSFS_ROOT/block/$ns/$ns"p*; do
			if [[ -d $part ]]; then
				printf '%s\t%s\tpart\n' "${part##*/}" "$part"
			fi
		done
	done
}

# Why block device BLK (sysfs directory DIR) is in use: one line per user.
block_blockers() { # blk dir
	local blk=$1 dir=$2 num line mp pid h f backing
	num=$(sysfs_dev "$dir/dev")
	if [[ -z $num ]]; then
		# Without its number nothing below can be trusted: refuse.
		printf '%s\n' "$blk has no device number in $dir/dev: its users cannot be checked"
		return 0
	fi
	local -a keys=("b:$num" "p:$DEV_ROOT/$blk" "p:/dev/$blk")
	while IFS=$TAB read -r mp pid; do
		if [[ $pid == self ]]; then
			printf '%s\n' "$blk is mounted on $mp"
		else
			printf '%s\n' "$blk is mounted on $mp in the mount namespace of $(who_is "$pid")"
		fi
	done < <(pick "${keys[@]}" <<<"$MOUNT_INDEX")
	while IFS= read -r line; do
		if [[ $line == "$DEV_ROOT/$blk" || $line == "/dev/$blk" ]]; then
			printf '%s\n' "$blk is used as swap"
		else
			printf '%s\n' "$blk is used as swap ($line)"
		fi
	done < <(pick "${keys[@]}" <<<"$SWAP_INDEX")
	# Holders of every kind: dm (LVM, dm-crypt, multipath), MD, bcache, ...
	for h in "$dir/holders/"*; do
		[[ -e $h || -L $h ]] || continue
		printf '%s\n' "$blk is held by ${h##*/} ($(holder_kind "${h##*/}"))"
	done
	# A loop device on it shows no holder and no process fd.
	for f in "$SYSFS_ROOT"/block/loop*/loop/backing_file; do
		backing=""
		{ read -r backing <"$f"; } 2>/dev/null || true
		if [[ -n $backing && ($backing == "$DEV_ROOT/$blk" || $backing == "/dev/$blk") ]]; then
			h=${f%/loop/backing_file}
			printf '%s\n' "$blk is the backing file of ${h##*/}"
		fi
	done
	# Every device of a mounted btrfs, the secondary ones too (whose number
	# and name appear in no mountinfo).
	for f in "$SYSFS_ROOT"/fs/btrfs/*/devices/"$blk"; do
		[[ -e $f || -L $f ]] || continue
		h=${f%/devices/*}
		printf '%s\n' "$blk is a device of the mounted btrfs filesystem ${h##*/}"
	done
	# Raw openers: VMs, databases, dd, ... A ZFS vdev is opened by the kernel
	# (no fd, no holder): the exclusive open catches it.
	while IFS= read -r pid; do
		printf '%s\n' "$blk is open by $(who_is "$pid")"
	done < <(pick "${keys[@]}" <<<"$FD_INDEX")
	return 0
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
	bcache*) printf 'bcache' ;;
	zd*) printf 'ZFS zvol' ;;
	drbd*) printf 'DRBD' ;;
	*) printf 'a holder' ;;
	esac
}

# Processes using BDF through the userspace driver it is bound to: for
# vfio-pci its IOMMU group's /dev/vfio/N (or /dev/vfio/devices/vfioX), for
# a uio driver (uio_pci_generic, igb_uio) its /dev/uioN. Unbinding such a
# device would pull it from under a VM or another SPDK process (or hang).
driver_blockers() {
	local bdf=$1 d=$SYSFS_ROOT/bus/pci/devices/$1 drv group f
	drv=$(driver_of "$bdf")
	case $drv in
	vfio*)
		if [[ -L $d/iommu_group ]]; then
			group=$(readlink "$d/iommu_group")
			group=${group##*/}
			if [[ $group =~ ^[0-9]+$ ]]; then
				for f in "$group" "noiommu-$group"; do
					users_via "$drv" "vfio/$f" "$SYSFS_ROOT/class/vfio/$f/dev"
				done
			fi
		fi
		for f in "$d"/vfio-dev/vfio*; do
			if [[ -e $f ]]; then
				users_via "$drv" "vfio/devices/${f##*/}" "$f/dev"
			fi
		done
		;;
	esac
	for f in "$d"/uio/uio*; do
		if [[ -e $f ]]; then
			users_via "$drv" "${f##*/}" "$f/dev"
		fi
	done
	return 0
}

# "bound to DRV and open by pid P (comm) via NODE" for each process with
# character device NODE (a path under /dev; its number in sysfs file DEVFILE)
# open.
users_via() { # drv node devfile
	local num pid
	num=$(sysfs_dev "$3")
	while IFS= read -r pid; do
		printf '%s\n' "bound to $1 and open by $(who_is "$pid") via $DEV_ROOT/$2"
	done < <(pick "p:$DEV_ROOT/$2" "p:/dev/$2" ${num:+"c:$num"} <<<"$FD_INDEX")
}

# "NAME (controller) is open by pid P (comm)" for each process with one of
# controller BDF's character devices open: /dev/nvmeX (admin commands) or
# /dev/ngXnY (io_uring passthrough I/O).
char_blockers() {
	local d num pid
	for d in "$SYSFS_ROOT"/bus/pci/devices/"$1"/nvme/nvme* "$SYSFS_ROOT"/bus/pci/devices/"$1"/nvme/nvme*/ng*; do
		[[ ${d##*/} =~ ^(nvme[0-9]+|ng[0-9]+n[0-9]+)$ && -e $d ]] || continue
		num=$(sysfs_dev "$d/dev")
		while IFS= read -r pid; do
			printf '%s\n' "${d##*/} (controller) is open by $(who_is "$pid")"
		done < <(pick "p:$DEV_ROOT/${d##*/}" "p:/dev/${d##*/}" ${num:+"c:$num"} <<<"$FD_INDEX")
	done
	return 0
}

# Tries to open namespace BLK exclusively (O_EXCL), which fails with EBUSY
# while anything in the kernel claims it or one of its partitions: a mounted
# filesystem, swap, md/dm/bcache, any btrfs device, a ZFS vdev (users with
# no holder link and no open fd). Bash cannot open O_EXCL; python3 can, on
# a real block device. Prints a reason, a "note: " when the check could not
# be made, or nothing.
exclusive_open_check() { # blk
	local blk=$1 node=$DEV_ROOT/$1 err="" rc=0
	if [[ -n $EXCL_OPEN ]]; then
		if [[ ! -e $node && ! -L $node ]]; then
			printf 'note: exclusive-open check of %s skipped: there is no %s\n' "$blk" "$node"
			return 0
		fi
		err=$("$EXCL_OPEN" "$node" 2>&1) || rc=$?
	elif ! command -v "$PYTHON3" >/dev/null 2>&1; then
		printf 'note: exclusive-open check of %s skipped: python3 not found (PYTHON3=%s)\n' "$blk" "$PYTHON3"
		return 0
	elif [[ ! -b $node ]]; then
		printf 'note: exclusive-open check of %s skipped: %s is not a block device\n' "$blk" "$node"
		return 0
	elif ((EUID != 0)); then
		printf 'note: exclusive-open check of %s skipped: not root\n' "$blk"
		return 0
	else
		err=$("$PYTHON3" -c "$EXCL_PY" "$node" 2>&1) || rc=$?
	fi
	if ((rc != 0)); then
		err=${err##*$'\n'}
		err=${err//[[:cntrl:]]/?}
		printf '%s\n' "$blk: exclusive open failed (${err:-exit status $rc}): something in the kernel claims it (a filesystem, swap, md/dm, btrfs, ZFS, ...)"
	fi
	return 0
}

# Why BDF must not be taken from its driver: one line per reason; lines
# starting "note: " say what could not be checked. Nothing when it is free.
# Needs scan_usage.
blockers() {
	local bdf=$1 blk dir kind why
	why=$(
		driver_blockers "$bdf"
		while IFS=$TAB read -r blk dir kind; do
			block_blockers "$blk" "$dir"
		done < <(block_devices "$bdf")
		char_blockers "$bdf"
	)
	if [[ -n $why ]]; then
		printf '%s\n' "$why"
		return 0
	fi
	# Nothing seen from userspace: ask the kernel (only now: a device
	# already refused needs no more reasons, and no open).
	while IFS=$TAB read -r blk dir kind; do
		if [[ $kind == ns ]]; then
			exclusive_open_check "$blk"
		fi
	done < <(block_devices "$bdf")
	return 0
}

# Checks PCI_ALLOWED (in this shell, as check_settings).
check_allowed() {
	local bdf
	local -a list=()
	read -ra list <<<"${PCI_ALLOWED:-}"
	for bdf in "${list[@]}"; do
		[[ $bdf =~ ^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$ ]] ||
			die "PCI_ALLOWED: '$bdf' is not a PCI address (such as 0000:01:00.0)"
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

# Binds BDF to DRV; fails (changing nothing) when a process uses it through
# the userspace driver it is on. Needs scan_usage.
bind() {
	local bdf=$1 drv=$2 cur why
	cur=$(driver_of "$bdf")
	if [[ $cur == "$drv" ]]; then
		log "$bdf: already bound to $drv"
		return
	fi
	why=$(driver_blockers "$bdf")
	if [[ -n $why ]]; then
		log "$bdf: refused: ${why%%$'\n'*}"
		return 1
	fi
	log "$bdf: $cur -> $drv"
	if [[ $cur != none ]]; then
		write "$bdf" "$SYSFS_ROOT/bus/pci/devices/$bdf/driver/unbind"
	fi
	write "$drv" "$SYSFS_ROOT/bus/pci/devices/$bdf/driver_override"
	write "$bdf" "$SYSFS_ROOT/bus/pci/drivers_probe"
}

# Logs BDF's blockers (WHY, from blockers) as "BDF: refused: reason" and
# "BDF: note: ..." lines; succeeds when one refuses it.
report_refusal() { # bdf why
	local bdf=$1 line refuse=1
	while IFS= read -r line; do
		[[ -n $line ]] || continue
		if [[ $line == "note: "* ]]; then
			log "$bdf: $line"
		else
			log "$bdf: refused: $line"
			refuse=0
		fi
	done <<<"$2"
	return $refuse
}

config_nvme() {
	local devs bdf why drv="" refused=0 bound=0
	check_allowed
	mapfile -t devs < <(selected_devices)
	if ((${#devs[@]} == 0)); then
		log "nvme: no NVMe device found"
		return
	fi
	scan_usage
	for bdf in "${devs[@]}"; do
		why=$(blockers "$bdf")
		if report_refusal "$bdf" "$why"; then
			refused=$((refused + 1))
			continue
		fi
		[[ -n $drv ]] || drv=$(pick_driver)
		if bind "$bdf" "$drv"; then
			bound=$((bound + 1))
		else
			refused=$((refused + 1))
		fi
	done
	log "nvme: $bound bound, $refused refused"
}

reset_nvme() {
	local bdf cur why
	check_allowed
	FD_INDEX=$(scan_fds)
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
		why=$(driver_blockers "$bdf")
		if report_refusal "$bdf" "$why"; then
			continue
		fi
		log "$bdf: $cur -> nvme"
		if [[ $cur != none ]]; then
			write "$bdf" "$SYSFS_ROOT/bus/pci/devices/$bdf/driver/unbind"
		fi
		write "" "$SYSFS_ROOT/bus/pci/devices/$bdf/driver_override"
		write "$bdf" "$SYSFS_ROOT/bus/pci/drivers_probe"
	done < <(selected_devices)
}

status_nvme() {
	local bdf drv state why devs line
	local -a reasons notes
	log "NVMe devices"
	printf '%-14s %-16s %-10s %s\n' address driver state "blocked by"
	mapfile -t devs < <(nvme_devices)
	if ((${#devs[@]} == 0)); then
		log "(none)"
		return
	fi
	scan_usage
	for bdf in "${devs[@]}"; do
		drv=$(driver_of "$bdf")
		case $drv in
		vfio-pci | uio_pci_generic) state=userspace ;;
		nvme) state=kernel ;;
		none) state=unbound ;;
		*) state=other ;;
		esac
		reasons=() notes=()
		while IFS= read -r line; do
			[[ -n $line ]] || continue
			if [[ $line == "note: "* ]]; then
				notes+=("$line")
			else
				reasons+=("$line")
			fi
		done < <(blockers "$bdf")
		why=$(
			IFS=';'
			printf '%s' "${reasons[*]}"
		)
		printf '%-14s %-16s %-10s %s\n' "$bdf" "$drv" "$state" "${why:--}"
		for line in "${notes[@]}"; do
			log "$bdf: $line"
		done
	done
	if ((EUID != 0)); then
		log "(not root: other users' processes and exclusive opens were not checked)"
	fi
}

# --- main ---------------------------------------------------------------------

usage() {
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
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
		check_settings
		require_root config
		config_hugepages
		config_nvme
		;;
	reset)
		check_settings
		require_root reset
		reset_nvme
		reset_hugepages
		;;
	status)
		check_settings
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
