#!/usr/bin/env bash
# Build the lab guest: a Debian 6.1 kernel as an uncompressed ELF vmlinux (QEMU
# boots it through the PVH entry point: no SeaBIOS real-mode setup, no in-guest
# decompression; 3.2 s instead of 6.9 s to init under TCG, NOTES.md) and a
# busybox initramfs whose /init runs lab/guest/dirtier.c.
#
# Outputs, in $OUT (default ${MIGWATCH_LAB_DIR:-/var/tmp/migwatch-lab}/guest):
#   vmlinux  initramfs.cpio.gz  dirtier  kernel.txt (package name)  build.stamp
# Nothing is rebuilt when build.stamp matches the inputs; the kernel .deb is
# downloaded once per kernel package and then deleted (only vmlinux and the
# virtio modules are kept).
#
# Env: OUT, LAB_KERNEL_PKG (e.g. linux-image-6.1.0-50-amd64; default: newest
# linux-image-6.1.0-N-amd64 that apt knows).
#
# `build.sh rp` also builds initramfs-rp.cpio.gz: the same init, dirtier and modules
# plus real programs from Debian packages (redis, sqlite3, xz/zstd/gzip, coreutils
# sort, stress-ng) and lab/guest/workload.sh, run instead of the dirtier when the
# kernel command line says `lab.workload=<kind>`. The packages are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` (nothing is installed on the
# host); each binary's shared libraries (ldd) are copied with it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${OUT:-${MIGWATCH_LAB_DIR:-/var/tmp/migwatch-lab}/guest}"
# Load order matters (Pitfall 11: `Unknown symbol virtio_break_device`).
VIRTIO_MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk virtio_balloon)

log() { printf 'lab/guest/build: %s\n' "$*" >&2; }

newest_kernel_pkg() {
  apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -n 1
}

pick_kernel_pkg() {
  if [[ -n "${LAB_KERNEL_PKG:-}" ]]; then
    echo "$LAB_KERNEL_PKG"
    return
  fi
  # A pinned choice from an earlier build keeps rebuilds offline and stable.
  if [[ -s "$OUT/kernel.txt" && -s "$OUT/vmlinux" ]]; then
    cat "$OUT/kernel.txt"
    return
  fi
  local pkg
  pkg="$(newest_kernel_pkg)"
  if [[ -z "$pkg" ]]; then
    log "apt-get update (no linux-image-6.1.0 package known)"
    apt-get update -qq
    pkg="$(newest_kernel_pkg)"
  fi
  [[ -n "$pkg" ]] || { log "no linux-image-6.1.0-*-amd64 package found"; exit 1; }
  echo "$pkg"
}

# The bzImage carries the kernel as a compressed payload; find it by its magic
# and decompress it until the result is an ELF file (the same idea as the
# kernel's scripts/extract-vmlinux).
extract_vmlinux() {
  local img="$1" dest="$2" magic tool pos i
  # (bash strings cannot hold NUL, so the magics stop before any 0 byte)
  local magics=($'\xfd7zXZ' $'\x1f\x8b\x08' $'\x28\xb5\x2f\xfd')
  local tools=("xz -dcq" "gzip -dcq" "zstd -dcq")
  for i in "${!magics[@]}"; do
    magic="${magics[$i]}" tool="${tools[$i]}"
    for pos in $(LC_ALL=C grep -aboF -- "$magic" "$img" | LC_ALL=C grep -ao '^[0-9]*:' | tr -d :); do
      tail -c "+$((pos + 1))" "$img" | $tool >"$dest" 2>/dev/null || true
      if [[ "$(head -c 4 "$dest" | od -An -tx1 | tr -d ' ')" == "7f454c46" ]]; then
        return 0
      fi
    done
  done
  log "could not extract an ELF vmlinux from $img"
  return 1
}

fetch_kernel() {
  local pkg="$1" kdir="$2" tmp="$WORK/kernel"
  # Kept from an earlier build only if it extracted the same modules.
  [[ -s "$kdir/vmlinux" && "$(cat "$kdir/modules.list" 2>/dev/null)" == "${VIRTIO_MODULES[*]}" ]] && return 0
  mkdir -p "$tmp"
  log "downloading $pkg"
  # apt-get download drops privileges to _apt, which must be able to write here.
  chmod 777 "$tmp"
  (cd "$tmp" && apt-get download -qq "$pkg" 2>/dev/null) || (cd "$tmp" && apt-get download -qq "$pkg")
  dpkg-deb -x "$tmp"/*.deb "$tmp/root"
  mkdir -p "$kdir/modules"
  local modroot
  modroot="$(echo "$tmp"/root/lib/modules/*)"
  local m f
  for m in "${VIRTIO_MODULES[@]}"; do
    f="$(find "$modroot" -name "$m.ko*" | head -n 1)"
    if [[ -z "$f" ]]; then
      log "module $m not in $pkg (assumed built in)"
      continue
    fi
    case "$f" in
      *.ko.xz) xz -dc "$f" >"$kdir/modules/$m.ko" ;;
      *.ko.zst) zstd -dcq "$f" >"$kdir/modules/$m.ko" ;;
      *) cp "$f" "$kdir/modules/$m.ko" ;;
    esac
  done
  extract_vmlinux "$(echo "$tmp"/root/boot/vmlinuz-*)" "$kdir/vmlinux.tmp"
  mv "$kdir/vmlinux.tmp" "$kdir/vmlinux"
  echo "${VIRTIO_MODULES[*]}" >"$kdir/modules.list"
}

write_init() {
  local dest="$1"
  cat >"$dest" <<'INIT'
#!/bin/sh
# Lab guest init: mount the pseudo file systems, load the virtio disk driver,
# run the dirtier. Init never exits (that would panic the kernel and look like
# a migration failure).
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# virtio_balloon: the memory statistics a cloud's guests report (free memory), read by
# the agent through virDomainMemoryStats, as nova, KubeVirt and Proxmox enable them.
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk virtio_balloon; do
  [ -f "/lib/modules/$m.ko" ] && insmod "/lib/modules/$m.ko"
done
# A disk scenario needs /dev/vda before the dirtier opens it; devtmpfs
# creates the node asynchronously after virtio_blk probes.
case " $(cat /proc/cmdline) " in
  *" lab.diskrate="*)
    i=0
    while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done ;;
esac
/bin/dirtier
echo "dirtier: exited rc=$?"
while :; do sleep 3600; done
INIT
  chmod 755 "$dest"
}

# The rp variant's init: as above, but a `lab.workload=` on the command line runs
# lab/guest/workload.sh instead of the dirtier.
write_init_rp() {
  local dest="$1"
  write_init "$dest"
  sed -i 's|^/bin/dirtier$|case " $(cat /proc/cmdline) " in *" lab.workload="*) exec /bin/workload ;; esac\n/bin/dirtier|' "$dest"
}

# Debian packages whose programs the rp guest runs, and the libraries they load
# that a minimal host may lack (the rest come from the host's own Debian 12 libs).
RP_PACKAGES=(redis-server redis-tools libjemalloc2 liblzf1 sqlite3 libsqlite3-0 xz-utils liblzma5 zstd
  libzstd1 liblz4-1 gzip coreutils stress-ng libipsec-mb1 libjudydebian1 libsctp1)
RP_BINARIES=(redis-server redis-benchmark redis-cli sqlite3 xz zstd gzip sort base64 head
  md5sum stress-ng)

fetch_rp_packages() {
  local dest="$1" tmp="$WORK/rp-debs"
  mkdir -p "$tmp" "$dest"
  chmod 777 "$tmp"
  log "downloading ${RP_PACKAGES[*]}"
  (cd "$tmp" && apt-get download -qq "${RP_PACKAGES[@]}" 2>/dev/null) ||
    (cd "$tmp" && apt-get download -qq "${RP_PACKAGES[@]}")
  local deb
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$dest"; done
}

# Copy a binary and every library ldd resolves for it (the unpacked packages'
# libraries first) into the initramfs root, under the same paths.
copy_with_libs() {
  local bin="$1" pkgroot="$2" root="$3" libpath lib
  libpath="$pkgroot/usr/lib/x86_64-linux-gnu:$pkgroot/lib/x86_64-linux-gnu"
  cp -L "$bin" "$root/usr/bin/$(basename "$bin")"
  if LD_LIBRARY_PATH="$libpath" ldd "$bin" | grep -q 'not found'; then
    log "missing libraries for $bin:"
    LD_LIBRARY_PATH="$libpath" ldd "$bin" | grep 'not found' >&2
    return 1
  fi
  for lib in $(LD_LIBRARY_PATH="$libpath" ldd "$bin" | awk '/=> \//{print $3} /^\t\/lib64/{print $1}'); do
    case "$lib" in
      "$pkgroot"/*) mkdir -p "$root/lib/x86_64-linux-gnu"; cp -L "$lib" "$root/lib/x86_64-linux-gnu/" ;;
      *) mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib" ;;
    esac
  done
}

build_initramfs_rp() {
  local kdir="$1" root="$WORK/initramfs-rp" pkgroot="$WORK/rp-root" b
  mkdir -p "$root"/{bin,proc,sys,dev,run,data,tmp,usr/bin,lib/modules}
  cp /bin/busybox "$root/bin/busybox"
  # every applet: the workload script uses awk, seq, dd, sed, ... (Debian's own
  # sort/xz/gzip/head/base64/md5sum live in /usr/bin and are called by full path)
  local applet
  for applet in $(/bin/busybox --list); do
    [[ "$applet" == busybox ]] || ln -s busybox "$root/bin/$applet"
  done
  cp "$OUT/dirtier" "$root/bin/dirtier"
  cp "$here/workload.sh" "$root/bin/workload"
  chmod 755 "$root/bin/workload"
  cp "$kdir"/modules/*.ko "$root/lib/modules/" 2>/dev/null || true
  fetch_rp_packages "$pkgroot"
  for b in "${RP_BINARIES[@]}"; do
    local path="$pkgroot/usr/bin/$b"
    [[ -e "$path" ]] || path="$pkgroot/bin/$b"
    [[ -e "$path" ]] || { log "$b not in ${RP_PACKAGES[*]}"; exit 1; }
    copy_with_libs "$path" "$pkgroot" "$root"
  done
  # redis-server is a symlink to redis-check-rdb in the package: it picks its mode
  # from argv[0], so the copy under the name redis-server is what it needs.
  mkdir -p "$root/lib64"
  write_init_rp "$root/init"
  (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -6 >"$OUT/initramfs-rp.cpio.gz.tmp"
  mv "$OUT/initramfs-rp.cpio.gz.tmp" "$OUT/initramfs-rp.cpio.gz"
}

build_initramfs() {
  local kdir="$1" root="$WORK/initramfs"
  mkdir -p "$root"/{bin,proc,sys,dev,lib/modules}
  cp /bin/busybox "$root/bin/busybox"
  local applet
  for applet in sh mount insmod sleep cat echo; do ln -s busybox "$root/bin/$applet"; done
  cp "$OUT/dirtier" "$root/bin/dirtier"
  cp "$kdir"/modules/*.ko "$root/lib/modules/" 2>/dev/null || true
  write_init "$root/init"
  (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -9 >"$OUT/initramfs.cpio.gz.tmp"
  mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
}

# Everything that determines the outputs: this script, the dirtier's source,
# the kernel package and the busybox binary.
inputs_digest() {
  local pkg="$1"
  { cat "${BASH_SOURCE[0]}" "$here/dirtier.c" "$here/workload.sh"; echo "$pkg"; sha256sum /bin/busybox; } | sha256sum | cut -d' ' -f1
}

main() {
  local variant="${1:-}"
  mkdir -p "$OUT"
  local pkg digest kdir
  pkg="$(pick_kernel_pkg)"
  digest="$(inputs_digest "$pkg")"
  local rp_ok=1
  if [[ "$variant" == rp ]]; then
    [[ -s "$OUT/initramfs-rp.cpio.gz" && "$(cat "$OUT/build-rp.stamp" 2>/dev/null)" == "$digest" ]] || rp_ok=0
  fi
  if [[ -s "$OUT/vmlinux" && -s "$OUT/initramfs.cpio.gz" && "$(cat "$OUT/build.stamp" 2>/dev/null)" == "$digest" && $rp_ok == 1 ]]; then
    return 0
  fi
  kdir="$OUT/kernels/$pkg"
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  fetch_kernel "$pkg" "$kdir"
  gcc -O2 -static -Wall -Wextra -o "$OUT/dirtier" "$here/dirtier.c"
  build_initramfs "$kdir"
  if [[ "$variant" == rp ]]; then
    build_initramfs_rp "$kdir"
    echo "$digest" >"$OUT/build-rp.stamp"
  fi
  ln -f "$kdir/vmlinux" "$OUT/vmlinux" # a hard link: the ELF is ~60 MiB
  echo "$pkg" >"$OUT/kernel.txt"
  echo "$digest" >"$OUT/build.stamp"
  log "built $OUT (kernel $pkg)"
}

main "$@"
