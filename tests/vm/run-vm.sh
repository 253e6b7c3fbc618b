#!/bin/bash
# tests/vm/run-vm.sh - run one command inside a throw-away QEMU virtual machine
# that boots the Debian kernel installed on this host (linux-image-amd64). The
# guest has the kernel module tpm_vtpm_proxy loaded, so /dev/vtpmx exists there
# even when the host kernel has no TPM support at all.
#
#   tests/vm/run-vm.sh 'shell command'          bash command line, run in the guest
#   tests/vm/run-vm.sh -f script [args...]      bash script file (copied in), run with args
#
# The guest's / is the host's / (9p, read-only) under a tmpfs overlay: every
# host program and file is there at the same path (the source tree and its
# build directory too), and nothing the guest writes reaches the host. /job is
# a small read-write directory shared with the host. Guest: root, no network
# (lo only), no systemd; proc, sysfs, devtmpfs, devpts, /dev/shm, tmpfs /run,
# cgroup2 on /sys/fs/cgroup (CGROUP=v1: v1 hierarchies instead).
# The command's stdout+stderr stream to our stdout; our exit status is the
# command's. 255 means the VM itself failed (no boot, crash, time-out): then
# the tail of the guest console is printed on stderr.
#
# Environment:
#   MEM=2048 (MiB)  SMP=2  TIMEOUT=900 (s, whole VM)  CGROUP=v2|v1
#   KEEP=1     keep the job directory (console log) after the run
#   VERBOSE=1  print the full guest console (kernel log) afterwards
#   VMLAB_CACHE=/var/tmp/vtpm-hook-vm   cache of the kernel image + initramfs
#   ACCEL=tcg|kvm (tcg; KVM is not usable on the project's machines)
#   KVER       kernel version to boot (default: newest /boot/vmlinuz-*)
#   VM_LOCK_WAIT=5400 (s) how long to wait for another VM on this host to end
# Needs (Debian): qemu-system-x86 linux-image-amd64 busybox-static cpio xz-utils
set -uo pipefail

PROG=${0##*/}
die() { echo "$PROG: $*" >&2; exit 255; }   # infrastructure failure
usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
if [ "$1" = -f ]; then
    [ $# -ge 2 ] || usage
    [ -r "$2" ] || die "cannot read script: $2"
fi

CACHE=${VMLAB_CACHE:-/var/tmp/vtpm-hook-vm}
mkdir -p "$CACHE/jobs" || die "cannot create cache directory $CACHE"
for tool in qemu-system-x86_64 busybox cpio gzip xz flock; do
    command -v "$tool" >/dev/null ||
        die "'$tool' not found (apt-get install qemu-system-x86 busybox-static cpio xz-utils util-linux)"
done

if [ -z "${KVER:-}" ]; then
    KVER=$(ls /boot/vmlinuz-* 2>/dev/null | sed 's,^/boot/vmlinuz-,,' | sort -V | tail -n 1)
fi
[ -n "$KVER" ] && [ -r "/boot/vmlinuz-$KVER" ] ||
    die "no readable /boot/vmlinuz-* (apt-get install linux-image-amd64)"
MODDIR=/lib/modules/$KVER
[ -r "$MODDIR/modules.dep" ] || die "no $MODDIR/modules.dep for kernel $KVER"

# Modules the guest needs, in an order that satisfies their dependencies
# (resolved from modules.dep; built-in ones are skipped).
WANT="virtio_pci 9pnet_virtio 9p overlay tpm_vtpm_proxy"
declare -A SEEN=()
ORDER=()
modpath() {  # module name -> path relative to $MODDIR, "" if built in / unknown
    local n=$1 alt=${1//_/-}
    grep -E -m1 "/($n|$alt)\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | cut -d: -f1
}
add_mod() {  # $1 = path relative to $MODDIR
    local rel=$1 dep
    [ -n "${SEEN[$rel]:-}" ] && return
    SEEN[$rel]=1
    for dep in $(grep -E -m1 "^$rel:" "$MODDIR/modules.dep" | cut -d: -f2-); do
        add_mod "$dep"
    done
    ORDER+=("$rel")
}
for m in $WANT; do
    rel=$(modpath "$m")
    if [ -n "$rel" ]; then add_mod "$rel"
    elif ! grep -qE "/($m|${m//_/-})\.ko" "$MODDIR/modules.builtin" 2>/dev/null; then
        die "kernel module $m not found for $KVER"
    fi
done

# Everything that goes into the cached files is part of the cache key.
KEY=$( { echo "$KVER"; printf '%s\n' "${ORDER[@]}"; sed -n '/^#### GUEST INIT START/,/^#### GUEST INIT END/p' "$0"; } |
       sha256sum | cut -c1-16)
KERNEL=$CACHE/vmlinux-$KVER
INITRD=$CACHE/initramfs-$KVER-$KEY.cpio.gz

exec 9>"$CACHE/.lock"
flock -w 300 9 || die "cannot lock $CACHE/.lock"

# ---- kernel: the uncompressed ELF vmlinux boots directly (PVH entry), which
# saves seconds of in-guest decompression under TCG. Fall back to the bzImage.
if [ ! -s "$KERNEL" ]; then
    off=$(LC_ALL=C grep -m1 -obUaP '\xfd7zXZ\x00' "/boot/vmlinuz-$KVER" 2>/dev/null | head -n1 | cut -d: -f1)
    tmp=$(mktemp "$KERNEL.XXXXXX")
    if [ -n "$off" ]; then
        # xz stops after the first stream, so tail may die of SIGPIPE: only xz's status counts
        tail -c +$((off + 1)) "/boot/vmlinuz-$KVER" | xz -dcq --single-stream > "$tmp" 2>/dev/null
        xzrc=${PIPESTATUS[1]}
    else xzrc=1; fi
    if [ "$xzrc" = 0 ] && [ "$(head -c 4 "$tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
        chmod 644 "$tmp"; mv -f "$tmp" "$KERNEL"
    else
        rm -f "$tmp"
        echo "$PROG: note: cannot extract vmlinux from /boot/vmlinuz-$KVER; booting the bzImage (slower)" >&2
    fi
fi
[ -s "$KERNEL" ] || KERNEL=/boot/vmlinuz-$KVER

# ---- initramfs: busybox, the modules, and /init (between the GUEST INIT marks)
if [ ! -s "$INITRD" ]; then
    d=$(mktemp -d "$CACHE/initramfs.XXXXXX") || die "mktemp failed"
    mkdir -p "$d"/{bin,dev,proc,sys,lower,rw,newroot,mods}
    cp "$(command -v busybox)" "$d/bin/busybox" || die "cannot copy busybox"
    : > "$d/mods/order"
    for rel in "${ORDER[@]}"; do
        base=${rel##*/}; base=${base%%.ko*}
        case "$rel" in
            *.ko.xz)  xz -dc "$MODDIR/$rel" > "$d/mods/$base.ko" ;;
            *.ko.zst) zstd -dcq "$MODDIR/$rel" > "$d/mods/$base.ko" ;;
            *.ko.gz)  gzip -dc "$MODDIR/$rel" > "$d/mods/$base.ko" ;;
            *)        cp "$MODDIR/$rel" "$d/mods/$base.ko" ;;
        esac || die "cannot copy module $rel"
        echo "$base" >> "$d/mods/order"
    done
    sed -n '/^#### GUEST INIT START/,/^#### GUEST INIT END/p' "$0" | sed '1d;$d' > "$d/init"
    chmod 755 "$d/init"
    tmp=$(mktemp "$INITRD.XXXXXX")
    (cd "$d" && find . | cpio -o -H newc --quiet | gzip -1) > "$tmp" || die "cannot build initramfs"
    chmod 644 "$tmp"; mv -f "$tmp" "$INITRD"
    rm -rf "$d"
    # drop initramfs images of older versions of this script
    for old in "$CACHE"/initramfs-"$KVER"-*.cpio.gz; do
        [ "$old" = "$INITRD" ] || rm -f "$old"
    done
fi
exec 9>&-

# One VM at a time on this host: two TCG guests on 2 cores starve each other
# into soft lock-ups and time-outs. Wait for the other one instead.
exec 8>"$CACHE/.run-lock"
flock -w "${VM_LOCK_WAIT:-5400}" 8 || die "another VM has held $CACHE/.run-lock for too long"

# ---- job directory, shared read-write with the guest as /job
JOB=$(mktemp -d "$CACHE/jobs/job.XXXXXX") || die "mktemp failed"
if [ "$1" = -f ]; then
    cp "$2" "$JOB/cmd"; shift 2
    : > "$JOB/args"; for a in "$@"; do printf '%s\0' "$a" >> "$JOB/args"; done
else
    printf '%s\n' "$*" > "$JOB/cmd"
fi

case "${ACCEL:-tcg}" in
    kvm) ACC=(-accel kvm -cpu host) ;;
    *)   ACC=(-accel tcg) ;;
esac
APPEND="console=ttyS0 panic=-1 quiet mitigations=off"
case "${CGROUP:-v2}" in
    v1) APPEND+=" vtpmvm.cgroup=v1" ;;
    v2) ;;
    *)  die "CGROUP must be v1 or v2" ;;
esac

# A guest whose vCPUs stay stuck (a TCG emulation hang: both vCPUs "soft lockup ... stuck for
# 100s+", a few boots in a hundred, at the first runc; no fault of the job) is ended at once
# rather than at TIMEOUT, and booted once more.
hang_watch() {
    while sleep 10; do
        grep -qE 'soft lockup - CPU#[0-9]+ stuck for [0-9]{3,}s' "$JOB/console.log" 2>/dev/null || continue
        echo "$PROG: guest hung (soft lockup past 100 s: an emulation hang, not the job); ending the VM" >&2
        : > "$JOB/hung"
        pkill -TERM -P $$ -x timeout 2>/dev/null
        return
    done
}

TMO=${TIMEOUT:-900}
t0=$(date +%s%N)
for attempt in 1 2; do
    hang_watch & WATCH=$!
    timeout -k 10 "$TMO" qemu-system-x86_64 "${ACC[@]}" -m "${MEM:-2048}" -smp "${SMP:-2}" \
        -nodefaults -no-user-config -display none -no-reboot \
        -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" \
        -serial "file:$JOB/console.log" -serial stdio \
        -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
        -virtfs "local,path=$JOB,mount_tag=job,security_model=none" \
        </dev/null
    qrc=$?
    kill "$WATCH" 2>/dev/null; wait "$WATCH" 2>/dev/null
    [ -e "$JOB/hung" ] && [ "$attempt" = 1 ] || break
    echo "$PROG: booting the VM once more (attempt 2 of 2) after the emulation hang" >&2
    # a fresh job: only the command and its arguments stay
    find "$JOB" -mindepth 1 -maxdepth 1 ! -name cmd ! -name args -exec rm -rf {} +
done
t1=$(date +%s%N)

if [ "${VERBOSE:-0}" = 1 ]; then
    { echo "----- guest console -----"; cat "$JOB/console.log"; echo "-------------------------"; } >&2
fi
rc=$(cat "$JOB/rc" 2>/dev/null)
if ! [[ "$rc" =~ ^[0-9]+$ ]]; then
    case $qrc in
        124|137) why="time-out after ${TMO}s" ;;
        143)     why="the guest hung twice" ;;
        *)       why="qemu exit status $qrc" ;;
    esac
    echo "$PROG: INFRASTRUCTURE FAILURE: no exit status from the guest ($why); console tail:" >&2
    tail -n 40 "$JOB/console.log" >&2
    rc=255; KEEP=1
fi
echo "$PROG: exit status $rc, VM wall time $(( (t1 - t0) / 1000000 )) ms" >&2
if [ "${KEEP:-0}" = 1 ]; then echo "$PROG: job directory kept: $JOB" >&2; else rm -rf "$JOB"; fi
exit "$rc"

# The guest's /init (busybox sh). Not run on the host: the script exits above.
#### GUEST INIT START
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
log() { echo "vm-init: $*" > /dev/ttyS0; }
fail() { log "FATAL: $*"; poweroff -f; }
while read -r m; do insmod "/mods/$m.ko" || log "insmod $m failed"; done < /mods/order

P9=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$P9,ro,cache=loose" hostroot /lower || fail "cannot mount the host root (9p)"
mount -t tmpfs -o mode=755 overlay-rw /rw && mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work root /newroot ||
    fail "cannot mount the overlay root"
R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
if grep -q 'vtpmvm.cgroup=v1' /proc/cmdline; then
    mount -t tmpfs -o mode=755 cgroup $R/sys/fs/cgroup
    for c in cpu,cpuacct cpuset memory devices freezer pids blkio net_cls,net_prio perf_event hugetlb; do
        mkdir -p $R/sys/fs/cgroup/$c
        mount -t cgroup -o $c cgroup $R/sys/fs/cgroup/$c || log "cgroup v1 $c failed"
    done
else
    mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
fi
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm $R/dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts $R/dev/pts
ln -sf pts/ptmx $R/dev/ptmx 2>/dev/null
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t mqueue mqueue $R/dev/mqueue 2>/dev/null
ln -sf /proc/self/fd $R/dev/fd
ln -sf /proc/self/fd/0 $R/dev/stdin
ln -sf /proc/self/fd/1 $R/dev/stdout
ln -sf /proc/self/fd/2 $R/dev/stderr
mount -t tmpfs -o mode=755 run $R/run
mount -t bpf bpf $R/sys/fs/bpf 2>/dev/null
mkdir -p $R/job
mount -t 9p -o "$P9" job $R/job || fail "cannot mount /job (9p)"
hostname vtpm-vm
ip link set lo up 2>/dev/null
stty -F /dev/ttyS1 raw -echo
# Stage 2 runs as PID 1 in the new root. switch_root (not chroot) makes the
# overlay the root of the mount namespace, so the job's processes are not
# "chrooted" for the kernel: they can create user namespaces (runc/crun userns).
S=$R/run/vtpmvm
mkdir -p $S && cp /bin/busybox $S/busybox || fail "cannot copy busybox into the new root"
cat > $S/stage2 <<'STAGE2'
#!/run/vtpmvm/busybox sh
B=/run/vtpmvm/busybox
log() { echo "vm-init: $*" > /dev/ttyS0; }
log "running the job at uptime $($B cut -d' ' -f1 /proc/uptime)s"
# The job runs in the background so that this shell (PID 1) keeps reaping
# orphaned processes while waiting for it.
$B env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c 'cd /root 2>/dev/null || cd /
                  a=(); [ -s /job/args ] && mapfile -d "" -t a < /job/args
                  exec /bin/bash /job/cmd "${a[@]}"' \
    < /dev/null > /dev/ttyS1 2>&1 &
job=$!
wait $job
rc=$?
echo $rc > /job/rc
log "job finished at uptime $($B cut -d' ' -f1 /proc/uptime)s, status $rc"
$B sync
$B umount /job
$B poweroff -f
STAGE2
chmod 755 $S/stage2
log "switching root"
# nothing of the initramfs stays mounted under the old root
umount /sys /proc
umount /dev 2>/dev/null || umount -l /dev
exec switch_root $R /run/vtpmvm/stage2
#### GUEST INIT END
