# Entry points for people and CI; the build itself is CMake (build/, and
# build-asan/ for the AddressSanitizer + UBSan build the tests also run under,
# build-fuzz/ for the libFuzzer fuzzers, built with clang).
JOBS ?= $(shell nproc)

.PHONY: all deps build build-asan build-fuzz check fuzz demo bench-ivc bench-mpi bench-apps bench-boot bench-images bench-dist clean format

all: build

deps:
	@scripts/deps.sh

# Building installs nothing; demo, check, fuzz and the benchmarks first
# install what is missing (apt-get, scripts/deps.sh).  Compiler output goes
# to DIR/build.log (its errors are shown when a build fails).
build:
	@JOBS=$(JOBS) scripts/build.sh build -DCMAKE_BUILD_TYPE=RelWithDebInfo

build-asan:
	@JOBS=$(JOBS) scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DVHPC_SANITIZE=ON

build-fuzz:
	@JOBS=$(JOBS) scripts/build.sh build-fuzz -DCMAKE_C_COMPILER=clang \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo -DVHPC_FUZZ=ON

# Every test, in the normal build and again under ASan/UBSan, then every
# fuzzer for 20 s (two at a time) from its committed corpus.
check: deps
	@$(MAKE) --no-print-directory build build-asan build-fuzz
	@scripts/check.sh build build-asan build-fuzz

# The fuzzers for longer: FUZZ_TIME seconds each (default 300), or only
# some: make fuzz FUZZ_TARGETS="agent dist".
FUZZ_TIME ?= 300
fuzz: deps
	@$(MAKE) --no-print-directory build-fuzz
	@FUZZ_TIME=$(FUZZ_TIME) scripts/fuzz.sh build-fuzz $(FUZZ_TARGETS)

demo: deps
	@$(MAKE) --no-print-directory build
	@scripts/demo.sh build

bench-ivc: deps
	@$(MAKE) --no-print-directory build
	@bench/run_ivc.sh build

bench-mpi: deps
	@$(MAKE) --no-print-directory build
	@bench/run_mpi.sh build

bench-apps: deps
	@$(MAKE) --no-print-directory build
	@bench/run_apps.sh build

bench-boot: deps
	@$(MAKE) --no-print-directory build
	@bench/run_boot.sh build

bench-images: deps
	@$(MAKE) --no-print-directory build
	@bench/run_images.sh build

bench-dist: deps
	@$(MAKE) --no-print-directory build
	@bench/run_dist.sh build

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz
