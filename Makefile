# The commands of the README:
#   make demo   - the paper's pipeline on generated Vaihingen-format data, on the CPU (results/demo/)
#   make test   - sync checks, every notebook (nbdev_test) and the pytest suite
#   make lab    - JupyterLab on 127.0.0.1 at nbs/03_losses.ipynb (prints the URL with its token)
# Each creates .venv and installs everything on first use (the package with its dev extras: nbdev, pytest,
# JupyterLab, ipympl); nothing else needs installing by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# the exact torch build this project is tested with (the package itself only asks for torch>=2.4)
TORCH ?= torch==2.14.1 torchvision==0.29.1
NB_TIMEOUT ?= 1200
LAB_PORT ?= 0
LAB_NOTEBOOK ?= nbs/03_losses.ipynb
PYTEST_TIMEOUT ?= 900
export MPLBACKEND = Agg
export PYTHONUNBUFFERED = 1

.PHONY: install test sync lint nbtest pytest demo readme export bench lab gpu-wheels

# The install also brings the optional object generators (extras samhq, sam2: HQ-SAM and SAM 2) so that their tests
# run; sam2 is an sdist built against the torch above (--no-build-isolation: seconds instead of minutes) and
# without its CUDA extension (SAM2_BUILD_CUDA=0; it only speeds up video post-processing).
$(VENV)/.installed: settings.ini setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install -q --no-build-isolation -e ".[dev,samhq,sam2]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed

sync: install
	BIN=$(BIN) bash tools/check_sync.sh

# ruff (pyflakes, import order, pyupgrade, bugbear, line length; settings in pyproject.toml) over the package, tests,
# benchmarks, tools and the notebooks, mypy over the package ([tool.mypy] in pyproject.toml), and no function in
# ssrs_nb/ longer than 60 lines
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python tools/func_length.py

# one torch thread per process: nbdev_test runs two notebooks at once on the 2-core CI machine, and the
# pytest suite starts subprocesses of its own (kill-and-resume, DDP); oversubscribed threads slow both down badly
nbtest: export OMP_NUM_THREADS = 1
nbtest: install
	timeout $(NB_TIMEOUT) $(BIN)/nbdev_test --n_workers 2 --timing

pytest: export OMP_NUM_THREADS = 1
pytest: install
	timeout $(PYTEST_TIMEOUT) $(BIN)/python -m pytest tests -q -p no:cacheprovider

test: sync lint nbtest pytest

export: install
	$(BIN)/nbdev_clean && $(BIN)/nbdev_export && $(BIN)/python tools/params_cell.py && $(BIN)/nbdev_clean && $(BIN)/python tools/readme.py

readme: install
	$(BIN)/python tools/readme.py

demo: install
	mkdir -p results/demo
	set -o pipefail; cd nbs && ../$(BIN)/papermill 20_paper_tables.ipynb ../results/demo/20_paper_tables.ipynb \
		-p preset demo -p out_dir ../results/demo --progress-bar 2>&1 \
		| grep --line-buffered -v "Kernel is running over TCP without encryption"
	@echo "results: results/demo/tables.md, results/demo/figures/, results/demo/20_paper_tables.ipynb"

bench: install
	$(BIN)/nbdev_test --path nbs/90_benchmarks.ipynb --flags slow --do_print

# JupyterLab on the loopback interface only, with a fresh token; LAB_PORT=0 takes a free port (LAB_PORT=8888 to
# fix it). The Agg backend exported above is dropped so that notebooks show their figures inline. Notebooks are saved
# clean (nbdev's pre-save hook, on since settings.ini has jupyter_hooks = True), so `make test` passes after exploring.
lab: install
	@port=$$($(BIN)/python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', $(LAB_PORT))); print(s.getsockname()[1])") && \
	token=$$($(BIN)/python -c "import secrets; print(secrets.token_hex(24))") && \
	echo "JupyterLab: http://127.0.0.1:$$port/lab/tree/$(LAB_NOTEBOOK)?token=$$token" && \
	echo "(open it in a browser on this machine; Ctrl-C here stops the server)" && \
	exec env -u MPLBACKEND $(BIN)/jupyter lab --no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port=$$port \
		--ServerApp.port_retries=0 --IdentityProvider.token=$$token --ServerApp.root_dir=$(CURDIR) \
		--ContentsManager.pre_save_hook=nbdev.clean.clean_jupyter \
		--LabApp.default_url=/lab/tree/$(LAB_NOTEBOOK) --LabApp.news_url=None \
		--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# the wheels a lent GPU machine lacks for benchmarks/gpu.py (it reaches no package index; Python 3.12 there):
# segment-anything for the SAM rows, imagecodecs to read the generated LZW TIFFs. See benchmarks/device.sh
gpu-wheels: install
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl segment-anything==1.0 imagecodecs==$$($(BIN)/python -c "import imagecodecs; print(imagecodecs.__version__)")
