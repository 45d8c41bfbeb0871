#!/usr/bin/env bash
# Install what the migwatch libvirt lab needs on a fresh Debian 12, as root.
#
# Idempotent and fast when everything is present: apt is only touched for
# packages that are missing, the libvirt-qemu account only created when absent,
# and pip only runs when `import libvirt` fails in the venv.
#
# Usage: lab/install.sh            (venv = <repo>/.venv)
#        VENV=/path/to/venv lab/install.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-$(dirname "$here")/.venv}"

# Not libvirt-daemon-system: its postinst wants to start services (NOTES.md).
# xz-utils: the guest build unpacks the kernel's xz payload into an ELF vmlinux.
PACKAGES=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  qemu-system-x86 qemu-utils
  libvirt-dev pkg-config
  busybox-static cpio xz-utils gcc libc6-dev
)

log() { printf 'lab/install: %s\n' "$*" >&2; }

[[ $EUID -eq 0 ]] || { log "must run as root"; exit 1; }

missing_packages() {
  # dpkg-query prints "install ok installed" for each fully installed package.
  local p
  for p in "${PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
      printf '%s\n' "$p"
    fi
  done
}

install_packages() {
  local missing
  mapfile -t missing < <(missing_packages)
  (( ${#missing[@]} )) || return 0
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Update the lists only when apt cannot find a candidate (fresh image or stale lists).
  if ! apt-get install -y -qq --no-install-recommends --simulate "${missing[@]}" >/dev/null 2>&1; then
    log "apt-get update"
    apt-get update -qq
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

create_qemu_account() {
  # Pitfall 1: Debian's QEMU driver resolves its compiled-in default user
  # 'libvirt-qemu' before reading qemu.conf; libvirt-daemon-system would create it.
  getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
  getent passwd libvirt-qemu >/dev/null ||
    useradd --system --no-create-home -g libvirt-qemu libvirt-qemu
}

install_python_binding() {
  local py="$VENV/bin/python"
  [[ -x "$py" ]] || { log "no venv python at $py (set VENV=...)"; exit 1; }
  "$py" -c 'import libvirt, libvirtaio' 2>/dev/null && return 0
  # libvirt-python is an sdist built against libvirt-dev (~5 s).
  log "pip install libvirt-python into $VENV"
  "$py" -m pip install -q libvirt-python
}

install_packages
create_qemu_account
install_python_binding
