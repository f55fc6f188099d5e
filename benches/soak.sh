#!/usr/bin/env bash
# Soak benchmark (not in CI): the release sidecar under steady load for MINUTES minutes
# (default 10, 1..120), with a key rotation every minute and access tokens living 30 s.
#
#   bash benches/soak.sh [MINUTES]        (results: benches/soak-results.md)
#
# The driver, examples/soak/, runs the JTL emulator, a backend answering 200 and 32
# keep-alive connections sending requests without pause, each with a fresh session token,
# in its own process; the sidecar is `target/release/jtl-auth-sidecar run` (log level warn)
# in another. It samples the sidecar's VmRSS every 5 s, reads /metrics at the end, prints
# and writes a summary: requests and failures (expected 0), VmRSS after a 60 s warm-up
# (expected flat within 10 %), and the access-token and key-set requests the emulator
# counted against what the configured intervals predict (the formula is in the summary
# and in examples/soak/main.rs). Exits non-zero when an expectation fails; bounded by
# `timeout` (the run plus 2 minutes). Only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES="${1:-10}"
if ! [[ "$MINUTES" =~ ^[0-9]+$ ]] || [ "$MINUTES" -lt 1 ] || [ "$MINUTES" -gt 120 ]; then
  echo "usage: bash benches/soak.sh [MINUTES]   (1..120, default 10)" >&2
  exit 2
fi

echo "== building the release binary and the soak driver"
cargo build --release --quiet --bin jtl-auth-sidecar --example soak

echo "== soak: $MINUTES minutes (bounded at $(( MINUTES + 2 )) minutes)"
SOAK_COMMAND="bash benches/soak.sh $MINUTES" \
  timeout --kill-after=10 "$(( MINUTES * 60 + 120 ))" \
  target/release/examples/soak "$MINUTES" \
    --bin target/release/jtl-auth-sidecar --results benches/soak-results.md
