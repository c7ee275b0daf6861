# Sourced by the entry scripts: make sure uv exists and the workspace is installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v uv >/dev/null 2>&1; then
  export PATH="$HOME/.local/bin:$PATH"
  command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --user uv \
    || python3 -m pip install --quiet --break-system-packages --user uv
fi
# llama-cpp-python (ai-responder's local model) is built from source: portable, never
# -march=native (a native build dies with SIGILL on another CPU of the same kind); also set in
# the root pyproject.toml ([tool.uv] config-settings-package)
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
# bytecode compiled at install: a fresh clone's first start of every process would compile it
# (tens of seconds on a busy machine)
uv sync --frozen --all-packages --quiet --compile-bytecode
