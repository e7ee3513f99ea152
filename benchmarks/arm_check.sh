#!/usr/bin/env bash
# ARM check: the shipped package's golden vectors, verified on aarch64 under QEMU user-mode emulation.
#
#   sudo benchmarks/arm_check.sh            # or: make arm-check
#
# 1. installs qemu-user-static, binfmt-support, debootstrap (apt) and enables binfmt for qemu-aarch64;
# 2. bootstraps a minimal arm64 Debian (the host's apt suite and mirror) with python3 + python3-venv,
#    cached in $IMLE_ARM_ROOTFS (default /var/cache/imle-arm-rootfs) so reruns skip it;
# 3. builds the offline bundle (imle-bundle) for manylinux_2_28_aarch64 and the chroot's CPython, installs it
#    in the chroot with its install.sh in a network namespace with no network, flashes the shipped package
#    with imle-flash and runs imle-verify (golden vectors) under QEMU_CPU=cortex-a72 (Pi 4) and cortex-a76 (Pi 5);
# 4. runs the same golden + random inputs on x86 and on each aarch64 CPU model and writes the differences
#    per precision to benchmarks/results/arm_check.json (with setup time and rootfs size).
# Exit 0: passed, or "SKIPPED: why" where this machine cannot run it (not root, no apt, no network,
# no binfmt_misc). Exit 1: a check failed.
# Trap: onnxruntime segfaults on import in the chroot when both the host's x86 /proc/cpuinfo and /sys are
# visible; only /proc (and /dev) are mounted, never /sys.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
ROOTFS=${IMLE_ARM_ROOTFS:-/var/cache/imle-arm-rootfs}
PACKAGE=${IMLE_ARM_PACKAGE:-exported_models/pusht-state-imle}
CPUS=${IMLE_ARM_CPUS:-cortex-a72 cortex-a76}
RANDOM_OBS=${IMLE_ARM_RANDOM:-128}   # x 4 latents each: ~3 min per emulated CPU model
LATENTS=${IMLE_ARM_LATENTS:-4}
RESULT=${IMLE_ARM_RESULT:-benchmarks/results/arm_check.json}
PY=${PYTHON:-$REPO/.venv/bin/python}
NICE="nice -n 5"  # emulation is CPU-heavy; stay behind interactive work
T_START=$(date +%s)

skip() { echo "SKIPPED: $*"; exit 0; }
fail() { echo "arm_check: FAILED: $*" >&2; exit 1; }
log() { echo "== arm_check [$(( $(date +%s) - T_START ))s]: $*"; }

[ "$(id -u)" = 0 ] || skip "needs root (apt-get, debootstrap, chroot, mount); run: sudo $0"
command -v apt-get >/dev/null || skip "no apt-get: this script needs a Debian-family host"
[ -x "$PY" ] || PY=$(command -v python3)
"$PY" -c "import runtime.bundle, onnxruntime" 2>/dev/null || skip "$PY cannot import runtime and onnxruntime: run make setup"
# the arm64 rootfs is ~0.6 GB, the bundle and its venv in the chroot ~0.4 GB more: below 1.5 GiB free, say so
FREE_KB=$(df -Pk "$(dirname "$ROOTFS")" 2>/dev/null | awk 'NR==2 {print $4}')
if [ ! -e "$ROOTFS/.imle-arm-rootfs" ] && [ -n "$FREE_KB" ] && [ "$FREE_KB" -lt 1572864 ]; then
    skip "only $((FREE_KB / 1024)) MiB free under $(dirname "$ROOTFS"): the arm64 rootfs and bundle need ~1.5 GiB"
fi

# ---------------------------------------------------------------- 1. qemu-user-static, binfmt, debootstrap
T0=$(date +%s)
if ! { command -v qemu-aarch64-static && command -v debootstrap && command -v update-binfmts; } >/dev/null; then
    log "installing qemu-user-static binfmt-support debootstrap"
    apt-get update -q >/dev/null 2>&1 || skip "apt-get update failed (no network?)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support debootstrap >/dev/null \
        || skip "apt-get install qemu-user-static binfmt-support debootstrap failed"
fi
BINFMT=/proc/sys/fs/binfmt_misc
[ -e "$BINFMT/register" ] || mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null \
    || skip "binfmt_misc is not available (container without it?): cannot run aarch64 binaries"
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -q '^enabled' "$BINFMT/qemu-aarch64" 2>/dev/null || skip "update-binfmts --enable qemu-aarch64 did not register qemu"
T_TOOLS=$(( $(date +%s) - T0 ))

# ---------------------------------------------------------------- 2. arm64 Debian rootfs (cached)
# The host's suite and mirror: deb822 sources first, then one-line sources.list, then os-release.
SUITE=$(awk '/^Suites:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
if [ -z "$SUITE" ] && [ -f /etc/apt/sources.list ]; then
    read -r _ MIRROR SUITE _ < <(grep -E '^deb ' /etc/apt/sources.list | grep -v security | head -1) || true
fi
[ -n "$SUITE" ] || SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$SUITE" ] || skip "cannot tell the host's Debian suite from /etc/apt or /etc/os-release"
MIRROR=${MIRROR:-http://deb.debian.org/debian}
T0=$(date +%s)
BOOTSTRAPPED=cached
if [ ! -e "$ROOTFS/.imle-arm-rootfs" ]; then
    BOOTSTRAPPED=fresh
    log "bootstrapping arm64 $SUITE from $MIRROR into $ROOTFS (a few minutes)"
    rm -rf "$ROOTFS.tmp"
    $NICE debootstrap --arch=arm64 --variant=minbase --foreign --include=python3,python3-venv \
        "$SUITE" "$ROOTFS.tmp" "$MIRROR" >"$ROOTFS.log" 2>&1 || skip "debootstrap (first stage) failed: see $ROOTFS.log"
    # binfmt runs the arm64 binaries; the F flag is not guaranteed, so the interpreter also goes inside
    cp /usr/bin/qemu-aarch64-static "$ROOTFS.tmp/usr/bin/"
    $NICE chroot "$ROOTFS.tmp" /debootstrap/debootstrap --second-stage >>"$ROOTFS.log" 2>&1 \
        || fail "debootstrap --second-stage in the arm64 chroot failed: see $ROOTFS.log"
    echo "$SUITE $MIRROR $(date -u +%FT%TZ)" >"$ROOTFS.tmp/.imle-arm-rootfs"
    rm -rf "$ROOTFS"
    mv "$ROOTFS.tmp" "$ROOTFS"
fi
T_ROOTFS=$(( $(date +%s) - T0 ))
rm -rf "$ROOTFS/tmp/imle-arm-check" "$ROOTFS/opt/imle" "$ROOTFS/etc/imle-policy"  # last run's install
ROOTFS_MB=$(du -sm "$ROOTFS" | cut -f1)
[ "$(chroot "$ROOTFS" uname -m)" = aarch64 ] || fail "the chroot does not run aarch64 binaries"
PYVER=$(chroot "$ROOTFS" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
log "rootfs $ROOTFS ($BOOTSTRAPPED, ${ROOTFS_MB} MB): arm64 $SUITE, CPython $PYVER"

# ---------------------------------------------------------------- mounts: /proc and /dev only (see the trap above)
WORK_IN=/tmp/imle-arm-check          # inside the chroot
WORK="$ROOTFS$WORK_IN"
cleanup() {
    for m in "$ROOTFS/dev" "$ROOTFS/proc"; do mountpoint -q "$m" && umount -l "$m"; done
    return 0
}
trap cleanup EXIT
mountpoint -q "$ROOTFS/proc" || mount -t proc proc "$ROOTFS/proc"
mountpoint -q "$ROOTFS/dev" || mount --bind /dev "$ROOTFS/dev"
if mountpoint -q "$ROOTFS/sys"; then umount -l "$ROOTFS/sys"; fi
rm -rf "$WORK" && mkdir -p "$WORK"
# inside: no network (a fresh network namespace), a clean environment, the chosen QEMU CPU model
in_chroot() {  # in_chroot CPU CMD...
    local cpu=$1; shift
    $NICE unshare --net chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 QEMU_CPU="$cpu" IMLE_TRUSTED_KEYS=/etc/imle-policy/trusted-keys "$@"
}
unshare --net true 2>/dev/null || skip "unshare --net is not permitted here: cannot prove the install is offline"

# ---------------------------------------------------------------- 3. bundle, offline install, flash, verify
T0=$(date +%s)
log "imle-bundle for manylinux_2_28_aarch64, CPython $PYVER"
$NICE "$PY" -m runtime.bundle --platform manylinux_2_28_aarch64 --python "$PYVER" --out "$WORK/bundle" \
    --package "$PACKAGE" || skip "imle-bundle failed (no network for pip download?)"
T_BUNDLE=$(( $(date +%s) - T0 ))
BUNDLE_MB=$(du -sm "$WORK/bundle" | cut -f1)
FIRST_CPU=${CPUS%% *}
T0=$(date +%s)
log "install.sh in the chroot, no network (QEMU_CPU=$FIRST_CPU)"
in_chroot "$FIRST_CPU" sh "$WORK_IN/bundle/install.sh" || fail "install.sh in the arm64 chroot failed"
T_INSTALL=$(( $(date +%s) - T0 ))
PKG_NAME=$(basename "$PACKAGE")
cp -r "$PACKAGE" "$WORK/$PKG_NAME"   # the shipped package, flashed from inside the chroot
cp benchmarks/arm_check.py "$WORK/"
PASSED=()
declare -A T_VERIFY
for cpu in $CPUS; do
    T0=$(date +%s)
    log "QEMU_CPU=$cpu: imle-flash $PACKAGE, then imle-verify (golden vectors)"
    STORE=$WORK_IN/robot-$cpu/models
    in_chroot "$cpu" /opt/imle/venv/bin/imle-flash "$WORK_IN/$PKG_NAME" "$STORE" \
        || fail "imle-flash on aarch64 ($cpu) refused the package"
    in_chroot "$cpu" /opt/imle/venv/bin/imle-verify "$STORE/active" || fail "imle-verify on aarch64 ($cpu) refused"
    T_VERIFY[$cpu]=$(( $(date +%s) - T0 ))
    PASSED+=("aarch64/$cpu")
done

# ---------------------------------------------------------------- 4. x86 vs aarch64 differences
log "x86 vs aarch64 outputs: golden inputs + $RANDOM_OBS random observations x $LATENTS latents"
$NICE "$PY" benchmarks/arm_check.py inputs --package "$PACKAGE" --out "$WORK/inputs.npz" --random "$RANDOM_OBS" \
    --latents "$LATENTS"
$NICE "$PY" benchmarks/arm_check.py run --package "$PACKAGE" --inputs "$WORK/inputs.npz" --out "$WORK/x86_64.npz"
OTHERS=()
declare -A T_MEASURE
for cpu in $CPUS; do
    T0=$(date +%s)
    in_chroot "$cpu" /opt/imle/venv/bin/python "$WORK_IN/arm_check.py" run --package "$WORK_IN/$PKG_NAME" \
        --inputs "$WORK_IN/inputs.npz" --out "$WORK_IN/$cpu.npz" || fail "measurement on aarch64 ($cpu) failed"
    T_MEASURE[$cpu]=$(( $(date +%s) - T0 ))
    OTHERS+=(--other "aarch64/$cpu=$WORK/$cpu.npz")
done
times="{"
for cpu in $CPUS; do times+="\"verify_$cpu\": ${T_VERIFY[$cpu]}, \"measure_$cpu\": ${T_MEASURE[$cpu]}, "; done
times+="\"tools\": $T_TOOLS, \"rootfs\": $T_ROOTFS, \"bundle\": $T_BUNDLE, \"install\": $T_INSTALL, \"total\": $(( $(date +%s) - T_START ))}"
EXTRA=$(printf '{"command": "sudo benchmarks/arm_check.sh", "suite": "%s", "rootfs": "%s", "rootfs_state": "%s",
  "rootfs_mb": %s, "bundle_mb": %s, "chroot_python": "%s", "qemu": "%s", "passed_imle_verify": [%s],
  "random_observations": %s, "latents_per_observation": %s, "seconds": %s}' "$SUITE" "$ROOTFS" "$BOOTSTRAPPED" "$ROOTFS_MB" "$BUNDLE_MB" "$PYVER" \
  "$(qemu-aarch64-static --version | head -1)" "$(printf '"%s",' "${PASSED[@]}" | sed 's/,$//')" "$RANDOM_OBS" "$LATENTS" "$times")
RC=0
"$PY" benchmarks/arm_check.py compare --package "$PACKAGE" --reference "$WORK/x86_64.npz" "${OTHERS[@]}" \
    --json "$RESULT" --extra "$EXTRA" || RC=$?
log "imle-verify passed on: ${PASSED[*]}; results in $RESULT"
CHECKED=$("$PY" -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["golden"].get("checked_architectures", [])))' \
    "$PACKAGE/manifest.json")
for a in "${PASSED[@]}"; do
    case " $CHECKED " in *" $a "*) ;; *) echo "note: $PACKAGE does not list $a in golden.checked_architectures" \
        "(release step: python benchmarks/arm_check.py record --package $PACKAGE --arch $a; then imle-sign)";; esac
done
[ "$RC" = 0 ] || fail "golden-vector tolerances have too little margin against the measured x86/aarch64 differences"
echo "arm_check: PASSED"
