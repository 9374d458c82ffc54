#!/usr/bin/env bash
# pbip GPU bundle launcher (built by `npm run bundle:gpu` from scripts/gpu-bundle/run.sh).
# Runs pbip on a Linux x86-64 machine that has only a GPU driver: no Node.js, no
# network. On first use it unpacks payload.tar.xz (Node.js, Dawn, the Vulkan loader,
# sharp/libvips, the bundled MobileNetV2) into a cache folder.
#
#   ./run.sh bench [--smoke] [--full] [--reps N] [--only CASES] ...   training-step and CAM benchmark (WebGPU)
#   ./run.sh demo [--quick]                                          the embedded demo, CLI stages in order, headless
#   ./run.sh probe                                                   only report the GPU adapter
#   ./run.sh pbip <command> [options]                                any pbip command (pbip help lists them)
#
# Options every command takes:
#   --allow-software   run even when the WebGPU adapter is a software rasteriser
#                      (llvmpipe/lavapipe, SwiftShader); without it such an adapter is refused
#   --out DIR          where results go (default: $PBIP_OUT, else ./pbip-runs)
# Environment:
#   VK_ICD_FILENAMES   Vulkan driver JSON(s) to use (default: found below, NVIDIA preferred)
#   PBIP_BACKEND       compute backend (default webgpu; wasm runs on the CPU)
#   PBIP_GPU_CACHE     where the payload is unpacked (default ${XDG_CACHE_HOME:-~/.cache}/pbip-gpu)
#   PBIP_VULKAN_LOADER=system   use the system's libvulkan.so.1 instead of the bundled one
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
say() { printf 'run.sh: %s\n' "$*" >&2; }
die() {
  say "$*"
  exit 2
}

usage() {
  sed -n '2,21p' "$here/run.sh" | sed 's/^# \{0,1\}//'
}

cmd="${1:-help}"
[ $# -gt 0 ] && shift
allow_software=0
out_root="${PBIP_OUT:-$PWD/pbip-runs}"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --allow-software) allow_software=1 ;;
    --out)
      [ $# -ge 2 ] || die "--out needs a folder"
      out_root="$2"
      shift
      ;;
    *) args+=("$1") ;;
  esac
  shift
done
case "$cmd" in
  help | -h | --help)
    usage
    exit 0
    ;;
  bench | demo | probe | pbip) ;;
  *) die "unknown command \"$cmd\" (use bench, demo, probe or pbip; ./run.sh help)" ;;
esac

[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || die "this bundle is for Linux x86-64 (this is $(uname -s)-$(uname -m))"
manifest="$here/manifest.json"
[ -f "$manifest" ] || die "$manifest is missing: the bundle is incomplete"
bundle_id="$(sed -n 's/^  "id": *"\([^"]*\)".*/\1/p' "$manifest" | head -n 1)"
payload_name="$(sed -n 's/^ *"file": *"\(payload\.[^"]*\)".*/\1/p' "$manifest" | head -n 1)"
[ -n "$bundle_id" ] && [ -n "$payload_name" ] || die "$manifest: cannot read the bundle id and payload name"
payload="$here/$payload_name"
[ -f "$payload" ] || die "$payload is missing: the bundle is incomplete"

# ------------------------------------------------------------------ unpack (once per bundle id)
writable_dir() { mkdir -p "$1" 2>/dev/null && [ -w "$1" ]; }
if [ -n "${PBIP_GPU_CACHE:-}" ]; then
  cache_root="$PBIP_GPU_CACHE"
elif [ -n "${HOME:-}" ] && writable_dir "${XDG_CACHE_HOME:-$HOME/.cache}/pbip-gpu"; then
  cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/pbip-gpu"
else
  cache_root="${TMPDIR:-/tmp}/pbip-gpu-$(id -u)"
fi
writable_dir "$cache_root" || die "cannot write the unpack folder $cache_root (set PBIP_GPU_CACHE to a writable folder)"
dest="$cache_root/$bundle_id"

extract() { # payload -> folder
  case "$1" in
    *.tar.xz)
      if command -v xz >/dev/null 2>&1; then
        xz -dc "$1" | tar -x -C "$2"
      elif command -v python3 >/dev/null 2>&1; then
        python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$1" "$2"
      else
        die "unpacking $1 needs xz or python3 (neither found)"
      fi
      ;;
    *.tar.gz) gzip -dc "$1" | tar -x -C "$2" ;;
    *) die "unknown payload format: $1" ;;
  esac
}

if [ ! -f "$dest/.complete" ]; then
  say "first run: unpacking $payload_name into $dest"
  tmp="$(mktemp -d "$cache_root/.unpack.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  extract "$payload" "$tmp"
  "$tmp/bin/node" --version >/dev/null 2>&1 || die "the bundled Node.js does not start here: $("$tmp/bin/node" --version 2>&1 | head -n 3) (it needs glibc >= 2.28 and libstdc++)"
  touch "$tmp/.complete"
  if ! mv -T "$tmp" "$dest" 2>/dev/null; then
    # Another run unpacked it meanwhile.
    [ -f "$dest/.complete" ] || die "cannot move the unpacked payload to $dest"
    rm -rf "$tmp"
  fi
  trap - EXIT
fi
node="$dest/bin/node"
pbip_js="$here/app/pbip.cjs"

# ------------------------------------------------------------------ the Vulkan driver
icd_dirs=(/usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d /usr/local/etc/vulkan/icd.d
  /usr/local/nvidia/share/vulkan/icd.d /usr/local/nvidia/icd.d /usr/lib/nvidia/vulkan/icd.d)
if [ -n "${XDG_DATA_DIRS:-}" ]; then
  IFS=: read -r -a xdg <<<"$XDG_DATA_DIRS"
  for d in "${xdg[@]}"; do icd_dirs+=("$d/vulkan/icd.d"); done
fi
icd_source=""
if [ -n "${VK_ICD_FILENAMES:-}" ]; then
  icd_source="VK_ICD_FILENAMES"
elif [ -n "${VK_DRIVER_FILES:-}" ]; then
  VK_ICD_FILENAMES="$VK_DRIVER_FILES"
  icd_source="VK_DRIVER_FILES"
else
  nvidia=()
  others=()
  for d in "${icd_dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/*.json; do
      [ -f "$f" ] || continue
      case "$(basename "$f")" in
        *nvidia*) nvidia+=("$f") ;;
        *) others+=("$f") ;;
      esac
    done
  done
  if [ ${#nvidia[@]} -gt 0 ]; then
    VK_ICD_FILENAMES="${nvidia[0]}"
    icd_source="found (NVIDIA preferred)"
  elif [ ${#others[@]} -gt 0 ]; then
    VK_ICD_FILENAMES="$(IFS=:; echo "${others[*]}")"
    icd_source="found (no NVIDIA driver JSON)"
  fi
fi
if [ -n "${VK_ICD_FILENAMES:-}" ]; then
  export VK_ICD_FILENAMES
  export VK_DRIVER_FILES="$VK_ICD_FILENAMES"
  IFS=: read -r -a icds <<<"$VK_ICD_FILENAMES"
  for f in "${icds[@]}"; do
    lib="$(sed -n 's/.*"library_path": *"\([^"]*\)".*/\1/p' "$f" 2>/dev/null | head -n 1)"
    say "Vulkan driver ($icd_source): $f${lib:+ -> $lib}"
  done
else
  say "no Vulkan driver JSON found in ${icd_dirs[*]}"
  say "  NVIDIA: the driver installs nvidia_icd.json (package libnvidia-gl-* / nvidia-vulkan-icd); in a container,"
  say "  NVIDIA_DRIVER_CAPABILITIES must include 'graphics' (or 'all'); or set VK_ICD_FILENAMES to the JSON"
fi
# Libraries a vendor's driver loads besides itself (glvnd's dispatcher and EGL, X11
# client libraries): NVIDIA's ICD yields no vkCreateInstance without glvnd, which a
# machine with only the driver mounted may lack. The system's copies win; the
# bundled ones (Debian 12) fill in only the sonames the system cannot resolve.
have_lib() { # soname -> found in the linker cache or on LD_LIBRARY_PATH
  local so="$1" d
  if [ -n "${LD_LIBRARY_PATH:-}" ]; then
    IFS=: read -r -a lp <<<"$LD_LIBRARY_PATH"
    for d in "${lp[@]}"; do [ -n "$d" ] && [ -e "$d/$so" ] && return 0; done
  fi
  [ -n "$ldcache" ] && grep -q "^[[:space:]]*$so (.*x86-64" <<<"$ldcache"
}
ldconfig_bin="$(command -v ldconfig || true)"
for c in /sbin/ldconfig /usr/sbin/ldconfig; do [ -z "$ldconfig_bin" ] && [ -x "$c" ] && ldconfig_bin="$c"; done
ldcache="$([ -n "$ldconfig_bin" ] && "$ldconfig_bin" -p 2>/dev/null || true)"
[ -n "$ldcache" ] || say "cannot read the linker cache (ldconfig -p): using every bundled driver companion library"
missing=()
if [ -d "$dest/lib/fill" ]; then
  for f in "$dest/lib/fill"/*; do
    so="$(basename "$f")"
    have_lib "$so" || missing+=("$so")
  done
fi
fill=""
if [ ${#missing[@]} -gt 0 ]; then
  fill="$dest/fill-$(printf '%s\n' "${missing[@]}" | cksum | cut -d' ' -f1)"
  if [ ! -d "$fill" ]; then
    # A folder of links to the missing ones, made once per set (beside the unpacked
    # payload, or in a temporary folder when that is not writable).
    if tmpfill="$(mktemp -d "$dest/.fill.XXXXXX" 2>/dev/null)"; then
      for so in "${missing[@]}"; do ln -s "$dest/lib/fill/$so" "$tmpfill/$so"; done
      mv -T "$tmpfill" "$fill" 2>/dev/null || rm -rf "$tmpfill"
    else
      fill="$(mktemp -d)"
      for so in "${missing[@]}"; do ln -s "$dest/lib/fill/$so" "$fill/$so"; done
    fi
  fi
  say "the system lacks ${missing[*]}: using the bundled copies (Debian 12)"
fi
if [ "${PBIP_VULKAN_LOADER:-bundled}" != "system" ]; then
  export LD_LIBRARY_PATH="$dest/lib${fill:+:$fill}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
elif [ -n "$fill" ]; then
  export LD_LIBRARY_PATH="$fill${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export NODE_PATH="$dest/modules"
export PBIP_WASM_DIR="$here/app"
export PBIP_CACHE="${PBIP_CACHE:-$cache_root/cache}"
export PBIP_BACKEND="${PBIP_BACKEND:-webgpu}"
export PBIP_GPU_BUNDLE="$bundle_id"
mkdir -p "$PBIP_CACHE"

pbip() { "$node" "$pbip_js" "$@"; }
require_gpu=()
[ "$allow_software" = 1 ] || require_gpu=(--require-gpu)
stamp="$(date -u +%Y-%m-%dT%H-%M-%S)"

probe() {
  local code=0
  pbip bench --probe ${require_gpu[@]+"${require_gpu[@]}"} >/dev/null || code=$?
  if [ "$code" = 3 ]; then
    say "refusing to run on a software adapter as if it were a GPU; pass --allow-software to run anyway"
    exit 3
  elif [ "$code" != 0 ]; then
    say "the $PBIP_BACKEND backend did not start (exit $code)"
    exit "$code"
  fi
}

case "$cmd" in
  probe)
    probe
    ;;
  pbip)
    exec "$node" "$pbip_js" ${args[@]+"${args[@]}"}
    ;;
  bench)
    out="$out_root/bench/$stamp/bench.json"
    code=0
    pbip bench ${require_gpu[@]+"${require_gpu[@]}"} --out "$out" ${args[@]+"${args[@]}"} || code=$?
    if [ "$code" = 3 ]; then
      say "refusing to run on a software adapter as if it were a GPU; pass --allow-software to run anyway"
    fi
    exit "$code"
    ;;
  demo)
    quick=0
    for a in ${args[@]+"${args[@]}"}; do
      case "$a" in
        --quick) quick=1 ;;
        *) die "demo: unknown option $a (demo takes --quick, --out DIR, --allow-software)" ;;
      esac
    done
    # The stages, in order; every one must exist in this build of pbip.
    stages=("data synth" "bank build" "train" "cam" "eval" "seg train" "seg predict")
    missing=()
    for s in "${stages[@]}"; do
      # shellcheck disable=SC2086
      pbip $s --help >/dev/null 2>&1 || missing+=("pbip $s")
    done
    [ ${#missing[@]} -eq 0 ] || die "demo: this build lacks the stage(s): ${missing[*]} (rebuild the bundle from a pbip that has them)"
    probe
    run="$out_root/demo/$stamp"
    data="$run/data"
    mkdir -p "$run"
    if [ "$quick" = 1 ]; then
      sizes=(--train 48 --val 16 --test 16 --size 112)
      steps=(--epochs 1 --max-steps 4)
    else
      sizes=(--train 1000 --val 100 --test 100)
      steps=()
    fi
    stage() {
      say "== pbip $*"
      pbip "$@" || die "demo: stage \`pbip $1${2:+ $2}\` failed (its output is above); results so far are in $run"
    }
    stage data synth --out "$data" "${sizes[@]}" --seed 0 --quiet
    stage bank build --data "$data" --dataset synthetic --profile notebook --out "$run/bank"
    stage train --data "$data" --dataset synthetic --bank "$run/bank" --profile notebook --out "$run/stage1" ${steps[@]+"${steps[@]}"}
    stage cam --checkpoint "$run/stage1/best.safetensors" --bank "$run/bank" --data "$data" --dataset synthetic --split test --out "$run/pseudo-masks/test"
    stage eval --pred "$run/pseudo-masks/test" --gt "$data/test/mask" --dataset synthetic --json "$run/eval-stage1-test.json"
    stage cam --checkpoint "$run/stage1/best.safetensors" --bank "$run/bank" --data "$data" --dataset synthetic --split train --out "$run/pseudo-masks/train"
    stage seg train --data "$data" --dataset synthetic --pseudo "$run/pseudo-masks/train" --profile notebook --out "$run/stage2" ${steps[@]+"${steps[@]}"}
    stage seg predict --checkpoint "$run/stage2/best.safetensors" --data "$data" --dataset synthetic --split test --out "$run/stage2-masks/test" --json "$run/eval-stage2-test.json"
    say "demo done: results in $run (eval-stage1-test.json: pseudo-masks; eval-stage2-test.json: segmentation)"
    ;;
esac
