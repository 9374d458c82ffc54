#!/usr/bin/env bash
# pbip development setup: `npm run setup`. Safe to re-run; each step is skipped when
# already done and prints one line. Steps (src/nbrun/setup.ts):
#   build          tsc -p . into dist/, and node_modules/pbip -> .. (notebooks import "pbip")
#   jupyter        a Python with jupyter_client + nbclient + nbconvert (apt-get installs
#                  Debian's packages when run as root or with passwordless sudo)
#   kernel         the tslab kernelspec, project-local in .cache/jupyter (--user: user-wide)
#   gpu-emulation  Mesa lavapipe from Debian bookworm-backports, unpacked into .cache/vulkan
#                  (private apt state in .cache/apt; nothing installed system-wide), so the
#                  WebGPU backend runs on the CPU; `. .cache/vulkan/env.sh` to use it
#   torch          PyTorch in /usr/bin/python3 for the reference tests (apt when possible)
#   real-samples   real H&E / IHC images into .cache/real-samples (Debian's archive, else upstream)
# Options: --check (report only), --user, --no-gpu-emulation, --no-torch, --no-real-samples.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if ! command -v node >/dev/null 2>&1; then
  echo "setup: Node.js 20 or newer is needed (node not found on PATH)" >&2
  exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "setup: Node.js 20 or newer is needed (this is $(node --version))" >&2
  exit 1
fi
if [ ! -d node_modules/@tensorflow/tfjs ] || [ ! -d node_modules/tslab ]; then
  echo "setup: node_modules is missing or incomplete: run \`npm ci\` first" >&2
  exit 1
fi
# In a checkout, run the TypeScript source through tsx (never a stale build);
# in an installed package, the compiled file.
if [ -d node_modules/tsx ] && [ -f src/nbrun/setup-main.ts ]; then
  exec node --import tsx src/nbrun/setup-main.ts "$@"
else
  exec node dist/nbrun/setup-main.js "$@"
fi
