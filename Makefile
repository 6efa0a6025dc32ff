# fence_pr: `make demo` and `make test` are the quick start; both run `make setup` first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SYSTEM_PACKAGES := qemu-system-x86 busybox-static cpio kmod file gzip xz-utils iproute2 \
	open-iscsi sg3-utils nvme-cli udev multipath-tools lvm2 lvm2-lockd libcap2-bin \
	fdisk python3-venv python3-rtslib-fb python3-pyudev fence-agents libxml2-utils xsltproc \
	corosync pacemaker pacemaker-cli-utils pcs crmsh socat strace
# The Debian package build (packaging/build-deb) and the RPM spec check (rpmspec -P).
SYSTEM_PACKAGES += debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools \
	python3-tenacity rpm lintian mmdebstrap
LAB_KERNELS ?= 7.3 6.12

.PHONY: setup packages venv kernels test unit lint lab demo bench bench-startup package package-check reliability lab-slow qemu-guests fence-agents-check bench-deps bench-plot profile bench-cluster \
	peers machines machines-setup 	clean

setup: packages venv kernels

packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "setup: installing $$missing"; \
		apt-get -o DPkg::Lock::Timeout=600 update -q && DEBIAN_FRONTEND=noninteractive \
			apt-get -o DPkg::Lock::Timeout=600 install -y -q \
			--no-install-recommends $$missing; \
	fi

$(VENV)/.stamp: pyproject.toml
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	# compat: a plain path in a .pth, not setuptools' import-hook finder, which imports
	# pathlib and re into every start of the agent (a quarter of `-o metadata`).
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' \
		--config-settings editable_mode=compat
	touch $@

venv: $(VENV)/.stamp

kernels: venv
	$(PY) -m tests.lab.runner.kernels $(LAB_KERNELS)

lint: setup
	$(VENV)/bin/ruff check fence_pr tests
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest -q -m 'not lab' tests

lab: setup
	$(PY) -m tests.lab.runner.suite $(LAB_KERNELS)

test: lint unit lab

demo: setup
	$(PY) -m tests.lab.tools.demo

bench: setup bench-deps
	$(PY) -m tests.lab.tools.bench_startup host
	$(PY) -m tests.lab.tools.bench

bench-deps: venv
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]' \
		--config-settings editable_mode=compat

# docs/bench.svg again from docs/bench-results.json (make bench draws it after its run).
bench-plot: setup bench-deps
	$(PY) -m tests.lab.tools.bench_plot

# `-o metadata` of fence_pr, fence_scsi and fence_mpath only: on the host, then in the guest.
bench-startup: setup
	$(PY) -m tests.lab.tools.bench_startup host
	$(PY) -m tests.lab.runner.vm '.venv/bin/python -m tests.lab.tools.bench_startup "lab guest"'

# The full-size reliability runs (CI runs the same tests with small samples).
reliability: setup
	FENCE_PR_BAD_INPUTS=10000 $(PY) -m pytest -q tests/unit/test_bad_input.py
	FENCE_PR_HELPER_FUZZ=10000 $(PY) -m pytest -q tests/unit/test_helper_server.py
	FENCE_PR_RACES=200 FENCE_PR_LAB_BAD_INPUTS=1000 $(PY) -m tests.lab.runner.run --kernel 7.3 \
		--extra tests/lab/faults/test_reliability.py tests/lab/agent/test_bad_input.py

# fence_pr beside fence_scsi and fence_mpath, every scenario (CI runs fence_pr's own), and a
# fence_scsi cluster and a fence_mpath cluster switched to fence_pr (and fence_pr to fence_mpath).
peers: setup
	$(PY) -m tests.lab.runner.run --kernel 7.3 --extra tests/lab/cluster/test_peers.py \
		tests/lab/cluster/test_migration.py tests/lab/cluster/test_migration_mpath.py

# The slow, kernel-independent scenarios left out of CI to keep it under 50 min beside another
# busy guest (README, "what runs where"), with the files' CI tests around them.
lab-slow: setup
	$(PY) -m tests.lab.runner.run --kernel 7.3 --extra tests/lab/cluster/test_cluster3.py \
		tests/lab/cluster/test_cluster.py tests/lab/faults/test_fault_matrix.py \
		tests/lab/agent/test_watchdog_check.py tests/lab/agent/test_agent_discovery.py \
		tests/lab/agent/test_agent_validate.py tests/lab/agent/test_agent_foreign_keys.py \
		tests/lab/agent/test_agent_every_device.py tests/lab/agent/test_agent_scsi.py \
		tests/lab/faults/test_reliability.py

# Fencing as Pacemaker times it: stonith_admin --fence and node loss, fence_pr beside
# fence_scsi and fence_mpath, 1 and 4 LUNs, 5 runs each (about 2 h under TCG).
bench-cluster: setup
	$(PY) -m tests.lab.tools.bench_cluster

# Where a 1-LUN and a 4-LUN `off` spend their time (imports, fork, lock, PR commands; issue 17).
profile: setup
	$(PY) -m tests.lab.tools.profile

# Real QEMU (scsi-block, pr-manager-helper) in front of fence_pr_helper: every scenario, and
# side by side with Debian's qemu-pr-helper (docs/helper.md), and libvirt starting the helper as
# its pr_helper (libvirt-daemon, not -system: nothing starts on the host). CI runs the first scenario.
qemu-guests: setup
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
		--no-install-recommends libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
	$(PY) -m tests.lab.runner.run --kernel 7.3 --extra tests/lab/agent/test_qemu_guests.py \
		tests/lab/agent/test_libvirt.py

# The machine lab (issue 15): a storage machine and cluster nodes, each its own QEMU guest
# booting Debian 12 and 13 with systemd; every scenario on both, 20 partition races each, then
# the table in docs/cluster.md.  Its roots are built once, from the Debian mirror apt uses
# (cold: 1 to 6 min each, 57-383 s measured; docs/cluster.md).  One image: make machines MACHINE_IMAGES=debian12
MACHINE_IMAGES ?= debian12 debian13
machines-setup: setup
	$(PY) -m tests.lab.machines.image $(MACHINE_IMAGES)

machines: machines-setup
	rm -f lab-out/machines-*.json; rc=0; for i in $(MACHINE_IMAGES); do \
		LAB_MACHINE_IMAGE=$$i FENCE_PR_MACHINE_RACES=$${FENCE_PR_MACHINE_RACES:-20} \
		$(PY) -m pytest -p no:cacheprovider -v --tb=short -m machines tests/machines || rc=1; \
	done; $(PY) -m tests.lab.machines.table; exit $$rc

# fence-agents' own checks on fence_pr inside a fence-agents source tree (apt-get source
# fence-agents, or a checkout of the release with .tarball-version): FENCE_AGENTS_SRC=DIR.
fence-agents-check: setup
	@test -n "$(FENCE_AGENTS_SRC)" || { echo "make fence-agents-check FENCE_AGENTS_SRC=<fence-agents source tree>"; exit 2; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends autoconf \
		automake libtool pkgconf gawk time python3-configobj >/dev/null
	packaging/fence-agents-tree-check "$(FENCE_AGENTS_SRC)"
	rm -rf build/fence-agents && mkdir -p build/fence-agents  # the guest has its own /tmp
	cp -a "$(FENCE_AGENTS_SRC)/tests" build/fence-agents/
	FENCE_PR_FENCE_AGENTS_SRC=$(CURDIR)/build/fence-agents $(PY) -m tests.lab.runner.run \
		--kernel 7.3 --extra tests/lab/agent/test_fence_testing.py

# The .deb installed with apt into clean Debian 12 and 13 roots, and asked there what
# Pacemaker, pcs and an admin ask (metadata, man, pcs stonith describe, stonith_admin -M).
package-check: packages
	packaging/check-install bookworm trixie

# The .deb in build/deb (`make unit` builds and checks one in a temporary directory).
package: packages
	packaging/build-deb build/deb

clean:
	rm -rf $(VENV) build *.egg-info
