#!/usr/bin/env bash
# bench/gpu_check.sh - one pass of every GPU check of pyseqrl on a fresh CUDA machine (H100/H200, sm_90), in at
# most 9 minutes, with no network. Needs python3 with a CUDA build of torch, nvcc, cmake and pytest; uses
# scikit-build-core, pybind11, ninja and compute-sanitizer when they are there.
#
#     OUT=/empty/folder bash bench/gpu_check.sh          # the real run (from any directory)
#     bash bench/gpu_check.sh --dry-run                  # rehearsal on a CPU machine (1-2 minutes)
#
# Stages, in this order. Each gets its own timeout, taken from one overall deadline (GPU_CHECK_SECONDS, default and
# at most 540 s) so that the later stages keep a minimum; a stage that fails or times out never stops the next.
#   env        nvidia-smi, driver, nvcc, cmake, python / torch / CUDA / cuDNN / transformers versions
#   build      pyseqrl with its CUDA kernels for sm_90 (CUDA_ARCH, default 90-real): `pip install -e .` through
#              scikit-build-core when it and pybind11 are installed; otherwise, or when that fails, a plain CMake
#              build of pyseqrl._core copied into pyseqrl/ (PYTHONPATH then points at the repository)
#   tests      pytest -m gpu -x -q on the test files that carry the gpu marker
#   sanitizer  compute-sanitizer memcheck, racecheck and synccheck on bench/gpu_check_tiny.py (every kernel once,
#              tiny shapes; only pyseqrl's kernels are instrumented when the sanitizer can filter by name)
#   attention  bench/bench_attention.py: the full matrix, pyseqrl kernel vs every SDPA backend
#   gpu_dt     bench/bench_gpu_dt.py: tiny-DT step table and a 10k-step graphed run
#   steps      bench/gpu_check_steps.py: DT, ChibiT-size and SmolLM2-size training steps at B=64, K=20 (random
#              weights; SDPA and pyseqrl attention; tf32 and bf16; eager and CUDA graph; left padding only)
#
# Output: at most 7 files in $OUT (default build/gpu_check): summary.md, build.log, tests.log, sanitizer.log,
# bench.log, steps.log, steps.json. The summary (device, driver, versions, status per stage, key numbers) is
# printed last. Exit status: 0 when no stage failed or timed out, 1 otherwise.
#
# Dry run (--dry-run or GPU_CHECK_DRY_RUN=1): stand-ins for nvidia-smi, nvcc and compute-sanitizer go first on
# PATH, CUDA is hidden (CUDA_VISIBLE_DEVICES=), the build is not run (the tools are detected, the pip command is
# printed, the CMake fallback is configured without CUDA in a temporary folder, and the installed pyseqrl._core is
# imported), and every Python stage runs its real script on the CPU: the gpu tests are collected and skip, the two
# benchmarks parse their arguments and stop at their CUDA check, the sanitizer workload and the step timing run
# with tiny shapes. It catches syntax slips, wrong paths and wrong arguments; it cannot see kernels, CUDA graphs,
# compute-sanitizer itself or the time the stages take on the GPU. OUT defaults to a new temporary folder there.
#
# Other settings: PYTHON (default python3), CUDA_ARCH (default 90-real), GPU_CHECK_ONLY (comma-separated stage
# names to run, e.g. "steps" or "tests,sanitizer" for a second pass on a machine that is still warm; the others are
# reported as skipped).

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h | --help) sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg' (only --dry-run)" >&2; exit 2 ;;
  esac
done
[ "${GPU_CHECK_DRY_RUN:-0}" = 1 ] && DRY=1

PY=${PYTHON:-python3}
ARCH=${CUDA_ARCH:-90-real}
TOTAL=${GPU_CHECK_SECONDS:-540}
[ "$TOTAL" -gt 540 ] && TOTAL=540
START=$(date +%s)
DEADLINE=$((START + TOTAL))
NPROC=$(nproc 2>/dev/null || echo 4)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ -z "${OUT:-}" ]; then
  if [ "$DRY" = 1 ]; then OUT=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_out.XXXXXX"); else OUT=$ROOT/build/gpu_check; fi
fi
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
: >"$WORK/stages.tsv"

export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1 \
  PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1

if [ "$DRY" = 1 ]; then
  # Stand-ins for the GPU tools; CUDA hidden from torch.
  FAKE=$WORK/fakebin
  mkdir -p "$FAKE"
  cat >"$FAKE/nvidia-smi" <<'EOF'
#!/bin/sh
# gpu_check.sh --dry-run stand-in for nvidia-smi
case "$*" in
  *--query-gpu*) echo "DRY-RUN stand-in GPU, 000.00.00, 0 MiB" ;;
  *) echo "nvidia-smi dry-run stand-in: no GPU" ;;
esac
EOF
  cat >"$FAKE/nvcc" <<'EOF'
#!/bin/sh
# gpu_check.sh --dry-run stand-in for nvcc (only --version is ever asked)
echo "nvcc dry-run stand-in"
echo "Cuda compilation tools, release 0.0 (dry-run stand-in)"
EOF
  cat >"$FAKE/compute-sanitizer" <<'EOF'
#!/bin/sh
# gpu_check.sh --dry-run stand-in for compute-sanitizer: runs the program itself under "memcheck" only.
tool=memcheck
case "$1" in
  --version) echo "compute-sanitizer dry-run stand-in"; exit 0 ;;
  --help) echo "  --kernel-name  --error-exitcode  (dry-run stand-in)"; exit 0 ;;
esac
while [ $# -gt 0 ]; do
  case "$1" in
    --tool) tool=$2; shift 2 ;;
    --*) shift 2 ;;  # every option gpu_check.sh passes takes a value
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "compute-sanitizer stand-in: no program given" >&2; exit 2; }
rc=0
if [ "$tool" = memcheck ]; then "$@"; rc=$?; else echo "(dry run: $tool would run $*)"; fi
echo "========= ERROR SUMMARY: 0 errors"
exit $rc
EOF
  chmod +x "$FAKE"/*
  # One CPU thread per process: on a small shared machine, torch's thread pool otherwise spins against itself.
  export PATH="$FAKE:$PATH" CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  DEV=cpu
else
  DEV=cuda
  # A core built earlier by the CMake fallback (a second pass on the same machine) is found through PYTHONPATH.
  if compgen -G "$ROOT/pyseqrl/_core*.so" >/dev/null; then export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"; fi
  if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
fi

# ------------------------------------------------------------------------------------------------ helpers
ONLY=${GPU_CHECK_ONLY:-}
selected() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

say() { echo "[gpu_check +$(($(date +%s) - START))s] $*"; }

# record NAME STATUS T0 NOTE: one line of the summary table
record() {
  local secs=$(($(date +%s) - $3))
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$secs" "$4" >>"$WORK/stages.tsv"
  say "$1: $2 (${secs} s) $4"
}

# budget CAP RESERVE: seconds for the next stage, at most CAP, leaving RESERVE seconds to the stages after it
budget() {
  local left=$((DEADLINE - $(date +%s) - $2))
  [ "$left" -gt "$1" ] && left=$1
  echo "$left"
}

# status_of RC: PASS, TIMEOUT or FAIL(rc)
status_of() {
  case "$1" in
    0) echo PASS ;;
    124 | 137) echo TIMEOUT ;;
    *) echo "FAIL(rc=$1)" ;;
  esac
}

# run_limited SECONDS LOG CMD...: the command under a timeout, output appended to LOG; returns its status
run_limited() {
  local secs=$1 log=$2
  shift 2
  echo "+ $* (time limit ${secs} s)" >>"$log"
  timeout -k 5 "$secs" "$@" >>"$log" 2>&1
}

# Minimum seconds each later stage keeps (the deadline reserves them), and the summary's share.
MIN_TESTS=30 MIN_SAN=30 MIN_ATT=30 MIN_DT=30 MIN_STEPS=40 MIN_SUMMARY=15

# ------------------------------------------------------------------------------------------------ stages
stage_env() {
  local t0
  t0=$(date +%s)
  # (always runs: the summary starts with it)
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); host $(uname -m), $NPROC CPUs; repo $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    if command -v nvidia-smi >/dev/null 2>&1; then
      echo "gpu (nvidia-smi): $(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 2 | tr '\n' ' ')"
    else
      echo "gpu (nvidia-smi): not found"
    fi
    echo "nvcc: $(timeout 20 nvcc --version 2>/dev/null | grep -i release | head -n 1 || true)"
    echo "cmake: $(cmake --version 2>/dev/null | head -n 1 || echo 'not found')"
    echo "compute-sanitizer: $(timeout 20 compute-sanitizer --version 2>/dev/null | grep -v '^$' | tail -n 1 || echo 'not found')"
    timeout 60 "$PY" bench/gpu_check_summary.py env 2>&1 | tail -n 8
  } >"$WORK/env.txt" 2>&1
  record env PASS "$t0" "see the top of summary.md"
}

verify_core() ( # prints what pyseqrl._core is; fails unless it has the CUDA kernels
  "$PY" - <<'EOF'
import sys
import pyseqrl._core as c
cuda = bool(getattr(c, "with_cuda", False)) and hasattr(c, "cuda")
dims = getattr(getattr(c, "cuda", None), "attention_head_dims", None)
print(f"pyseqrl._core: {c.__file__}; with_cuda={cuda}; attention head dims {dims}")
sys.exit(0 if cuda else 3)
EOF
)

stage_build() {
  local t0 log=$OUT/build.log b rc have_skb=0 have_pyb=0 gen=() note route
  t0=$(date +%s)
  selected build || { record build SKIP "$t0" "not selected (GPU_CHECK_ONLY)"; return; }
  b=$(budget 240 $((MIN_TESTS + MIN_SAN + MIN_ATT + MIN_DT + MIN_STEPS + MIN_SUMMARY)))
  local stage_end=$((t0 + b))
  : >"$log"
  "$PY" -c 'import scikit_build_core' >/dev/null 2>&1 && have_skb=1
  "$PY" -c 'import pybind11' >/dev/null 2>&1 && have_pyb=1
  {
    echo "scikit-build-core: $([ $have_skb = 1 ] && "$PY" -c 'import scikit_build_core as m; print(m.__version__)' || echo missing)"
    echo "pybind11: $([ $have_pyb = 1 ] && "$PY" -c 'import pybind11 as m; print(m.__version__)' || echo missing)"
    echo "ninja: $(command -v ninja || echo missing); cmake: $(command -v cmake || echo missing); nvcc: $(command -v nvcc || echo missing)"
  } >>"$log"
  command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
  local pip_cmd=("$PY" -m pip install --no-index --no-build-isolation --no-deps -v -e .
    -C "cmake.define.CMAKE_CUDA_ARCHITECTURES=$ARCH")
  local cmake_dir=$ROOT/build/gpu-check-cmake
  local cmake_cfg=(cmake -S "$ROOT" -B "$cmake_dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DPYSEQRL_CUDA=ON
    "-DCMAKE_CUDA_ARCHITECTURES=$ARCH" "-DPython_EXECUTABLE=$(command -v "$PY")")

  if [ "$DRY" = 1 ]; then
    echo "dry run: would run PYSEQRL_CUDA=ON CUDACXX=\$(command -v nvcc) ${pip_cmd[*]}" >>"$log"
    rc=1
    if [ $have_pyb = 1 ] && command -v cmake >/dev/null 2>&1; then
      local dry_dir=$WORK/cmake-dry
      run_limited "$b" "$log" cmake -S "$ROOT" -B "$dry_dir" "${gen[@]}" -DPYSEQRL_CUDA=OFF \
        "-DPython_EXECUTABLE=$(command -v "$PY")" "-Dpybind11_DIR=$("$PY" -m pybind11 --cmakedir)"
      rc=$?
      echo "dry run: the CMake fallback configures (without CUDA): rc=$rc" >>"$log"
    else
      echo "dry run: pybind11 or cmake missing: the CMake fallback could not run" >>"$log"
    fi
    # from outside the source tree, which would otherwise shadow an installed (non-editable) wheel
    "$PY" -c 'import pyseqrl._core as c; print("installed pyseqrl._core:", c.__file__, "with_cuda =", c.with_cuda)' >>"$log" 2>&1
    local rc2=$?
    [ $rc = 0 ] && [ $rc2 = 0 ] && record build PASS "$t0" "dry run: tools detected, fallback configured, core imports" ||
      record build "FAIL(rc=$rc/$rc2)" "$t0" "dry run; see build.log"
    return
  fi

  if ! command -v nvcc >/dev/null 2>&1; then
    echo "nvcc not found on PATH nor in /usr/local/cuda/bin: the kernels cannot be built" >>"$log"
    record build FAIL "$t0" "no nvcc"
    return
  fi
  export CUDACXX
  CUDACXX=$(command -v nvcc)
  export CMAKE_BUILD_PARALLEL_LEVEL=$NPROC

  rc=1 route=""
  if [ $have_skb = 1 ] && [ $have_pyb = 1 ]; then
    route="pip -e (scikit-build-core)"
    echo "=== route 1: $route" >>"$log"
    PYSEQRL_CUDA=ON run_limited "$b" "$log" "${pip_cmd[@]}"
    rc=$?
    [ $rc = 0 ] && { verify_core >>"$log" 2>&1; rc=$?; }
    if [ $rc != 0 ]; then
      echo "=== route 1 failed (rc=$rc); removing it before the CMake fallback" >>"$log"
      timeout 60 "$PY" -m pip uninstall -y pyseqrl >>"$log" 2>&1
    fi
  else
    echo "=== route 1 (pip) impossible: scikit-build-core or pybind11 missing" >>"$log"
  fi
  if [ $rc != 0 ]; then
    if [ $have_pyb = 0 ]; then
      echo "=== route 2 (CMake) impossible too: pybind11 is missing (carry its wheel, or install it)" >>"$log"
      record build FAIL "$t0" "no pybind11: neither pip nor CMake can build; see build.log"
      return
    fi
    route="plain CMake, _core copied into pyseqrl/"
    echo "=== route 2: $route" >>"$log"
    b=$((stage_end - $(date +%s)))
    if [ "$b" -lt 30 ]; then
      record build TIMEOUT "$t0" "no time left for the CMake fallback; see build.log"
      return
    fi
    run_limited "$b" "$log" "${cmake_cfg[@]}" "-Dpybind11_DIR=$("$PY" -m pybind11 --cmakedir)" &&
      run_limited $((stage_end - $(date +%s))) "$log" cmake --build "$cmake_dir" --target _core -j "$NPROC"
    rc=$?
    if [ $rc = 0 ]; then
      cp -f "$cmake_dir"/_core*.so "$ROOT/pyseqrl/" >>"$log" 2>&1
      export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
      verify_core >>"$log" 2>&1
      rc=$?
    fi
  fi
  note="$route; $(grep -h '^pyseqrl._core:' "$log" | tail -n 1 | sed 's/^pyseqrl._core: [^;]*; //')"
  record build "$(status_of $rc)" "$t0" "$note"
}

stage_tests() {
  local t0 log=$OUT/tests.log b rc files status
  t0=$(date +%s)
  selected tests || { record tests SKIP "$t0" "not selected (GPU_CHECK_ONLY)"; return; }
  b=$(budget 120 $((MIN_SAN + MIN_ATT + MIN_DT + MIN_STEPS + MIN_SUMMARY)))
  files=$(grep -l 'mark\.gpu' tests/test_*.py | tr '\n' ' ')
  if [ -z "$files" ]; then
    record tests "FAIL(no gpu-marked test files)" "$t0" "grep found no 'mark.gpu' in tests/test_*.py"
    return
  fi
  if [ "$b" -lt 10 ]; then
    record tests TIMEOUT "$t0" "no time left"
    return
  fi
  # shellcheck disable=SC2086 # the file list is meant to split
  run_limited "$b" "$log" "$PY" -m pytest -m gpu -x -q -p no:cacheprovider --durations=10 $files
  rc=$?
  status=$(status_of $rc)
  if [ $rc = 0 ] && [ "$DRY" = 0 ] && grep -qE '[0-9]+ skipped' "$log"; then status=WARN; fi
  [ $rc = 5 ] && status="FAIL(no tests collected)"
  record tests "$status" "$t0" "$(grep -E '[0-9]+ (passed|failed|skipped|errors?)' "$log" | tail -n 1 | tr -d '=' | sed 's/^ *//')"
}

stage_sanitizer() {
  local t0 log=$OUT/sanitizer.log b rc tool worst=0 filter=() done_tools="" cs
  t0=$(date +%s)
  selected sanitizer || { record sanitizer SKIP "$t0" "not selected (GPU_CHECK_ONLY)"; return; }
  : >"$log"
  cs=$(command -v compute-sanitizer || true)
  [ -z "$cs" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && cs=/usr/local/cuda/bin/compute-sanitizer
  if [ -z "$cs" ]; then
    record sanitizer SKIP "$t0" "compute-sanitizer not found"
    return
  fi
  # Instrument pyseqrl's kernels only (all live in namespace pyseqrl) when this sanitizer can filter by name.
  if "$cs" --help 2>/dev/null | grep -q -- '--kernel-name'; then filter=(--kernel-name kns=pyseqrl); fi
  for tool in memcheck racecheck synccheck; do
    b=$(budget 60 $((MIN_ATT + MIN_DT + MIN_STEPS + MIN_SUMMARY)))
    if [ "$b" -lt 15 ]; then
      echo "### $tool: skipped, no time left" >>"$log"
      worst=124
      continue
    fi
    echo "### $tool" >>"$log"
    # Uncached allocations: memcheck then sees each tensor's exact bounds.
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 run_limited "$b" "$log" "$cs" --tool "$tool" --error-exitcode 86 \
      "${filter[@]}" "$PY" bench/gpu_check_tiny.py --device "$DEV"
    rc=$?
    echo "### $tool: rc=$rc" >>"$log"
    done_tools="$done_tools $tool:$(status_of $rc)"
    [ $rc != 0 ] && worst=$rc
  done
  record sanitizer "$(status_of $worst)" "$t0" "${done_tools# }${filter:+ (pyseqrl kernels only)}"
}

# bench_stage NAME CAP RESERVE ARGS...: one benchmark script, appended to bench.log
bench_stage() {
  local name=$1 cap=$2 reserve=$3 t0 log=$OUT/bench.log b rc status
  shift 3
  t0=$(date +%s)
  selected "$name" || { record "$name" SKIP "$t0" "not selected (GPU_CHECK_ONLY)"; return; }
  b=$(budget "$cap" "$reserve")
  echo "######## $name" >>"$log"
  if [ "$b" -lt 10 ]; then
    record "$name" TIMEOUT "$t0" "no time left"
    return
  fi
  run_limited "$b" "$log" "$PY" "$@"
  rc=$?
  status=$(status_of $rc)
  if [ "$DRY" = 1 ] && [ $rc = 1 ] && tail -n 1 "$log" | grep -q 'needs a CUDA GPU'; then
    record "$name" PASS "$t0" "dry run: arguments parsed, stopped at the CUDA check as expected"
    return
  fi
  record "$name" "$status" "$t0" "$1"
}

stage_steps() {
  local t0 log=$OUT/steps.log b rc tiny=()
  t0=$(date +%s)
  selected steps || { record steps SKIP "$t0" "not selected (GPU_CHECK_ONLY)"; return; }
  b=$(budget 170 "$MIN_SUMMARY")
  if [ "$b" -lt 20 ]; then
    record steps TIMEOUT "$t0" "no time left"
    return
  fi
  [ "$DRY" = 1 ] && tiny=(--tiny)
  run_limited "$b" "$log" "$PY" bench/gpu_check_steps.py --device "$DEV" "${tiny[@]}" --budget $((b - 12)) \
    --json "$OUT/steps.json"
  rc=$?
  record steps "$(status_of $rc)" "$t0" "$(grep -E 'variant\(s\) timed' "$log" | tail -n 1)"
}

# ------------------------------------------------------------------------------------------------ run
say "pyseqrl GPU check$([ "$DRY" = 1 ] && echo ' (DRY RUN)'), repo $ROOT, output $OUT, deadline in ${TOTAL} s"
stage_env
stage_build
stage_tests
stage_sanitizer
bench_stage attention 90 $((MIN_DT + MIN_STEPS + MIN_SUMMARY)) bench/bench_attention.py
bench_stage gpu_dt 75 $((MIN_STEPS + MIN_SUMMARY)) bench/bench_gpu_dt.py --steps 200000 --time-steps 100 \
  --repeat 3 --run-steps 10000
stage_steps

echo
"$PY" bench/gpu_check_summary.py summary --work "$WORK" --out "$OUT" $([ "$DRY" = 1 ] && echo --dry-run) ||
  { echo "(summary script failed; stage table follows)"; cat "$WORK/stages.tsv"; }
say "done in $(($(date +%s) - START)) s"
if grep -qE $'\t(FAIL|TIMEOUT)' "$WORK/stages.tsv"; then exit 1; fi
exit 0
