#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 20) on a copy of its seed
# corpus (fuzz/corpus/<target>/ never grows), on the stable toolchain: cargo-fuzz needs
# -Z flags, which RUSTC_BOOTSTRAP=1 allows there. Installs cargo-fuzz when it is missing.
# Exits non-zero when a target finds a crash (its input is then in fuzz/artifacts/<target>/).
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(jws jwks config headers)
fi

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

echo "== building the fuzz targets (optimised, with debug assertions and AddressSanitizer)"
started=$(date +%s)
cargo fuzz build
echo "   built in $(( $(date +%s) - started )) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${targets[@]}"; do
  echo "== fuzz $target for $seconds s"
  mkdir -p "$work/$target" "fuzz/artifacts/$target"
  cp -R "fuzz/corpus/$target/." "$work/$target/"
  # The same flags as the build above, so the binary is used as it is. New inputs go to
  # the first corpus directory (the temporary copy); -artifact_prefix keeps crashes where
  # `cargo fuzz run` puts them.
  status=0
  cargo fuzz run "$target" "$work/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$target/" >"$work/$target.log" 2>&1 || status=$?
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec)' \
    "$work/$target.log" || true
  if [ "$status" -ne 0 ] || grep -q 'Test unit written' "$work/$target.log"; then
    echo "!! $target found a crash (exit $status); the end of its log:"
    tail -n 40 "$work/$target.log"
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "== crashes in: ${failed[*]} (reproduce: see fuzz/README.md)"
  exit 1
fi
echo "== no crashes (${targets[*]}, $seconds s each)"
