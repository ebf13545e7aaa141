# make demo   set everything up and run the demo (README, first command)
# make test   set everything up and run the whole test suite (README, second command)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test system venv install lint type clean

$(VENV)/.ready: requirements-test.txt requirements-lint.txt scripts/install-nsscache
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt -r requirements-lint.txt
	$(PY) scripts/install-nsscache --python $(PY)
	touch $@

venv: $(VENV)/.ready

# A plain, non-editable install: the wheel's .pth hook registers the source
# with the stock nsscache script, as on a login node.
install: venv
	$(PY) -m pip install --quiet --no-deps --force-reinstall .

demo: install
	$(PY) demo/run.py

# The Debian packages the suites need (scripts/system-packages: installs them as root,
# else names them and stops), then the venv, nsscache, the package, the tests.
system:
	bash scripts/system-packages

# pytest runs as two sessions side by side (scripts/run-tests): the system suites (e2e,
# packaging, slurm), which mostly wait on daemons, beside unit and integration.
test: system install lint type
	$(PY) scripts/run-tests

# Gates of make test (and of tox -e lint,type): ruff with pyproject.toml's rules, mypy.
lint: venv
	$(PY) scripts/lint

type: venv
	$(PY) -m mypy

clean:
	rm -rf $(VENV) build dist *.egg-info demo/out

# make deb   build the Debian package (README, "Install on a login node"):
# dist/nss-cache-coreweave_<version>_all.deb. Build dependencies:
# apt-get build-dep ./   (debhelper, dh-python, pybuild-plugin-pyproject ...)
# A copy of the checkout is built in $(DEB_BUILD), so no build product lands in
# the tree or in its parent directory. PATH is reset so that the distribution's
# python3 (not a pyenv or virtualenv one first on PATH) builds and runs pybuild.
DEB_BUILD ?= build/deb
DEB_OUT   ?= dist

.PHONY: deb
deb:
	rm -rf $(DEB_BUILD)
	mkdir -p $(DEB_BUILD)/src $(DEB_OUT)
	tar -cf - --exclude=./.git --exclude=./.venv --exclude=./.tox --exclude=./build --exclude=./dist \
		--exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
		--exclude=./.benchmarks --exclude=./.cache --exclude=./demo/out . \
		| tar -xf - -C $(DEB_BUILD)/src
	cd $(DEB_BUILD)/src && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage --no-sign -b
	cp $(DEB_BUILD)/*.deb $(DEB_OUT)/
	@ls -l $(DEB_OUT)/*.deb

# make bench   issue 5's benchmarks: the real nsscache against a synthetic 10,000- and
# 100,000-user organisation on loopback, compared with the floor; writes docs/benchmarks.md.
# BENCH_ARGS="--million" adds 1,000,000 users; "--profile" prints a cProfile of one sync.
.PHONY: bench
bench: install
	$(PY) -m benchmarks $(BENCH_ARGS)
