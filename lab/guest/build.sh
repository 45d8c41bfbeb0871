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
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${OUT:-${MIGWATCH_LAB_DIR:-/var/tmp/migwatch-lab}/guest}"
# Load order matters (Pitfall 11: `Unknown symbol virtio_break_device`).
VIRTIO_MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk)

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
  [[ -s "$kdir/vmlinux" ]] && return 0
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
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
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
  { cat "${BASH_SOURCE[0]}" "$here/dirtier.c"; echo "$pkg"; sha256sum /bin/busybox; } | sha256sum | cut -d' ' -f1
}

main() {
  mkdir -p "$OUT"
  local pkg digest kdir
  pkg="$(pick_kernel_pkg)"
  digest="$(inputs_digest "$pkg")"
  if [[ -s "$OUT/vmlinux" && -s "$OUT/initramfs.cpio.gz" && "$(cat "$OUT/build.stamp" 2>/dev/null)" == "$digest" ]]; then
    return 0
  fi
  kdir="$OUT/kernels/$pkg"
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  fetch_kernel "$pkg" "$kdir"
  gcc -O2 -static -Wall -Wextra -o "$OUT/dirtier" "$here/dirtier.c"
  build_initramfs "$kdir"
  ln -f "$kdir/vmlinux" "$OUT/vmlinux" # a hard link: the ELF is ~60 MiB
  echo "$pkg" >"$OUT/kernel.txt"
  echo "$digest" >"$OUT/build.stamp"
  log "built $OUT (kernel $pkg)"
}

main "$@"
