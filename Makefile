# make demo   set everything up and run the demo (README, first command)
# make test   set everything up and run the whole test suite (README, second command)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test venv install clean

$(VENV)/.ready: requirements-test.txt scripts/install-nsscache
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt
	$(PY) scripts/install-nsscache --python $(PY)
	touch $@

venv: $(VENV)/.ready

# A plain, non-editable install: the wheel's .pth hook registers the source
# with the stock nsscache script, as on a login node.
install: venv
	$(PY) -m pip install --quiet --no-deps --force-reinstall .

demo: install
	$(PY) demo/run.py

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build dist *.egg-info demo/out
