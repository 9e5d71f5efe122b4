# fbi_llm.hpp — build, test, train.   `make help` lists the targets.
#
#   make train-tiny   train the FP teacher, then the 1-bit student, on TinyShakespeare (downloads it if needed)
#   make test         build and run the doctest suite
#
# Variables you may set:  CXX, OPT (-O3), NO_OMP=1 (build without OpenMP), NATIVE=0 (no -march=native),
#   BLAS=0 (Eigen's own matrix products even when OpenBLAS is installed),
#   TINYSHAKESPEARE=/path/to/input.txt (use a local copy of the corpus), ARGS (passed to the test binary),
#   PYTHON (for notebooks), OUT (where train-tiny writes, default runs/tiny), BUILD (build directory, default build),
#   RUN (a prefix that runs the built programs, e.g. RUN="qemu-aarch64 -L /usr/aarch64-linux-gnu" for a cross build).
# `make flags` prints what the probes below chose (compiler, OpenMP, target, include paths).

SHELL    := /bin/bash
export FBI_RUN = $(RUN)
CXX      ?= g++
OPT      ?= -O3
PYTHON   ?= python3
OUT      ?= runs/tiny
BUILD    := build
# How a recipe runs a built program: ./build/x for a relative BUILD, /abs/dir/x as it is.
BIN       = $(if $(filter /%,$(BUILD)),$(BUILD),./$(BUILD))
RUN      ?=
UNAME_S  := $(shell uname -s)
UNAME_M  := $(shell uname -m)

# ---- macOS: Homebrew's prefix (Eigen, doctest, libomp live there; Apple clang does not search it) ------------
ifeq ($(UNAME_S),Darwin)
  BREW        := $(shell command -v brew 2>/dev/null)
  BREW_PREFIX := $(if $(BREW),$(shell $(BREW) --prefix 2>/dev/null))
  # libomp is keg-only: its headers and library stay under its own prefix, which is named only when installed
  LIBOMP      := $(if $(BREW),$(patsubst %/include/omp.h,%,$(wildcard $(shell $(BREW) --prefix libomp 2>/dev/null)/include/omp.h)))
  PLATFORM_INC := $(if $(BREW_PREFIX),-isystem $(BREW_PREFIX)/include)
endif
EIGEN_INC ?= $(firstword $(wildcard $(if $(BREW_PREFIX),$(BREW_PREFIX)/include/eigen3) /usr/include/eigen3 /usr/local/include/eigen3 /opt/homebrew/include/eigen3))

# ---- probes: warning flags, OpenMP and the native target, each used only where the compiler takes it ---------
# probe FLAGS[, LINK]: "yes" when a small program compiles and links with them. -Werror makes a compiler that only
# warns about an unknown flag (clang does) say no.
probe     = $(shell printf 'int main(){return 0;}\n' | $(CXX) -Werror $(1) -x c++ - $(if $(2),-x none $(2)) -o /dev/null >/dev/null 2>&1 && echo yes)
omp_probe = $(shell printf '\043include <omp.h>\nint main(){return omp_get_max_threads() > 0 ? 0 : 1;}\n' | $(CXX) $(1) -x c++ - $(if $(2),-x none $(2)) -o /dev/null >/dev/null 2>&1 && echo yes)
WARN     := -Wall -Wextra -Wno-unused-parameter $(if $(call probe,-Wno-maybe-uninitialized),-Wno-maybe-uninitialized)
CXXFLAGS += -std=c++17 $(OPT) $(WARN) $(if $(EIGEN_INC),-isystem $(EIGEN_INC)) $(PLATFORM_INC)
# Eigen's multithreaded GEMM is only worth it for large products; we parallelise ourselves elsewhere.

# OpenMP: -fopenmp (GCC, LLVM clang, Homebrew's llvm), else Apple clang's way with Homebrew's libomp.
ifeq ($(NO_OMP),1)
  OMP_STATUS := ✗ OpenMP (NO_OMP=1: one thread)
else ifeq ($(call omp_probe,-fopenmp),yes)
  OMP_CFLAGS := -fopenmp
  OMP_STATUS := ✓ OpenMP (-fopenmp)
else ifeq ($(and $(LIBOMP),$(call omp_probe,-Xpreprocessor -fopenmp -I$(LIBOMP)/include,-L$(LIBOMP)/lib -lomp)),yes)
  OMP_CFLAGS := -Xpreprocessor -fopenmp -I$(LIBOMP)/include
  OMP_LIBS   := -L$(LIBOMP)/lib -lomp
  OMP_STATUS := ✓ OpenMP (Apple clang + Homebrew libomp in $(LIBOMP))
else ifeq ($(UNAME_S),Darwin)
  OMP_STATUS := ✗ OpenMP (one thread: brew install libomp, then make clean; or NO_OMP=1 to silence this)
else
  OMP_STATUS := ✗ OpenMP (one thread: $(CXX) has no OpenMP; Debian/Ubuntu: apt-get install libomp-dev for clang, or NO_OMP=1)
endif
CXXFLAGS += $(OMP_CFLAGS)
LDLIBS   += $(OMP_LIBS)
OMP_OK   := $(if $(OMP_CFLAGS),yes)
# The native target: -march=native (x86, GCC on arm64), else -mcpu=native (clang on arm64, Apple Silicon).
ifneq ($(NATIVE),0)
  NATIVE_FLAG := $(if $(call probe,-march=native),-march=native,$(if $(call probe,-mcpu=native),-mcpu=native))
endif
NATIVE_OK := $(if $(NATIVE_FLAG),yes)
CXXFLAGS  += $(NATIVE_FLAG)
# Matrix products: OpenBLAS through Eigen (EIGEN_USE_BLAS) when -lopenblas links, else Eigen's own GEMM.
# Measured 1.1-1.4x Eigen's speed at the training step's shapes on AVX-512, the same on AVX2 (README, Training
# throughput). Matrix-vector products stay in Eigen's own kernel (fbi::matvec).
# BLAS=0 keeps Eigen's. The results differ from Eigen's in float rounding only (another summation order).
# The probe runs where the flags are used (`=`, not `:=`), so the OpenBLAS that `deps` just installed counts.
BLAS_OK     = $(if $(filter 0,$(BLAS)),,$(call probe,,-lopenblas))
CXXFLAGS   += $(if $(BLAS_OK),-DEIGEN_USE_BLAS -DFBI_OPENBLAS)
LDLIBS     += $(if $(BLAS_OK),-lopenblas)
BLAS_STATUS = $(if $(BLAS_OK),✓ OpenBLAS products,✗ OpenBLAS ($(if $(filter 0,$(BLAS)),BLAS=0,not found: apt-get install libopenblas-dev); Eigen's products))
# OpenBLAS picks its kernels from the CPU unless OPENBLAS_CORETYPE names others. An inherited value (one of our
# build hosts set Haswell on an AVX-512 CPU: products 1.4x slower) stays out of what make runs; set it on the
# command line of a program to choose kernels yourself.
unexport OPENBLAS_CORETYPE
# The sanitizer builds (make sanitize, make fuzz) use one fixed target instead of -march=native: x86-64-v3
# (AVX2, FMA, F16C, BMI2: the fast kernels' instruction set) where this CPU runs it, the compiler's baseline
# elsewhere. Why not native: on AVX-512 CPUs GCC 12 keeps some 64-byte-aligned stack slots aligned only through
# the prologue's `and $-64,%rsp`, while ASan's use-after-return check moves the frame to a fake stack whose
# frames are only 32-byte-consistent with that layout; the first aligned zmm move there faults (README, Robustness).
SAN_ARCH_NAME := $(if $(and $(NATIVE_OK),$(filter x86_64 amd64,$(shell uname -m))),$(if $(shell $(CXX) -march=native -dM -E -x c++ /dev/null 2>/dev/null | grep -cE '__(AVX2|FMA|F16C|BMI2|LZCNT|MOVBE)__ ' | grep -x 6),x86-64-v3,x86-64),baseline)
SAN_ARCH      := $(if $(filter x86-64%,$(SAN_ARCH_NAME)),-march=$(SAN_ARCH_NAME))
# CXXFLAGS without -march=native, for the sanitizer builds
SAN_CXXFLAGS   = $(filter-out -march=native -mcpu=native,$(CXXFLAGS)) $(SAN_ARCH)

HEADER   := fbi_llm.hpp
# examples/ by role: pipeline/ (train_tiny, sample, compare), bench/ (the benchmarks), notebook/ (the programs
# the notebooks run); the helpers they share (common, json_out, bench_util) sit in examples/ itself.
EXAMPLES := train_tiny sample bench_train bench_gemv bench_decode compare fbi_convert
PLUGINS  := examples/kernels/fast_kernels.hpp $(wildcard examples/quantizers/*.hpp)
INTEROP  := examples/interop/formats.hpp examples/interop/hf.hpp
EX_HDRS  := examples/common.hpp examples/json_out.hpp examples/bench_util.hpp $(PLUGINS) $(INTEROP)
vpath %.cpp examples/pipeline examples/bench examples/notebook examples/interop
TEST_SRC := $(wildcard tests/*.cpp)
TEST_OBJ := $(TEST_SRC:tests/%.cpp=$(BUILD)/tests/%.o)

.PHONY: all help flags deps test train-tiny compare bench-train bench bench-import data clean status
all: deps status $(EXAMPLES:%=$(BUILD)/%) llama-if-possible   ## build the examples (default)

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

status:
	@echo "build: $(CXX) $(OPT)  $(OMP_STATUS)  $(if $(NATIVE_OK),✓ $(NATIVE_FLAG),✗ native target)  $(BLAS_STATUS)  (never -ffast-math)"

flags:  ## print what the probes chose: platform, compiler flags, link libraries
	@echo "platform: $(UNAME_S) $(UNAME_M)$(if $(BREW_PREFIX), (Homebrew $(BREW_PREFIX)$(if $(LIBOMP), libomp $(LIBOMP), no libomp)))"
	@echo "CXX:      $(CXX)"
	@echo "CXXFLAGS: $(strip $(CXXFLAGS))"
	@echo "LDLIBS:   $(strip $(LDLIBS))"
	@echo "OpenMP:   $(OMP_STATUS)"
	@echo "BLAS:     $(BLAS_STATUS)"
	@echo "target:   $(or $(NATIVE_FLAG),the compiler's default)"

# ---- dependencies: Eigen and doctest. Installed with apt-get when we are root on Debian/Ubuntu. ------------
deps:  ## check (and as root on Debian/Ubuntu, install) Eigen, doctest, nlohmann/json (the interop tools' JSON) and OpenBLAS (optional: faster products)
	@have() { printf '#include <%s>\nint main(){}\n' "$$1" | $(CXX) -std=c++17 $(if $(EIGEN_INC),-isystem $(EIGEN_INC)) $(PLATFORM_INC) -I/usr/include/eigen3 -x c++ -fsyntax-only - 2>/dev/null; }; \
	blas=; if [ "$$(id -u)" = 0 ] && command -v dpkg >/dev/null && ! dpkg -s libopenblas-dev >/dev/null 2>&1; then blas=libopenblas-dev; fi; \
	if have Eigen/Dense && have doctest/doctest.h && have nlohmann/json.hpp && [ -z "$$blas" ]; then echo "deps: ✓ Eigen ✓ doctest ✓ nlohmann/json"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "deps: installing libeigen3-dev doctest-dev nlohmann-json3-dev $$blas with apt-get ..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libeigen3-dev doctest-dev nlohmann-json3-dev $$blas) >/dev/null || exit 1; \
	  echo "deps: ✓ installed"; \
	else \
	  echo "deps: ✗ Eigen 3, doctest and/or nlohmann/json are missing. Install them with:"; \
	  echo "    Debian/Ubuntu:  sudo apt-get install -y libeigen3-dev doctest-dev nlohmann-json3-dev"; \
	  echo "    macOS:          brew install eigen doctest nlohmann-json libomp"; \
	  exit 1; \
	fi
# The main build's flags in one file, rewritten only when they change (OpenBLAS installed, BLAS=0, another
# target), so no program links objects built two ways.
$(BUILD)/flags: FORCE | deps
	@mkdir -p $(dir $@)
	@echo '$(CXXFLAGS) $(LDLIBS)' | cmp -s - $@ || echo '$(CXXFLAGS) $(LDLIBS)' > $@
# A fresh shell sees the just-installed Eigen; the variable is re-read in sub-makes.
$(BUILD)/%: %.cpp $(EX_HDRS) $(HEADER) $(BUILD)/flags | deps
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -isystem /usr/include/eigen3 $< -o $@ $(LDLIBS)

$(BUILD)/tests/%.o: tests/%.cpp tests/testing.hpp tests/interop_bytes.hpp $(HEADER) $(PLUGINS) $(INTEROP) $(BUILD)/flags | deps
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -isystem /usr/include/eigen3 -O2 -c $< -o $@

$(BUILD)/run_tests: $(TEST_OBJ)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

# ---- tests: doctest; the last line restates doctest's summary as "N passed, N failed" ---------------------
test: deps status $(BUILD)/run_tests $(BUILD)/train_tiny $(BUILD)/sample $(BUILD)/header_alone $(BUILD)/fbi_convert  ## build and run the test suite (ARGS='-tc="F2*"' runs one check), then test-examples, the resume-after-kill, label, README-example, copy-paste and header-alone checks
	@set -o pipefail 2>/dev/null; OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} FBI_TEST_DIR=$(BUILD) $(RUN) $(BIN)/run_tests $(ARGS) | tee $(BUILD)/test.log; \
	rc=$${PIPESTATUS[0]}; \
	awk '/test cases:/ { for (i=1;i<=NF;i++) { if ($$(i+1) ~ /^passed/) p=$$i; if ($$(i+1) ~ /^failed/) f=$$i } } END { if (p!="") print "tests: " p " passed, " f " failed" }' $(BUILD)/test.log; \
	exit $$rc
	@$(MAKE) --no-print-directory test-examples
	@bash tests/resume_kill.sh $(BUILD)
	@bash tests/makefile_platforms.sh | tail -1 | sed 's/^#/platforms (fake macOS Makefile probes):/'
	@bash tests/check_labels.sh
	@bash tests/readme_examples.sh
	@CXX='$(CXX)' CXXFLAGS='$(CXXFLAGS)' LDLIBS='$(LDLIBS)' EIGEN_INC='$(or $(EIGEN_INC),/usr/include/eigen3)' bash tests/copy_paste.sh $(BUILD)
	@$(RUN) $(BIN)/header_alone $(BUILD)
	@$(if $(filter 0,$(INTEROP_TESTS)),echo "interop: the PyTorch comparisons skipped (INTEROP_TESTS=0; doctest X1-X6 ran)",$(MAKE) --no-print-directory test-interop)
	@$(if $(filter 0,$(INTEROP_TESTS)),echo "llama: generate/perplexity vs PyTorch skipped (INTEROP_TESTS=0)",$(MAKE) --no-print-directory test-llama)

# ---- Hugging Face / official FBI-LLM files against an independent PyTorch reference (tests/interop/) ------------
# Needs Debian's python3-torch and python3-numpy for $(PYTHON) (installed as root on Debian/Ubuntu when missing).
# INTEROP_TESTS=0 leaves them out of make test (tests/compilers.sh does: they compare Python with the same C++ code).
INTEROP_TESTS ?= 1
INTEROP_PKGS := python3-torch python3-numpy
.PHONY: test-interop interop-deps
interop-deps:
	@have() { $(PYTHON) -c 'import torch, numpy' 2>/dev/null; }; \
	if have; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "interop: installing $(INTEROP_PKGS) with apt-get ..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(INTEROP_PKGS)) >/dev/null || exit 1; \
	  if have; then exit 0; fi; \
	fi; \
	echo "interop: ✗ $(PYTHON) cannot import torch and numpy: sudo apt-get install -y $(INTEROP_PKGS), then make test PYTHON=/usr/bin/python3"; exit 1
test-interop: deps interop-deps $(BUILD)/fbi_convert $(BUILD)/train_tiny  ## import/export of Hugging Face FBI-LLM directories vs the PyTorch reference (tests/interop.sh)
	@PYTHON='$(PYTHON)' bash tests/interop.sh $(BUILD)

# ---- the released FBI-LLM: build/generate, build/perplexity (examples/llama/) ----------------------------------------
# They read the model's LLaMA-2 tokenizer.model through Debian's libsentencepiece-dev (and spm_train, package
# sentencepiece, trains the BPE vocabulary of `make train-tiny TOKENIZER=bpe`). Installed as root on Debian/Ubuntu
# when missing; everything else builds without them.
SPM_PKGS  := libsentencepiece-dev sentencepiece
SPM_PROBE := printf '\043include <sentencepiece_processor.h>\nint main(){ sentencepiece::SentencePieceProcessor p; return p.GetPieceSize(); }\n' | \
             $(CXX) -std=c++17 -x c++ - -lsentencepiece -o /dev/null >/dev/null 2>&1 && command -v spm_train >/dev/null
LLAMA     := generate perplexity spm_tokenize
.PHONY: spm-deps llama llama-if-possible test-llama
spm-deps:  ## check (and as root on Debian/Ubuntu, install) sentencepiece: the LLaMA tokenizer of build/generate, build/perplexity
	@if $(SPM_PROBE); then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "spm: installing $(SPM_PKGS) with apt-get ..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SPM_PKGS)) >/dev/null || exit 1; \
	  if $(SPM_PROBE); then exit 0; fi; \
	fi; \
	echo "spm: ✗ sentencepiece is missing (build/generate and build/perplexity read LLaMA's tokenizer.model with it):"; \
	echo "    Debian/Ubuntu:  sudo apt-get install -y $(SPM_PKGS)     macOS:  brew install sentencepiece"; exit 1
$(LLAMA:%=$(BUILD)/%): $(BUILD)/%: examples/llama/%.cpp examples/llama/llama.hpp $(EX_HDRS) $(HEADER) $(BUILD)/flags | deps spm-deps
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -isystem /usr/include/eigen3 $< -o $@ $(LDLIBS) -lsentencepiece
llama: $(LLAMA:%=$(BUILD)/%)  ## build/generate and build/perplexity: run a downloaded FBI-LLM (README, "Run the released FBI-LLM")
llama-if-possible:
	@if $(MAKE) --no-print-directory -s spm-deps >/dev/null 2>&1; then $(MAKE) --no-print-directory llama; \
	else echo "note: build/generate and build/perplexity skipped: they need sentencepiece (sudo apt-get install -y $(SPM_PKGS))"; fi
# generate and perplexity on a tiny synthetic release-format FBI-LLM with a sentencepiece tokenizer, against
# tests/interop/torch_ref.py (same tokens, same perplexity) and every bad input of the user interface
LLAMA_PY_PKGS := python3-torch python3-numpy python3-sentencepiece
.PHONY: spm-py-deps bench-llama
spm-py-deps: interop-deps
	@$(PYTHON) -c 'import sentencepiece' 2>/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-sentencepiece) >/dev/null; fi; }; \
	$(PYTHON) -c 'import sentencepiece' 2>/dev/null || { echo "llama: ✗ $(PYTHON) cannot import sentencepiece: sudo apt-get install -y $(LLAMA_PY_PKGS)"; exit 1; }
test-llama: deps spm-py-deps llama $(BUILD)/train_tiny  ## generate/perplexity vs the PyTorch reference, and their bad inputs (tests/llama.sh)
	@PYTHON='$(PYTHON)' bash tests/llama.sh $(BUILD)
# Release shapes on synthetic checkpoints: import, packed size, decode and prefill tokens/s, RSS (BIG=1 adds the 7B
# shape: 27 GB written to $(BUILD)/bench_llama and removed at the end; ≈ 80 GB free disk is plenty)
bench-llama: deps spm-py-deps llama  ## generate/perplexity at the 130M and 1.3B shapes (BIG=1: and 7B): import, RSS, tokens/s
	@PYTHON='$(PYTHON)' BUILD=$(BUILD) bash examples/bench/bench_llama.sh

# fbi_llm.hpp with nothing from examples/: it trains, packs and decodes an FBI-LLM on its own.
$(BUILD)/header_alone: tests/alone/header_alone.cpp $(HEADER) $(BUILD)/flags | deps
	$(CXX) $(CXXFLAGS) -isystem /usr/include/eigen3 $< -o $@ $(LDLIBS)

# ---- interrupted runs: 14 kills and Ctrl-Cs at chosen points, then outside signals; every file must come out
# byte-identical to an uninterrupted run's (tests/resume_kill.sh, ~15 s)
.PHONY: test-resume
test-resume: deps $(BUILD)/train_tiny  ## kill train_tiny at 14 points (and with outside signals), resume, compare with an uninterrupted run
	@bash tests/resume_kill.sh $(BUILD)

# ---- bad inputs through the examples: clear errors, nothing on disk damaged (tests/examples_bad_input.sh) -----
.PHONY: test-examples
test-examples: deps $(BUILD)/train_tiny $(BUILD)/sample  ## bad corpus/prompt/output/NaN through train_tiny and sample (~3 s)
	@bash tests/examples_bad_input.sh $(BUILD)

# ---- sanitize: the whole doctest suite, then test-examples, under AddressSanitizer + UndefinedBehaviorSanitizer
# A separate build tree (build/san), so the normal build is not touched. Any report stops the run with a
# nonzero exit (-fno-sanitize-recover=all; LeakSanitizer is on, as in ASan's default on Linux). The examples'
# reports go to build/san/examples_san.* (the bad-input checks expect nonzero exits, so a log is the signal).
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all -g
# (-Wno-uninitialized: GCC 12 warns inside Eigen's AVX-512 intrinsics once ASan instruments them; the normal build keeps the warning)
SAN_WARN  := -Wno-uninitialized
SAN_BUILD := $(BUILD)/san
SAN_OBJ   := $(TEST_SRC:tests/%.cpp=$(SAN_BUILD)/tests/%.o)

# The flags in one file, rewritten only when they change, so a change of target rebuilds build/san.
$(SAN_BUILD)/flags: FORCE
	@mkdir -p $(dir $@)
	@echo '$(SAN_CXXFLAGS) $(SAN_FLAGS)' | cmp -s - $@ || echo '$(SAN_CXXFLAGS) $(SAN_FLAGS)' > $@
.PHONY: FORCE
FORCE:

$(SAN_BUILD)/tests/%.o: tests/%.cpp tests/testing.hpp tests/interop_bytes.hpp $(HEADER) $(PLUGINS) $(INTEROP) $(SAN_BUILD)/flags | deps
	@mkdir -p $(dir $@)
	$(CXX) $(SAN_CXXFLAGS) -isystem /usr/include/eigen3 -O1 $(SAN_FLAGS) $(SAN_WARN) -c $< -o $@

$(SAN_BUILD)/run_tests: $(SAN_OBJ)
	$(CXX) $(SAN_CXXFLAGS) $(SAN_FLAGS) $^ -o $@ $(LDLIBS)

$(SAN_BUILD)/%: %.cpp $(EX_HDRS) $(HEADER) $(SAN_BUILD)/flags | deps
	@mkdir -p $(dir $@)
	$(CXX) $(SAN_CXXFLAGS) -isystem /usr/include/eigen3 -O1 $(SAN_FLAGS) $(SAN_WARN) $< -o $@ $(LDLIBS)

.PHONY: sanitize
sanitize: deps status $(SAN_BUILD)/run_tests $(SAN_BUILD)/train_tiny $(SAN_BUILD)/sample  ## the test suite and test-examples under ASan + UBSan (build/san); fails on any report
	@echo "sanitize: target $(SAN_ARCH_NAME) ($(or $(SAN_ARCH),the compiler's default)), not -march=native; ASan use-after-return on"
	@set -o pipefail; t0=$$(date +%s); \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} \
	  FBI_TEST_DIR=$(SAN_BUILD) ./$(SAN_BUILD)/run_tests $(ARGS) 2>&1 | tee $(SAN_BUILD)/sanitize.log; rc=$$?; \
	if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' $(SAN_BUILD)/sanitize.log; then \
	  echo "sanitize: ✗ a sanitizer reported an error (see $(SAN_BUILD)/sanitize.log)"; exit 1; fi; \
	if [ $$rc -ne 0 ]; then echo "sanitize: ✗ the test suite failed (exit $$rc)"; exit $$rc; fi; \
	rm -f $(SAN_BUILD)/examples_san.*; \
	ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:log_path=$(CURDIR)/$(SAN_BUILD)/examples_san \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(CURDIR)/$(SAN_BUILD)/examples_san \
	  bash tests/examples_bad_input.sh $(SAN_BUILD) | tail -1; rc=$$?; \
	if ls $(SAN_BUILD)/examples_san.* >/dev/null 2>&1; then \
	  echo "sanitize: ✗ a sanitizer reported an error in the examples:"; cat $(SAN_BUILD)/examples_san.* | head -30; exit 1; fi; \
	if [ $$rc -ne 0 ]; then echo "sanitize: ✗ tests/examples_bad_input.sh failed (run it: bash tests/examples_bad_input.sh $(SAN_BUILD))"; exit $$rc; fi; \
	echo "sanitize: ✓ ASan + UBSan clean: every doctest case and every bad-input check passed ($$(( $$(date +%s) - t0 )) s)"

# ---- fuzz: libFuzzer on the checkpoint and packed-model loaders (tests/fuzz/fuzz_loaders.cpp) -------------
# clang with -fsanitize=fuzzer,address,undefined; installed as root on Debian/Ubuntu (clang libclang-rt-dev)
# when missing. Seeds: small real files written by tests/fuzz/make_seeds.cpp; the corpus grows in
# build/fuzz/corpus and is kept between runs. A finding stops the run and leaves build/fuzz/crash-* etc.
FUZZ_CXX     ?= clang++
FUZZ_SECONDS ?= 60
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_FLAGS   := -std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
                $(SAN_ARCH) $(if $(EIGEN_INC),-isystem $(EIGEN_INC))
FUZZ_PROBE   := printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' | \
                $(FUZZ_CXX) -fsanitize=fuzzer -x c++ - -o /dev/null >/dev/null 2>&1

.PHONY: fuzz fuzz-deps
fuzz-deps:  ## check (and as root on Debian/Ubuntu, install) clang with libFuzzer
	@if $(FUZZ_PROBE); then echo "fuzz: ✓ $(FUZZ_CXX) -fsanitize=fuzzer"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "fuzz: installing clang libclang-rt-dev with apt-get ..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-dev) >/dev/null || exit 1; \
	  if $(FUZZ_PROBE); then echo "fuzz: ✓ installed"; exit 0; fi; \
	  echo "fuzz: ✗ $(FUZZ_CXX) still cannot build with -fsanitize=fuzzer (set FUZZ_CXX=clang++-NN)"; exit 1; \
	else \
	  echo "fuzz: ✗ clang++ with libFuzzer (-fsanitize=fuzzer) is missing. Install it with:"; \
	  echo "    Debian/Ubuntu:  sudo apt-get install -y clang libclang-rt-dev   (or set FUZZ_CXX=clang++-NN)"; \
	  exit 1; \
	fi

$(FUZZ_DIR)/fuzz_loaders: tests/fuzz/fuzz_loaders.cpp $(HEADER) $(PLUGINS) $(FUZZ_DIR)/flags | deps fuzz-deps
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) $< -o $@

$(FUZZ_DIR)/flags: FORCE
	@mkdir -p $(dir $@)
	@echo '$(FUZZ_CXX) $(FUZZ_FLAGS)' | cmp -s - $@ || echo '$(FUZZ_CXX) $(FUZZ_FLAGS)' > $@

$(FUZZ_DIR)/fuzz_interop: tests/fuzz/fuzz_interop.cpp $(INTEROP) $(HEADER) $(FUZZ_DIR)/flags | deps fuzz-deps
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) $< -o $@

$(FUZZ_DIR)/make_seeds: tests/fuzz/make_seeds.cpp tests/interop_bytes.hpp $(HEADER) $(PLUGINS) $(INTEROP) | deps
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -isystem /usr/include/eigen3 $< -o $@ $(LDLIBS)

fuzz: deps fuzz-deps $(FUZZ_DIR)/fuzz_loaders $(FUZZ_DIR)/fuzz_interop $(FUZZ_DIR)/make_seeds  ## fuzz the checkpoint and packed-model loaders, then the foreign-file readers, FUZZ_SECONDS (60) each
	@mkdir -p $(FUZZ_DIR)/seeds $(FUZZ_DIR)/corpus $(FUZZ_DIR)/interop_seeds $(FUZZ_DIR)/interop_corpus
	@./$(FUZZ_DIR)/make_seeds $(FUZZ_DIR)/seeds $(FUZZ_DIR)/interop_seeds
	@cd $(FUZZ_DIR) && ASAN_OPTIONS=detect_stack_use_after_return=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ./fuzz_loaders corpus seeds \
	  -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
	  -print_final_stats=1 -artifact_prefix=./ 2>&1 | tee fuzz.log | grep -E --line-buffered 'INITED|DONE|pulse|ERROR|FINDING|runtime error|Test unit written|stat::|Done'; \
	rc=$${PIPESTATUS[0]}; \
	if [ $$rc -ne 0 ]; then echo "fuzz: ✗ finding (exit $$rc); input and log in $(FUZZ_DIR)/ (crash-*, oom-*, timeout-*, fuzz.log)"; exit $$rc; fi; \
	echo "fuzz: ✓ no findings in $(FUZZ_SECONDS) s; corpus $$(ls corpus | wc -l) files in $(FUZZ_DIR)/corpus"
	@cd $(FUZZ_DIR) && ASAN_OPTIONS=detect_stack_use_after_return=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ./fuzz_interop interop_corpus interop_seeds \
	  -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
	  -print_final_stats=1 -artifact_prefix=./interop- 2>&1 | tee fuzz_interop.log | grep -E --line-buffered 'INITED|DONE|ERROR|FINDING|runtime error|Test unit written|stat::number_of_executed_units|Done'; \
	rc=$${PIPESTATUS[0]}; rm -f fuzz_interop.*.input; \
	if [ $$rc -ne 0 ]; then echo "fuzz: ✗ interop finding (exit $$rc); input and log in $(FUZZ_DIR)/ (interop-crash-*, fuzz_interop.log)"; exit $$rc; fi; \
	echo "fuzz: ✓ interop readers: no findings in $(FUZZ_SECONDS) s; corpus $$(ls interop_corpus | wc -l) files in $(FUZZ_DIR)/interop_corpus"

# ---- data: TinyShakespeare, downloaded once or taken from TINYSHAKESPEARE=/path ----------------------------
data:  ## fetch and verify the TinyShakespeare corpus (or check the local copy in $$TINYSHAKESPEARE)
	@sh data/get_tinyshakespeare.sh >/dev/null

# ---- training -----------------------------------------------------------------------------------------------
# TOKENIZER=bpe: the same pipeline on subword ids. spm_train learns a BPE vocabulary of BPE_VOCAB pieces (byte
# fallback, as LLaMA-2's) on the first 90% of the text (the training split; kept in OUT/bpe.model and reused, since
# spm_train is not deterministic and a resumed run needs the same ids); build/spm_tokenize encodes the whole text;
# train_tiny trains on the ids and reports validation loss per token and per character. OUT defaults to runs/tiny-bpe.
TOKENIZER ?= char
BPE_VOCAB ?= 1024
BPE_OUT    = $(if $(filter runs/tiny,$(OUT)),runs/tiny-bpe,$(OUT))
SPM_TRAIN_FLAGS = --model_type=bpe --vocab_size=$(BPE_VOCAB) --byte_fallback=true --character_coverage=1.0 \
  --normalization_rule_name=identity --remove_extra_whitespaces=false --add_dummy_prefix=false --minloglevel=2
train-tiny: deps status $(BUILD)/train_tiny $(if $(filter bpe,$(TOKENIZER)),$(BUILD)/spm_tokenize)  ## FP teacher then 1-bit student on TinyShakespeare (tiny config); TOKENIZER=bpe: on BPE ids
	@data="$$(sh data/get_tinyshakespeare.sh)" || exit 1; \
	case "$(TOKENIZER)" in \
	char) $(BIN)/train_tiny --data "$$data" --out $(OUT) $(TRAIN_ARGS) ;; \
	bpe) mkdir -p $(BPE_OUT) || exit 1; \
	  if [ ! -s $(BPE_OUT)/bpe.model ]; then \
	    head -c $$(( $$(wc -c < "$$data") * 9 / 10 )) "$$data" > $(BPE_OUT)/bpe_train.txt && \
	    spm_train --input=$(BPE_OUT)/bpe_train.txt --model_prefix=$(BPE_OUT)/bpe.tmp $(SPM_TRAIN_FLAGS) > $(BPE_OUT)/spm_train.log 2>&1 && \
	    mv $(BPE_OUT)/bpe.tmp.vocab $(BPE_OUT)/bpe.vocab && mv $(BPE_OUT)/bpe.tmp.model $(BPE_OUT)/bpe.model && rm -f $(BPE_OUT)/bpe_train.txt || \
	    { echo "spm_train failed (see $(BPE_OUT)/spm_train.log)"; exit 1; }; \
	    echo "bpe: trained $(BPE_OUT)/bpe.model ($(BPE_VOCAB) pieces) on the first 90% of the text"; \
	  else echo "bpe: reusing $(BPE_OUT)/bpe.model (delete it to train a new vocabulary)"; fi; \
	  $(BIN)/spm_tokenize --model $(BPE_OUT)/bpe.model --text "$$data" --out $(BPE_OUT)/corpus.fbitoks && \
	  $(BIN)/train_tiny --tokens $(BPE_OUT)/corpus.fbitoks --out $(BPE_OUT) $(TRAIN_ARGS) ;; \
	*) echo "TOKENIZER=$(TOKENIZER): char or bpe"; exit 2 ;; \
	esac

# ---- compare: one teacher, four students with the same budget (FBI, b1.58, DB + DAD), then one table --------------
# Each student is one train_tiny run (the teacher is trained by the first and reused by the others); compare
# reads their summaries and times GEMV and decoding in one process. Every student gets 1,500 steps (the budget),
# evaluation uses 500 evenly spaced validation windows (32,000 characters); COMPARE_ARGS go to every run last,
# so they can change either (e.g. COMPARE_ARGS="--student-steps 2000 --eval-windows 0").
COMPARE_OUT  ?= runs/compare
COMPARE_ARGS ?=
COMPARE_RUNS := fp32:ad fbi:ad b1.58:ad db:dad
compare: deps status $(BUILD)/train_tiny $(BUILD)/compare  ## FP, FBI, b1.58 and DB students vs one teacher: one table (≈ 12 min)
	@data="$$(sh data/get_tinyshakespeare.sh)" || exit 1; t0=$$(date +%s); \
	for run in $(COMPARE_RUNS); do \
	  echo "== compare: student $${run%%:*}, loss $${run##*:}"; \
	  $(BIN)/train_tiny --data "$$data" --out $(COMPARE_OUT) --student-quant $${run%%:*} --student-loss $${run##*:} \
	    --student-steps 1500 --eval-windows 500 --samples 120 $(COMPARE_ARGS) || exit 1; \
	done; \
	$(BIN)/compare --dir $(COMPARE_OUT) && echo "compare: total $$(( $$(date +%s) - t0 )) s"

TRAIN_SHAPES ?= tiny small wide
bench-train: deps status $(BUILD)/bench_train  ## one training step (TRAIN_SHAPES), 1 and 2 threads: tokens/s, % of FMA peak, phases, vs PyTorch
	@if $(PYTHON) -c 'import torch' 2> /dev/null; then \
	  $(PYTHON) examples/bench/bench_train_torch.py $(BUILD)/bench_train_torch.csv $(TRAIN_SHAPES) || exit 1; \
	else rm -f $(BUILD)/bench_train_torch.csv; \
	  echo "bench-train: $(PYTHON) has no torch, so no PyTorch column (apt-get install python3-torch; PYTHON=/usr/bin/python3)"; fi
	@$(BIN)/bench_train $(BUILD)/bench_train_torch.csv $(TRAIN_SHAPES)

bench: deps status $(BUILD)/bench_gemv $(BUILD)/bench_decode  ## packed 1-bit GEMV kernels; 130M and 1.3B decode + prefill vs fp32, E/H fp32·fp16·int8 (CSVs in build/)
	@$(BIN)/bench_gemv $(BUILD)/bench_gemv.csv
	@$(BIN)/bench_decode $(BUILD)/bench_decode.csv 2 full 130m
	@$(BIN)/bench_decode $(BUILD)/bench_decode.csv 2 full 1.3b

bench-import: deps interop-deps $(BUILD)/fbi_convert  ## import + pack a synthetic 130M FBI-LLM checkpoint (BIG=1: also 1.3B): time, peak RSS
	@PYTHON='$(PYTHON)' bash examples/bench/bench_import.sh $(BUILD)

clean:  ## remove build outputs (keeps runs/ and the downloaded corpus)
	rm -rf $(BUILD)

# =============================================================================================================
# ---- notebooks: notebooks/01_equations.ipynb (every METHOD NOTES equation vs numpy and PyTorch autograd),
# 02_training.ipynb (short teacher/student runs and plots) and 03_inference.ipynb (bit packing, popcount,
# GEMV and decode speed), executed headless and saved WITH their outputs.
# They need Debian's Python packages, which belong to /usr/bin/python3: run `make notebooks PYTHON=/usr/bin/python3`
# when the first python3 on PATH is another interpreter. OMP_NUM_THREADS defaults to 2 here.
NB_PKGS    := python3-numpy python3-matplotlib jupyter-nbconvert python3-nbclient python3-ipykernel python3-torch
NOTEBOOKS  := notebooks/01_equations.ipynb notebooks/02_training.ipynb notebooks/03_inference.ipynb
# A "python3" kernelspec pinned to $(PYTHON); JUPYTER_PATH is searched first, so the kernel runs the same
# interpreter as nbconvert (a user's own python3 kernel elsewhere cannot take its place).
NB_JUPYTER := $(BUILD)/jupyter

.PHONY: notebooks notebook-deps
notebook-deps:  ## check (and as root on Debian/Ubuntu, install) the Python packages the notebooks need
	@have() { $(PYTHON) -c 'import numpy, matplotlib, nbconvert, nbclient, ipykernel, torch' 2>/dev/null; }; \
	if have; then echo "notebooks: ✓ numpy matplotlib nbconvert nbclient ipykernel torch  ($(PYTHON))"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "notebooks: installing $(NB_PKGS) with apt-get ..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(NB_PKGS)) >/dev/null || exit 1; \
	  if have; then echo "notebooks: ✓ installed"; exit 0; fi; \
	fi; \
	echo "notebooks: ✗ $(PYTHON) cannot import numpy, matplotlib, nbconvert, nbclient, ipykernel and torch. Install them with:"; \
	echo "    Debian/Ubuntu:  sudo apt-get install -y $(NB_PKGS)"; \
	echo "    and run:        make notebooks PYTHON=/usr/bin/python3   (the interpreter those packages belong to)"; \
	exit 1

notebooks: notebook-deps status $(BUILD)/equations $(BUILD)/train_tiny $(BUILD)/packed_demo  ## execute the notebooks in place (PYTHON=/usr/bin/python3)
	@mkdir -p $(NB_JUPYTER)/kernels/python3
	@$(PYTHON) -c 'import json, sys; json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "Python 3 (ipykernel)", "language": "python"}, open(sys.argv[1], "w"), indent=1)' $(NB_JUPYTER)/kernels/python3/kernel.json
	@export JUPYTER_PATH="$(CURDIR)/$(NB_JUPYTER)$${JUPYTER_PATH:+:$$JUPYTER_PATH}" OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} \
	  PYDEVD_DISABLE_FILE_VALIDATION=1; \
	$(PYTHON) -c 'from jupyter_client.kernelspec import KernelSpecManager as K; print("notebooks: kernel python3 →", K().get_kernel_spec("python3").argv[0])'; \
	for nb in $(NOTEBOOKS); do \
	  t0=$$(date +%s); echo "== $$nb  (OMP_NUM_THREADS=$$OMP_NUM_THREADS)"; \
	  $(PYTHON) -m nbconvert --to notebook --execute --inplace --ExecutePreprocessor.kernel_name=python3 \
	    --ExecutePreprocessor.timeout=1200 $$nb || { echo "notebooks: ✗ $$nb failed (see the error above)"; exit 1; }; \
	  echo "   $$nb: ✓ executed in $$(( $$(date +%s) - t0 )) s"; \
	done
