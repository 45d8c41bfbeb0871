# migwatch libvirt lab: `include lab/lab.mk` from the top Makefile.
#
#   make lab          install packages + build the guest + start both libvirt hosts
#   make lab-record   record the standard trace set into bench/traces/ (~9 min)
#   make lab-record-rp  record the real-program set into bench/traces/rp/ (~1.5-2 h)
#   make lab-down     stop everything the lab started
#
# Needs root (apt, mount namespaces, libvirtd). State: $(MIGWATCH_LAB_DIR),
# default /var/tmp/migwatch-lab.

# The directory of this fragment, whatever the including Makefile's location.
LAB_SRC := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
LAB_ROOT := $(abspath $(LAB_SRC)/..)
LAB_VENV ?= $(LAB_ROOT)/.venv
LAB_PYTHON ?= $(LAB_VENV)/bin/python
LAB_TRACES ?= $(LAB_ROOT)/bench/traces
LABCTL = cd $(LAB_ROOT) && $(LAB_PYTHON) -m lab.labctl
LABREC = cd $(LAB_ROOT) && $(LAB_PYTHON) -m lab.record

.PHONY: lab lab-install lab-guest lab-guest-rp lab-up lab-down lab-status lab-record lab-record-rp

lab: lab-install lab-guest lab-up

lab-install:
	VENV=$(LAB_VENV) bash $(LAB_SRC)/install.sh

lab-guest: lab-install
	bash $(LAB_SRC)/guest/build.sh

lab-up: lab-install lab-guest
	$(LABCTL) up

lab-down:
	$(LABCTL) down

lab-status:
	$(LABCTL) status

lab-record: lab
	$(LABREC) set --out $(LAB_TRACES)

# The real-program guests' initramfs (Debian packages: redis, sqlite3, xz, zstd, gzip,
# coreutils, stress-ng; fetched with apt-get download, not installed).
lab-guest-rp: lab-install
	bash $(LAB_SRC)/guest/build.sh rp

lab-record-rp: lab lab-guest-rp
	$(LABREC) set --set rp --out $(LAB_TRACES)/rp
