#!/usr/bin/env python3
"""Helpers for bench/run.sh.

  report.py parse-oha FILE.json      -> "p50_ms p99_ms achieved_rps errors p99.9_ms requests"
  report.py parse-wrk2 FILE.txt      -> same
  report.py report RESULTS.tsv META  -> the Markdown report on stdout

results.tsv columns: workers system scenario kind round v1 v2 v3 errors v4 v5 v6
(see bench/run.sh, record()).
"""

import json
import re
import statistics
import sys


def parse_oha(path):
    with open(path) as f:
        d = json.load(f)
    pct = d.get("latencyPercentiles") or {}
    summary = d.get("summary") or {}
    codes = d.get("statusCodeDistribution") or {}
    # With -w in-flight requests finish after the deadline; without it oha
    # cancels them, which is not an error of the server.
    errs = sum(
        int(v) for k, v in (d.get("errorDistribution") or {}).items() if "aborted due to deadline" not in k
    )
    errs += sum(int(v) for k, v in codes.items() if not str(k).startswith("2"))
    if pct.get("p50") is None or pct.get("p99") is None:
        raise SystemExit(f"{path}: no latency percentiles (no request succeeded?)")
    p50 = float(pct["p50"]) * 1000.0
    p99 = float(pct["p99"]) * 1000.0
    p999 = float(pct.get("p99.9") if pct.get("p99.9") is not None else pct["p99"]) * 1000.0
    rps = float(summary.get("requestsPerSec") or 0.0)
    total = sum(int(v) for v in codes.values())
    return p50, p99, rps, errs, p999, total


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk2(path):
    text = open(path).read()
    pcts = {}
    for m in re.finditer(r"^\s*(\d+\.\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        pcts.setdefault(float(m.group(1)), float(m.group(2)) * _UNITS[m.group(3)])
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s*(\d+) requests in ", text, re.M)
    errs = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        errs += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errs += sum(int(x) for x in m.groups())
    if 50.0 not in pcts or 99.0 not in pcts:
        raise SystemExit(f"{path}: no latency distribution")
    return (
        pcts[50.0],
        pcts[99.0],
        float(rps.group(1)) if rps else 0.0,
        errs,
        pcts.get(99.9, pcts[99.0]),
        int(total.group(1)) if total else 0,
    )


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line.split("\t")
            c += [""] * (12 - len(c))
            rows.append(
                {
                    "n": int(c[0]),
                    "sys": c[1],
                    "scen": c[2],
                    "kind": c[3],
                    "round": int(c[4] or 0),
                    "v1": float(c[5]) if c[5] else None,
                    "v2": float(c[6]) if c[6] else None,
                    "v3": float(c[7]) if c[7] else None,
                    "err": int(float(c[8] or 0)),
                    "v4": float(c[9]) if c[9] else None,
                    "frac": c[10],
                    "v6": float(c[11]) if c[11] else None,
                }
            )
    return rows


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_rps(x):
    return "—" if x is None else f"{x:,.0f}"


def fmt_ms(x):
    return "—" if x is None else f"{x:.2f} ms"


def fmt_cpu(rows):
    m = med([r["v2"] for r in rows])
    return "—" if m is None else f"{m:.0f}%"


def rps_cell(xs):
    m = med(xs)
    if m is None:
        return "—"
    if len(xs) > 1:
        return f"{m:,.0f} ({min(xs):,.0f}–{max(xs):,.0f})"
    return fmt_rps(m)


def pick(rows, **kw):
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


def paired(a, b, fn):
    """Median over rounds of fn(a_round, b_round) for rounds present in both."""
    by_round = {r["round"]: r for r in b}
    vals = [fn(r, by_round[r["round"]]) for r in a if r["round"] in by_round]
    return med(vals)


def fmt_s10k(x):
    return "—" if x is None else f"{x:.3f}"


# The product targets (issue 6), checked where the run has the scenario.
THROUGHPUT_TARGETS = [
    ("pass-through", 1.0),
    ("full stack", 0.9),
    ("full stack on Redis", 0.7),
    ("full stack on synced Redis", 0.7),
]
P99_TARGET = ("full stack", "0.5", 0.3)  # scenario, load fraction, max p99 - nginx p99 in ms
RSS_TARGET = ("full stack", 60 * 1000 * 1000)  # scenario, max peak RSS in bytes (60 MB)


def report(results, meta_path):
    meta = {}
    with open(meta_path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    rows = load(results)
    ns = sorted({r["n"] for r in rows})
    scenarios = []
    for r in rows:
        if r["sys"] == "tollgate" and r["scen"] not in scenarios:
            scenarios.append(r["scen"])
    fracs = []
    for r in rows:
        if r["kind"] == "lat" and r["frac"] not in fracs:
            fracs.append(r["frac"])

    out = []
    w = out.append
    w(f"## Tollgate benchmark, {meta.get('date', '?')}")
    w("")
    w(
        f"Machine: {meta.get('nproc')} CPUs ({meta.get('cpu', '?')}), Linux {meta.get('kernel')}; "
        f"nginx {meta.get('nginx')}; Tollgate {meta.get('tollgate')} at commit {meta.get('commit')}."
    )
    lat = meta.get("lat_tool", "none")
    w(
        f"Throughput: wrk -t{meta.get('wrk_threads')} -c{meta.get('connections')}, "
        f"{meta.get('duration')} per measurement after a {meta.get('warmup')} warm-up. "
        + (
            f"Latency: {lat}, open loop at fixed rates ({meta.get('rate_fractions', '?')} × nginx proxy_pass's max"
            + (", each capped at the same fraction of oha's own max against the upstream" if lat == "oha" else "")
            + f"), -c{meta.get('lat_connections', meta.get('connections'))}, {meta.get('lat_duration')} each"
            + (", corrected for coordinated omission." if lat == "oha" else ".")
            if lat != "none"
            else "Latency: skipped."
        )
    )
    w(
        f"Rounds: {meta.get('rounds')}, nginx and Tollgate alternated; medians shown "
        f"(range in brackets where a row has more than one run). Run took {meta.get('elapsed')}."
    )
    w("")
    rss = {(r["n"], r["scen"]): r for r in rows if r["kind"] == "rss"}

    def ratio_of(n, s):
        tg = pick(rows, n=n, sys="tollgate", scen=s, kind="thr")
        ng = pick(rows, n=n, sys="nginx", scen=s, kind="thr")
        return paired(tg, ng, lambda a, b: a["v1"] / b["v1"] if b["v1"] else None)

    def dp99_of(n, s, frac):
        tg = pick(rows, n=n, sys="tollgate", scen=s, kind="lat", frac=frac)
        ng = pick(rows, n=n, sys="nginx", scen=s, kind="lat", frac=frac)
        return paired(tg, ng, lambda a, b: a["v2"] - b["v2"])

    w("### Throughput")
    w("")
    w("| setup | workers | req/s | vs nginx proxy_pass | server CPU | CPU-s per 10k req | peak RSS | errors |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    notes = []
    for n in ns:
        for label, sys_ in (("upstream direct", "direct"), ("nginx proxy_pass", "nginx")):
            t = pick(rows, n=n, sys=sys_, kind="thr")
            l_ = pick(rows, n=n, sys=sys_, kind="lat")
            w(
                f"| {label} | {n} | {rps_cell([r['v1'] for r in t])} | {'1.00' if sys_ == 'nginx' else '—'} | "
                f"{fmt_cpu(t)} | {fmt_s10k(med([r['v3'] for r in t]))} | — | {sum(r['err'] for r in t + l_)} |"
            )
        for s in scenarios:
            tg_thr = pick(rows, n=n, sys="tollgate", scen=s, kind="thr")
            tg_lat = pick(rows, n=n, sys="tollgate", scen=s, kind="lat")
            if not tg_thr and not tg_lat:
                continue
            ratio = ratio_of(n, s)
            rs = rss.get((n, s))
            rss_cell = "—" if rs is None else f"{rs['v2'] / 1024:.1f} MiB"
            w(
                f"| Tollgate {s} | {n} | {rps_cell([r['v1'] for r in tg_thr])} | "
                f"{'—' if ratio is None else f'{ratio:.2f}'} | {fmt_cpu(tg_thr)} | "
                f"{fmt_s10k(med([r['v3'] for r in tg_thr]))} | "
                f"{rss_cell} | "
                f"{sum(r['err'] for r in tg_thr + tg_lat)} |"
            )
            pn = pick(rows, n=n, sys="nginx", scen=s, kind="thr")
            notes.append(
                f"N={n} {s}: paired nginx {fmt_rps(med([r['v1'] for r in pn]))} req/s, "
                f"{fmt_s10k(med([r['v3'] for r in pn]))} CPU-s per 10k"
            )
    w("")
    if fracs:
        w("### Latency at fixed rates")
        w("")
        w("| setup | workers | load | rate | p50 | p99 | p99.9 | p99 Δ vs nginx | CPU-s per 10k req | errors |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        rates = {(r["n"], r["frac"]): r for r in rows if r["kind"] == "rate"}
        for n in ns:
            for fr in fracs:
                rate = rates.get((n, fr))
                rate_cell = "—" if rate is None else f"{rate['v1']:,.0f}" + (
                    "*" if rate["v2"] is not None and rate["v1"] < rate["v2"] else ""
                )
                load_cell = f"{float(fr) * 100:.0f}%" if fr else "—"
                systems = [("upstream direct", "direct", ""), ("nginx proxy_pass", "nginx", None)]
                systems += [(f"Tollgate {s}", "tollgate", s) for s in scenarios]
                for label, sys_, scen in systems:
                    kw = dict(n=n, sys=sys_, kind="lat", frac=fr)
                    if scen is not None:
                        kw["scen"] = scen
                    ls = pick(rows, **kw)
                    if not ls:
                        continue
                    d = dp99_of(n, scen, fr) if sys_ == "tollgate" else None
                    w(
                        f"| {label} | {n} | {load_cell} | {rate_cell} | {fmt_ms(med([r['v1'] for r in ls]))} | "
                        f"{fmt_ms(med([r['v2'] for r in ls]))} | {fmt_ms(med([r['v4'] for r in ls]))} | "
                        f"{'—' if d is None else f'{d:+.2f} ms'} | {fmt_s10k(med([r['v6'] for r in ls]))} | "
                        f"{sum(r['err'] for r in ls)} |"
                    )
        w("")
        capped = [r for r in rates.values() if r["v2"] is not None and r["v1"] < r["v2"]]
        if capped:
            w(
                "\\* capped: the rate asked for ("
                + ", ".join(f"N={r['n']} {float(r['frac']) * 100:.0f}%: {r['v2']:,.0f}" for r in capped)
                + " req/s) is more than the load generator sustains beside the upstream, so it ran at the "
                "same fraction of oha's own maximum against the upstream instead."
            )
            w("")
        w(
            "Latency rows for nginx are all its runs at that rate; Tollgate's p99 Δ is the median of "
            "per-round differences with the nginx runs alternated with it."
        )
        w("")
    targets = []
    for n in ns:
        for s, want in THROUGHPUT_TARGETS:
            r = ratio_of(n, s)
            if r is not None:
                targets.append((f"{s} ≥ {want:.1f}× nginx (N={n})", f"{r:.2f}×", r >= want))
        s, fr, ms = P99_TARGET
        d = dp99_of(n, s, fr)
        if d is not None:
            targets.append(
                (f"{s}: p99 at {float(fr) * 100:.0f}% load within {ms} ms of nginx (N={n})", f"{d:+.2f} ms", d <= ms)
            )
        s, limit = RSS_TARGET
        rs = rss.get((n, s))
        if rs is not None:
            peak = rs["v2"] * 1024
            targets.append(
                (f"{s}: peak RSS < {limit / 1e6:.0f} MB (N={n})", f"{peak / 1e6:.1f} MB", peak < limit)
            )
    if targets:
        w("### Against the targets")
        w("")
        w("| target | measured | verdict |")
        w("| --- | ---: | --- |")
        for t, m, ok in targets:
            w(f"| {t} | {m} | {'met' if ok else '**missed**'} |")
        w("")
    base = "pass-through"
    costs = []
    for n in ns:
        b = ratio_of(n, base)
        for s in scenarios:
            if s == base or not b:
                continue
            v = ratio_of(n, s)
            if v:
                costs.append(f"N={n} {s}: {v / b:.3f} × pass-through ({(1 - v / b) * 100:+.1f}% cost)")
    if costs:
        w(
            "Cost of each layer, paired ratio over pass-through's paired ratio in the same run: "
            + "; ".join(costs)
            + "."
        )
        w("")
    for n in ns:
        dm = med([r["v1"] for r in pick(rows, n=n, sys="direct", kind="thr")])
        nm = med([r["v1"] for r in pick(rows, n=n, sys="nginx", kind="thr")])
        if dm and nm and nm >= 0.85 * dm:
            w(
                f"Note: at N={n} nginx reaches {nm / dm:.0%} of the upstream-direct ceiling, so the "
                "harness (load generator and upstream) limits throughput as much as the proxy does; "
                "a proxy faster than nginx could not show it here."
            )
            w("")
    if notes:
        w("Tollgate's ratio is the median of per-round pairs with the nginx runs alternated with it:")
        for s in notes:
            w(f"- {s}")
        w("")
    w(
        "Server CPU: CPU time used by the server under test (the upstream for \"direct\") during the "
        "throughput runs, in % of one core; CPU-s per 10k req is the same time divided by the requests "
        "served. Peak RSS: Tollgate's VmHWM after all of the scenario's load."
    )
    w("")
    total_err = sum(r["err"] for r in rows)
    w(
        "Errors (non-2xx responses plus socket errors): "
        + ("0 in every run." if total_err == 0 else f"**{total_err}: these figures are not valid.**")
    )
    print("\n".join(out))


def main(argv):
    if len(argv) == 3 and argv[1] == "parse-oha":
        p50, p99, rps, errs, p999, total = parse_oha(argv[2])
    elif len(argv) == 3 and argv[1] == "parse-wrk2":
        p50, p99, rps, errs, p999, total = parse_wrk2(argv[2])
    elif len(argv) == 4 and argv[1] == "report":
        report(argv[2], argv[3])
        return
    else:
        raise SystemExit(__doc__)
    print(f"{p50:.3f} {p99:.3f} {rps:.0f} {errs} {p999:.3f} {total}")


if __name__ == "__main__":
    main(sys.argv)
