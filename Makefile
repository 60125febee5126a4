# Entry points for people and CI; the build itself is CMake (build/, and
# build-asan/ for the AddressSanitizer + UBSan build the tests also run under).
JOBS ?= $(shell nproc)

.PHONY: all deps build build-asan check demo bench-ivc bench-mpi bench-boot bench-images bench-dist clean format

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build -j $(JOBS)

build-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DVHPC_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j $(JOBS)

# Every test, in the normal build and again under ASan/UBSan.
check: build build-asan
	@scripts/check.sh build build-asan

demo: build
	@scripts/demo.sh build

bench-ivc: build
	@bench/run_ivc.sh build

bench-mpi: build
	@bench/run_mpi.sh build

bench-boot: build
	@bench/run_boot.sh build

bench-images: build
	@bench/run_images.sh build

bench-dist: build
	@bench/run_dist.sh build

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan
