#!/usr/bin/python3
"""bench/compare_table.py -- ratio table of dd_bench vs compare_pytorch.py results.

    /usr/bin/python3 bench/compare_table.py RESULTS.jsonl

Reads the JSON lines of bench/dd_bench and bench/compare_pytorch.py (as
bench/run_compare.sh collects them), keeps per (impl, arch, mode) the line
with the most images/s (the best over repeated processes; gfa and pgd-at
processes also print the plain step they timed first, which counts as a
plain sample), and prints ours/PyTorch throughput ratios against the targets
of issues 2 (engine), 3 (GFA) and 4 (attacks). Exit status 0 even when a
target is missed: this reports, it does not gate.
"""

import json
import sys

# (arch or None for every arch, mode) -> minimum ours/pytorch throughput ratio
SPEED_TARGETS = {
    ("cnn-cw", "plain"): 1.8,
    ("resnet20", "plain"): 1.3,
    (None, "infer"): 1.5,
    ("cnn-cw", "gfa"): 2.5,
    ("resnet20", "gfa"): 2.0,
    ("cnn-cw", "pgd-at"): 2.0,
}
RATIO_TO_PLAIN_MAX = {"gfa": 2.4, "pgd-at": 9.0}
OUTSIDE_MAX = 0.15
GFA_RSS_MAX = 1.6
MODES = ["plain", "infer", "gfa", "pgd-at"]


def load(path):
    best, skipped = {}, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                d = json.loads(line)
            except ValueError:
                continue
            key = (d.get("impl"), d.get("arch"), d.get("mode"))
            if "skipped" in d or "error" in d:
                skipped.append("%s %s %s: %s" % (key + (d.get("skipped") or d.get("error"),)))
                continue
            ips = d.get("images_per_s")
            if ips is None:
                continue
            if key not in best or ips > best[key]["images_per_s"]:
                best[key] = d
    return best, skipped


def fmt(v, spec="%.1f"):
    return "-" if v is None else spec % v


def verdict(ok):
    return "ok" if ok else "MISS"


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    best, skipped = load(sys.argv[1])
    archs = sorted({k[1] for k in best}, key=lambda a: ["cnn-cw", "resnet20", "preact-resnet18"].index(a)
                   if a in ("cnn-cw", "resnet20", "preact-resnet18") else 9)
    any_line = next(iter(best.values()), None)
    if any_line is None:
        print("compare_table: no measurements in %s" % sys.argv[1])
        for s in skipped:
            print("  skipped: " + s)
        return 0
    print("batch %s, threads %s; images/s = best over processes (median step each)" % (
        any_line.get("batch"), any_line.get("threads")))
    hdr = "%-16s %-7s %10s %10s %7s %8s  %-22s %9s %9s %7s %6s %6s" % (
        "arch", "mode", "ours img/s", "torch", "ratio", "target", "verdict", "x plain", "torch x", "outside",
        "eff", "disturb")
    print(hdr)
    print("-" * len(hdr))
    notes = []
    for arch in archs:
        for mode in MODES:
            o = best.get(("deepdefense", arch, mode))
            p = best.get(("pytorch", arch, mode))
            if not o and not p:
                continue
            ratio = o["images_per_s"] / p["images_per_s"] if o and p else None
            tgt = SPEED_TARGETS.get((arch, mode), SPEED_TARGETS.get((None, mode)))
            checks = []
            if tgt is not None and ratio is not None:
                checks.append(("vs torch", ratio >= tgt))
            rtp = o.get("ratio_to_plain") if o else None
            if mode in RATIO_TO_PLAIN_MAX and rtp is not None:
                checks.append(("x plain<=%g" % RATIO_TO_PLAIN_MAX[mode], rtp <= RATIO_TO_PLAIN_MAX[mode]))
            outside = o.get("outside_frac") if o else None
            if mode == "plain" and outside is not None:
                checks.append(("outside", outside <= OUTSIDE_MAX))
            v = " ".join("%s:%s" % (n, verdict(ok)) for n, ok in checks) or "(no target)"
            dist = "%s/%s" % (o.get("disturbed"), o.get("steps")) if o else "-"
            print("%-16s %-7s %10s %10s %7s %8s  %-22s %9s %9s %7s %6s %6s" % (
                arch, mode, fmt(o and o["images_per_s"]), fmt(p and p["images_per_s"]), fmt(ratio, "%.2fx"),
                fmt(tgt, ">=%.1fx"), v, fmt(rtp, "%.2fx"), fmt(p and p.get("ratio_to_plain"), "%.2fx"),
                "-" if outside is None else "%.0f%%" % (100 * outside),
                fmt(o and o.get("efficiency"), "%.2f"), dist))
            if p and p.get("disturbed"):
                notes.append("pytorch %s %s: %s/%s steps disturbed" % (arch, mode, p["disturbed"], p["steps"]))
    print()
    print("memory (peak RSS, MB; GFA target <= %.1fx plain):" % GFA_RSS_MAX)
    for arch in archs:
        for impl in ("deepdefense", "pytorch"):
            pl = best.get((impl, arch, "plain"))
            gf = best.get((impl, arch, "gfa"))
            if not pl or not gf:
                continue
            rr = gf.get("rss_ratio_to_plain")
            line = "  %-16s %-12s plain %8.1f  gfa %8.1f  in-process gfa/plain %s" % (
                arch, impl, pl["peak_rss_mb"], gf["peak_rss_mb"], fmt(rr, "%.2fx"))
            if impl == "deepdefense" and rr is not None:
                line += "  " + verdict(rr <= GFA_RSS_MAX)
                if pl.get("model_mb") and gf.get("model_mb"):
                    line += "  (model arenas %.1f -> %.1f MB)" % (pl["model_mb"], gf["model_mb"])
            print(line)
    print()
    print("peak sgemm GFLOP/s: ours (dnnl_sgemm) %s, pytorch (torch.mm) %s" % (
        fmt(max((d.get("peak_gflops") or 0 for k, d in best.items() if k[0] == "deepdefense"), default=None)),
        fmt(max((d.get("peak_gflops") or 0 for k, d in best.items() if k[0] == "pytorch"), default=None))))
    layouts = sorted({"%s %s: %s" % (k[1], k[2], d.get("layout")) for k, d in best.items() if k[0] == "pytorch"})
    if layouts:
        print("pytorch layout chosen: " + "; ".join(layouts))
    blas = {d.get("blas") for k, d in best.items() if k[0] == "pytorch"}
    if blas - {"openblas"}:
        print("WARNING: a pytorch run did not use OpenBLAS: %s" % sorted(b for b in blas if b))
    for n in notes:
        print("note: " + n)
    for s in skipped:
        print("skipped: " + s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
