"""The comparison's report: results.md and SVG plots from what run.sh measured.

    python benches/peers/report.py benches/peers/results

Reads runs.jsonl (one JSON object per wrk run and per fixed-rate oha run) and meta.json
(date, machine, versions, ring's verify times) in the directory, and writes there:
results.md (tables, and the issue-17 targets as ratios with met / not met),
throughput.svg, cpu.svg and latency.svg. Needs matplotlib; run.sh installs it in
target/peers/venv.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402

FLOWS = {"session": "session token (EdDSA)", "app-token": "app token (RS256)"}
LABELS = {
    "backend_direct": "backend direct",
    "nginx_proxy_pass": "nginx proxy_pass (checks nothing)",
    "sidecar_cache_hit": "sidecar, verified-cache hit",
    "sidecar_full_verification": "sidecar, full verification",
    "axum_jwt_authorizer": "axum + jwt-authorizer",
    "node_jose": "Node + jose (the guide)",
    "haproxy_jwt_verify": "HAProxy jwt_verify",
}
PERCENTILES = ["p10", "p25", "p50", "p75", "p90", "p95", "p99", "p99.9", "p99.99"]


def load(directory):
    runs = [json.loads(line) for line in (directory / "runs.jsonl").read_text().splitlines() if line.strip()]
    meta = json.loads((directory / "meta.json").read_text())
    return runs, meta


class Results:
    """Lookups over the runs: the floor's runs (flow "none") count in both flows."""

    def __init__(self, runs, meta):
        self.runs = runs
        self.meta = meta
        self.connections = [int(c) for c in meta["connections"]]

    def setups(self, flow):
        seen = []
        for run in self.runs:
            if run["flow"] in (flow, "none") and run["setup"] not in seen:
                seen.append(run["setup"])
        return seen

    def wrk(self, flow, setup, connections):
        for run in self.runs:
            if (run["kind"] == "wrk" and run["setup"] == setup and run["flow"] in (flow, "none")
                    and run["connections"] == connections):
                return run
        return None

    def fixed(self, flow, setup):
        for run in self.runs:
            if run["kind"] == "fixed_rate" and run["setup"] == setup and run["flow"] in (flow, "none"):
                return run
        return None


def number(value, digits=1):
    if value is None:
        return "–"
    if isinstance(value, float) and value >= 1000:
        return f"{value:,.0f}".replace(",", " ")
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(results, flow):
    conns = results.connections
    head = ["setup"]
    for c in conns:
        head += [f"req/s, {c} conns", f"CPU µs/req, {c} (of it user)"]
    last = conns[-1]
    head += [f"p99 ms, {last}", f"peak RSS MB, {last} (of it file-backed)", "errors"]
    rate = results.meta["rate"]
    head += [f"at {rate} req/s: p50 / p99 / p99.9 ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for setup in results.setups(flow):
        row = [LABELS.get(setup, setup)]
        errors = 0
        for c in conns:
            run = results.wrk(flow, setup, c) or {}
            cpu = number(run.get("cpu_us_per_request"))
            if run.get("user_cpu_us_per_request") is not None:
                cpu += f" ({number(run['user_cpu_us_per_request'])})"
            row += [number(run.get("rps")), cpu]
            errors += run.get("errors", 0)
        run = results.wrk(flow, setup, last) or {}
        rss = number(run.get("peak_rss_mb"))
        if run.get("rss_file_mb") is not None:
            rss += f" ({number(run['rss_file_mb'])})"
        row += [number(run.get("p99_ms"), 2), rss]
        fixed = results.fixed(flow, setup)
        if fixed:
            errors += fixed["non_200"] + fixed["errors"]
            p = fixed["percentiles_ms"]
            row += [str(errors), " / ".join(number(p.get(k), 2) for k in ("p50", "p99", "p99.9"))]
        else:
            row += [str(errors), "–"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def targets(results):
    """The issue-17 targets, each a ratio of two setups measured in this run."""
    meta = results.meta
    ring = {"session": meta["ring_ed25519_verify_us"], "app-token": meta["ring_rsa2048_verify_us"]}
    rows = []

    def add(name, value, goal, met, how):
        rows.append(f"| {name} | {value} | {goal} | {'met' if met else '**not met**'} | {how} |")

    for flow in FLOWS:
        for c in results.connections:
            nginx = results.wrk(flow, "nginx_proxy_pass", c)
            hit = results.wrk(flow, "sidecar_cache_hit", c)
            full = results.wrk(flow, "sidecar_full_verification", c)
            if nginx and hit:
                r = hit["cpu_us_per_request"] / nginx["cpu_us_per_request"]
                add(f"{flow}, {c} conns: cache-hit CPU/request ÷ nginx's", f"{r:.2f}", "≤ 1.00", r <= 1.0,
                    f"{hit['cpu_us_per_request']} ÷ {nginx['cpu_us_per_request']} µs")
            if nginx and full:
                own = full["cpu_us_per_request"] - ring[flow]
                r = own / nginx["cpu_us_per_request"]
                add(f"{flow}, {c} conns: full verification's own CPU/request (minus one ring verify) ÷ nginx's",
                    f"{r:.2f}", "≤ 1.00", r <= 1.0,
                    f"({full['cpu_us_per_request']} − {ring[flow]}) ÷ {nginx['cpu_us_per_request']} µs")
            if nginx and hit and c == results.connections[-1]:
                r = hit["p99_ms"] / nginx["p99_ms"]
                add(f"{flow}, {c} conns: cache-hit p99 ÷ nginx's", f"{r:.2f}", "≤ 1.00", r <= 1.0,
                    f"{hit['p99_ms']} ÷ {nginx['p99_ms']} ms")
        last = results.connections[-1]
        axum = results.wrk(flow, "axum_jwt_authorizer", last)
        for setup in ("sidecar_cache_hit", "sidecar_full_verification"):
            run = results.wrk(flow, setup, last)
            if axum and run:
                r = run["peak_rss_mb"] / axum["peak_rss_mb"]
                add(f"{flow}, {last} conns: {LABELS[setup]} peak RSS ÷ axum peer's", f"{r:.2f}", "≤ 1.00",
                    r <= 1.0, f"{run['peak_rss_mb']} ÷ {axum['peak_rss_mb']} MB")
        direct = results.fixed(flow, "backend_direct")
        for setup in ("sidecar_cache_hit", "sidecar_full_verification"):
            run = results.fixed(flow, setup)
            if direct and run:
                added = run["percentiles_ms"]["p99"] - direct["percentiles_ms"]["p99"]
                add(f"{flow}, {meta['rate']} req/s: {LABELS[setup]} p99 over the backend's", f"{added:+.2f} ms",
                    "≤ 0.50 ms", added <= 0.5,
                    f"{run['percentiles_ms']['p99']} − {direct['percentiles_ms']['p99']} ms")
        best = max((results.wrk(flow, "sidecar_full_verification", c) or {}).get("rps", 0)
                   for c in results.connections)
        if best:
            r = best / (1e6 / ring[flow])
            add(f"{flow}: full verification req/s ÷ one core of ring verifies", f"{r:.2f}",
                "≥ 0.80" if flow == "app-token" else "(reported)", r >= 0.8 or flow != "app-token",
                f"{best:.0f} ÷ {1e6 / ring[flow]:.0f}/s ({ring[flow]} µs each)")
    head = "| target | ratio | goal | | from |\n|---|---|---|---|---|"
    return head + "\n" + "\n".join(rows)


def bars(results, path, field, xlabel):
    fig, axes = plt.subplots(1, len(FLOWS), figsize=(12, 4.2), constrained_layout=True)
    for ax, (flow, title) in zip(axes, FLOWS.items()):
        setups = [s for s in results.setups(flow)
                  if any((results.wrk(flow, s, c) or {}).get(field) is not None for c in results.connections)]
        height = 0.8 / len(results.connections)
        for i, c in enumerate(results.connections):
            values = [(results.wrk(flow, s, c) or {}).get(field) or 0 for s in setups]
            ys = [y + i * height for y in range(len(setups))]
            ax.barh(ys, values, height=height, label=f"{c} connections")
            for y, v in zip(ys, values):
                ax.text(v, y, f" {v:,.0f}" if v >= 100 else f" {v:.1f}", va="center", fontsize=7)
        ax.set_yticks([y + height * (len(results.connections) - 1) / 2 for y in range(len(setups))])
        ax.set_yticklabels([LABELS.get(s, s) for s in setups], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.margins(x=0.18)
        ax.legend(fontsize=7, loc="lower right")
    meta = results.meta
    fig.suptitle(f"{meta['date']}, {meta['cores']} cores ({meta['cpu']}), wrk -t2, {meta['duration']} per run",
                 fontsize=9)
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)


def latency(results, path):
    fig, axes = plt.subplots(1, len(FLOWS), figsize=(12, 4.2), constrained_layout=True, sharey=True)
    xs = list(range(len(PERCENTILES)))
    for ax, (flow, title) in zip(axes, FLOWS.items()):
        for setup in results.setups(flow):
            run = results.fixed(flow, setup)
            if not run:
                continue
            ys = [run["percentiles_ms"].get(p) for p in PERCENTILES]
            ax.plot(xs, ys, marker="o", markersize=3, label=LABELS.get(setup, setup))
        ax.set_xticks(xs)
        ax.set_xticklabels(PERCENTILES)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("percentile", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("latency, ms (log)", fontsize=9)
    meta = results.meta
    fig.suptitle(f"Latency at a fixed {meta['rate']} req/s over {meta['rate_connections']} connections "
                 f"(oha --latency-correction, {meta['rate_duration']}); {meta['date']}", fontsize=9)
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)


def main():
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "benches/peers/results")
    results = Results(*load(directory))
    meta = results.meta
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    text = [
        "# Side by side: the sidecar and what a user would run instead",
        "",
        f"Measured {meta['date']} at commit {meta['commit']} on {meta['cores']} cores ({meta['cpu']}), "
        f"Linux {meta['kernel']}; {versions}. Generated by `bash benches/peers/run.sh`; do not edit.",
        "",
        f"wrk -t2 for {meta['duration']} per run after a 2 s warm-up, over loopback, against an nginx "
        f"`return 200` backend; {meta['tokens']} distinct tokens for every setup but the cache hit. "
        "CPU per request and peak RSS are the setup's own processes (not wrk, the backend or JTL). "
        f"The last column is oha at a fixed {meta['rate']} req/s over {meta['rate_connections']} connections "
        f"with `--latency-correction`, one token. One core of ring verifies: Ed25519 "
        f"{meta['ring_ed25519_verify_us']} µs, RSA-2048 {meta['ring_rsa2048_verify_us']} µs.",
        "",
    ]
    for flow, title in FLOWS.items():
        text += [f"## {title[0].upper() + title[1:]}", "", table(results, flow), ""]
    text += ["## Targets (issue 17)", "", targets(results), "",
             "![throughput](throughput.svg)", "", "![CPU per request](cpu.svg)", "",
             "![latency at a fixed rate](latency.svg)", ""]
    (directory / "results.md").write_text("\n".join(text))
    bars(results, directory / "throughput.svg", "rps", "requests/s (higher is better)")
    bars(results, directory / "cpu.svg", "cpu_us_per_request", "CPU µs per request, own processes (lower is better)")
    latency(results, directory / "latency.svg")
    print(f"wrote {directory}/results.md, throughput.svg, cpu.svg, latency.svg")


if __name__ == "__main__":
    main()
