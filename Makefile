# Entry points. Every target first runs scripts/setup.sh, which installs missing Debian
# packages (and returns at once when nothing is missing). The builds themselves are the CMake
# presets in CMakePresets.json; this file only strings them together.
#
#   make demo     build the release CLI and run inspect/convert/verify/diff/hash on tests/data
#   make test     debug build + every test, then the asan-ubsan build + every test again
#   make bench    release build + the benchmark (scratch files, ~4 GiB at peak, in /tmp)
#   make fuzz     build the libFuzzer targets with clang and run each for FUZZ_SECONDS
#   make format   clang-format -i over src tests bench fuzz
#   make clean    remove build folders and out/

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

FUZZ_SECONDS ?= 60
FORMAT_DIRS := src tests bench fuzz

.PHONY: help setup demo test test-debug test-asan bench fuzz format clean

help:
	@sed -n 's/^#   //p' Makefile

setup:
	@scripts/setup.sh

demo: setup
	cmake --preset release >/dev/null
	cmake --build --preset release --target modelport_cli
	scripts/demo.sh build-release/modelport out/demo

# Both halves run even if the first fails, so one `make test` shows every failure; the target
# fails if either did.
test: setup
	@rc=0; t0=$$(date +%s); \
	$(MAKE) --no-print-directory test-debug || rc=1; t1=$$(date +%s); \
	$(MAKE) --no-print-directory test-asan || rc=1; t2=$$(date +%s); \
	echo "make test: $$([ $$rc = 0 ] && echo PASSED || echo FAILED) in $$((t2 - t0)) s" \
	     "(debug $$((t1 - t0)) s, asan-ubsan $$((t2 - t1)) s; builds included)"; \
	exit $$rc

test-debug: setup
	@echo "== debug build and tests =="
	cmake --preset debug >/dev/null
	cmake --build --preset debug
	ctest --preset debug
	@# The reference evaluator's score on the ONNX node tests (docs/VALIDATION.md).
	@build/tests/modelport_tests --gtest_filter=OnnxConformance.NodeTestsOfSupportedOpsPass \
	  | sed -n '/^ONNX node conformance/,/^\[/p' | grep -v '^\[' || true

test-asan: setup
	@echo "== asan-ubsan build and tests =="
	cmake --preset asan-ubsan >/dev/null
	cmake --build --preset asan-ubsan
	ctest --preset asan-ubsan

bench: setup
	cmake --preset release >/dev/null
	cmake --build --preset release --target modelport_bench
	./build-release/bench/modelport_bench --dir /tmp/modelport-bench

fuzz: setup
	cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz
	@for target in build-fuzz/fuzz/*_fuzz; do \
	  name=$$(basename $$target _fuzz); \
	  mkdir -p out/fuzz/$$name/corpus; \
	  echo "== $$name: $(FUZZ_SECONDS) s (new inputs in out/fuzz/$$name/corpus) =="; \
	  dict=; [ -f fuzz/$$name.dict ] && dict=-dict=fuzz/$$name.dict; \
	  $$target -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$dict \
	    -artifact_prefix=out/fuzz/$$name/ out/fuzz/$$name/corpus fuzz/corpus/$$name; \
	done

format: setup
	find $(FORMAT_DIRS) \( -name '*.h' -o -name '*.cc' \) -print0 | xargs -0 -r clang-format -i

clean:
	rm -rf build build-release build-asan build-fuzz out
