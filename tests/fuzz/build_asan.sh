#!/bin/sh
# Build the C core with AddressSanitizer and UndefinedBehaviorSanitizer into a copy of the
# package (default build/asan/nfos; the checkout's own build is left alone), for the fuzzers:
#
#   sh tests/fuzz/build_asan.sh [OUT]
#   PYTHONPATH=OUT LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
#     UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 python tests/fuzz/fuzz_frames.py ...
#
# (tests/fuzz/run_fuzz.py does both.)  UBSan findings abort (-fno-sanitize-recover).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT/build/asan}
rm -rf "$OUT"
mkdir -p "$OUT"
cp -r "$ROOT/src/nfos" "$OUT/nfos"
rm -f "$OUT"/nfos/_core*.so
find "$OUT" -name __pycache__ -prune -exec rm -rf {} +
cd "$ROOT"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="$SAN -g" LDFLAGS="$SAN" python3 setup.py -q build_ext --build-temp "$OUT/tmp" --build-lib "$OUT" \
  2>&1 | grep -v -e _BetaConfiguration -e 'warnings.warn' || true
ls "$OUT"/nfos/_core*.so >/dev/null
echo "$OUT"
