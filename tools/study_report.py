#!/usr/bin/python3
"""tools/study_report.py -- tables and training curves of a cifar_study.sh run.

    tools/study_report.py STUDY_DIR

Reads the results folder of tools/cifar_study.sh (NAME.csv per-epoch
metrics, NAME.log, NAME.wall, NAME.done, sweep-*.choice) and writes, into
the same folder:
  summary.md   one row per training: state, epochs, wall time, final
               training loss and accuracy, test accuracy, train_cifar's
               FGSM / PGD-10 check, mean |cos| (first and last epoch);
  sweep.svg    the lambda sweep: final mean |cos| and PGD-10 accuracy
               against lambda, one line per GFA variant;
  curves.svg   the full trainings: test accuracy, training loss and mean
               |cos| per epoch;
  evaluation.md  once the evaluation stage has written report-gradient.json
               and/or report-ensemble.json: per model the gradient-masking
               diagnostics at 8/255 (white-box, black-box and transfer
               attacks side by side, accuracy at 32/255) with flags, and
               the numbers the paper's claims are judged by, each GFA
               model against PGD-AT, over all images and over the samples
               every model classifies correctly (the paper's protocol).
Standard library only (Debian's python3), so it runs wherever the study does.
"""
import csv
import glob
import math
import os
import re
import sys

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"]


def read_csv(path):
    with open(path, newline="") as f:
        return [dict(r) for r in csv.DictReader(f)]


def log_check(path):
    """(FGSM %, PGD-10 %) of train_cifar's closing check, or (None, None)."""
    try:
        text = open(path).read()
    except OSError:
        return None, None
    m = re.findall(r"FGSM ([0-9.]+)%, PGD-10 ([0-9.]+)%", text)
    return (float(m[-1][0]), float(m[-1][1])) if m else (None, None)


def runs(folder):
    out = []
    for c in sorted(glob.glob(os.path.join(folder, "*.csv"))):
        name = os.path.basename(c)[:-4]
        if name.startswith("report"):
            continue
        rows = read_csv(c)
        base = os.path.join(folder, name)
        wall = open(base + ".wall").read().strip() if os.path.exists(base + ".wall") else ""
        fgsm, pgd = log_check(base + ".log")
        failed = open(base + ".failed").read().strip() if os.path.exists(base + ".failed") else ""
        out.append({"name": name, "rows": rows, "done": os.path.exists(base + ".done"), "failed": failed,
                    "wall": int(wall) if wall else None, "fgsm": fgsm, "pgd": pgd})
    return out


def fmt(v, spec="%.2f"):
    return "-" if v is None else spec % v


def hms(s):
    if s is None:
        return "-"
    return "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60)


def write_summary(folder, rs):
    with open(os.path.join(folder, "summary.md"), "w") as f:
        f.write("| run | state | epochs | wall | train loss | train acc | test acc | FGSM | PGD-10 "
                "| mean \\|cos\\| first -> last epoch |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
        for r in rs:
            last = r["rows"][-1] if r["rows"] else {}
            first = r["rows"][0] if r["rows"] else {}
            al = ""
            if last and "align_mean" in last and any(
                    float(x.get("align_mean", 0) or 0) > 0 for x in r["rows"]):
                al = "%.3f -> %.3f" % (float(first["align_mean"]), float(last["align_mean"]))
            f.write("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n" % (
                r["name"], "done" if r["done"] else ("failed (diverged)" if "not finite" in r["failed"]
                                                     else "failed" if r["failed"] else "partial"),
                len(r["rows"]), hms(r["wall"]),
                fmt(float(last["train_loss"]) if last else None, "%.4f"),
                fmt(100 * float(last["train_acc"]) if last else None),
                fmt(100 * float(last["test_acc"]) if last else None),
                fmt(r["fgsm"]), fmt(r["pgd"]), al or "-"))
        choices = sorted(glob.glob(os.path.join(folder, "sweep-*.choice")))
        if choices:
            f.write("\nLambda chosen per GFA variant (the best PGD-10 among the lambdas whose test accuracy "
                    "is at least 80% of the variant's best): ")
            f.write(", ".join("%s %s" % (os.path.basename(c)[6:-7], open(c).read().strip())
                              for c in choices) + ".\n")


EPS8 = 8 / 255
WHITE = ["fgsm", "pgd-linf", "apgd-ce-linf", "apgd-dlr-linf", "apgd-t-linf"]
# A flag needs a gap of more than this many points (0.5 points = 5 of 1,000 images).
GAP = 0.5


def evaluation(folder):
    """{model name: {"clean", (attack, eps): (all %, common %), "min_norm": {attack: row}}} merged
    over the report JSONs, and the number of common samples per report; None without reports."""
    import json
    models, common = {}, {}
    for rep in ("report-gradient", "report-ensemble"):
        path = os.path.join(folder, rep + ".json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            d = json.load(f)
        common[rep] = (d["common_images"], d["images"], len(d["models"]))
        for m in d["models"]:
            e = models.setdefault(m["name"], {"min_norm": {}})
            e["clean"] = 100 * m["clean_accuracy"]
            for r in m["robust"]:
                if not r["from_min_norm"]:
                    c = r.get("accuracy_common")
                    e[(r["attack"], round(r["eps"] * 255, 3))] = (100 * r["accuracy"],
                                                                 None if c is None else 100 * c)
            for r in m["min_norm"]:
                e["min_norm"][r["attack"]] = r
    return (models, common) if models else None


def acc(e, attack, eps255=8, which=0):
    v = e.get((attack, eps255))
    return None if v is None else v[which]


def flags(e):
    """The masking signs of one model, as text."""
    out = []
    white = [acc(e, a) for a in WHITE if acc(e, a) is not None]
    wmin = min(white) if white else None
    sq = acc(e, "square-linf")
    if wmin is not None and sq is not None and sq < wmin - GAP:
        out.append("Square below the gradient attacks")
    tr = [v[0] for k, v in e.items() if isinstance(k, tuple) and k[0].startswith("transfer-")]
    if wmin is not None and tr and min(tr) < wmin - GAP:
        out.append("transfer below the white-box attacks")
    f, p = acc(e, "fgsm"), acc(e, "pgd-linf")
    if f is not None and p is not None and f < p - GAP:
        out.append("FGSM below PGD-20")
    a32 = [acc(e, a, 32) for a in WHITE if acc(e, a, 32) is not None]
    if a32 and min(a32) > 1.0:
        out.append("not 0 at 32/255")
    return "; ".join(out) or "none"


def write_evaluation(folder, ev):
    models, common = ev
    fm = lambda v: fmt(v)
    names = sorted(models, key=lambda n: (not n.startswith("plain"), not n.startswith("pgd-at"), n))
    with open(os.path.join(folder, "evaluation.md"), "w") as f:
        f.write("## Gradient-masking diagnostics (robust accuracy %%, Linf 8/255 unless said)\n\n"
                "Flags (a gap of more than %.1f points): Square (no gradients) below the best gradient "
                "attack; a transfer attack below the white-box ones; FGSM below PGD-20; the gradient "
                "attacks' best accuracy above 1%% at 32/255. A model that does not mask has none.\n\n"
                % GAP)
        cols = [("FGSM", "fgsm"), ("PGD-20", "pgd-linf"), ("APGD-CE", "apgd-ce-linf"),
                ("APGD-DLR", "apgd-dlr-linf"), ("APGD-T", "apgd-t-linf"), ("AutoAttack", "autoattack-linf"),
                ("Square", "square-linf")]
        f.write("| model | clean | " + " | ".join(c for c, _ in cols) +
                " | transfer (worst) | gradient best at 32/255 | flags |\n|---|" + "---:|" * (len(cols) + 3) +
                "---|\n")
        for n in names:
            e = models[n]
            tr = [v[0] for k, v in e.items() if isinstance(k, tuple) and k[0].startswith("transfer-")]
            a32 = [acc(e, a, 32) for a in WHITE if acc(e, a, 32) is not None]
            f.write("| %s | %s | %s | %s | %s | %s |\n" % (
                n, fm(e.get("clean")), " | ".join(fm(acc(e, a)) for _, a in cols),
                fm(min(tr) if tr else None), fm(min(a32) if a32 else None), flags(e)))
        base = models.get("pgd-at")
        gfa = [n for n in names if "gfa" in n]
        if base is None or not gfa:
            return
        for rep, (nc, ni, nm) in sorted(common.items()):
            f.write("\n%s: %d of its %d images are classified correctly by all %d models.\n" % (rep, nc, ni, nm))
        f.write("\n## The paper's claims: each GFA model against PGD-AT\n\n"
                "Differences in points of robust accuracy at 8/255 (the claims: APGD +15.2, FGSM +24.7), over "
                "all images / over the common samples; ratios of the median perturbation norms of the "
                "samples each attack fooled (the claim: 20-30x).\n\n"
                "| model | APGD-CE | AutoAttack | FGSM | DeepFool median L2 ratio | EAD-EN median L1 ratio |\n"
                "|---|---:|---:|---:|---:|---:|\n")

        def diff(n, attack):
            out = []
            for w in (0, 1):
                a, b = acc(models[n], attack, 8, w), acc(base, attack, 8, w)
                out.append("-" if a is None or b is None else "%+.2f" % (a - b))
            return " / ".join(out)

        def ratio(n, attack, key):
            a = models[n]["min_norm"].get(attack, {}).get(key)
            b = base["min_norm"].get(attack, {}).get(key)
            return "-" if not a or not b else "%.2fx" % (a / b)

        for n in gfa:
            f.write("| %s | %s | %s | %s | %s | %s |\n" % (
                n, diff(n, "apgd-ce-linf"), diff(n, "autoattack-linf"), diff(n, "fgsm"),
                ratio(n, "deepfool-l2", "median_l2"), ratio(n, "ead", "median_l1")))


class Panel:
    def __init__(self, x, y, w, h, title, xlabel, ylabel, logx=False):
        self.x, self.y, self.w, self.h = x, y, w, h
        self.title, self.xlabel, self.ylabel, self.logx = title, xlabel, ylabel, logx
        self.series = []

    def add(self, label, pts, color, dashed=False):
        pts = [(a, b) for a, b in pts if b is not None and math.isfinite(b)]
        if pts:
            self.series.append((label, pts, color, dashed))

    def svg(self):
        if not self.series:
            return ""
        tx = (lambda v: math.log10(v)) if self.logx else (lambda v: v)
        xs = [tx(a) for _, p, _, _ in self.series for a, _ in p]
        ys = [b for _, p, _, _ in self.series for _, b in p]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys + [0.0]), max(ys)
        if x1 <= x0:
            x0, x1 = x0 - 1, x1 + 1
        if y1 <= y0:
            y1 = y0 + 1
        px = lambda v: self.x + 50 + (tx(v) - x0) / (x1 - x0) * (self.w - 60)
        py = lambda v: self.y + self.h - 30 - (v - y0) / (y1 - y0) * (self.h - 60)
        o = ['<text x="%.0f" y="%.0f" font-size="13" font-weight="bold">%s</text>'
             % (self.x + 50, self.y + 16, self.title),
             '<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>'
             % (self.x + 50, self.y + 30, self.w - 60, self.h - 60)]
        for k in range(5):
            v = y0 + (y1 - y0) * k / 4
            o.append('<text x="%.0f" y="%.0f" font-size="10" text-anchor="end">%.3g</text>'
                     % (self.x + 46, py(v) + 3, v))
        for v in sorted(set(a for _, p, _, _ in self.series for a, _ in p)):
            o.append('<text x="%.0f" y="%.0f" font-size="10" text-anchor="middle">%g</text>'
                     % (px(v), self.y + self.h - 16, v))
        o.append('<text x="%.0f" y="%.0f" font-size="11" text-anchor="middle">%s</text>'
                 % (self.x + self.w / 2, self.y + self.h - 2, self.xlabel))
        o.append('<text x="%.0f" y="%.0f" font-size="11" transform="rotate(-90 %.0f %.0f)" '
                 'text-anchor="middle">%s</text>' % (self.x + 12, self.y + self.h / 2,
                                                     self.x + 12, self.y + self.h / 2, self.ylabel))
        for label, pts, color, dashed in self.series:
            d = " ".join("%.1f,%.1f" % (px(a), py(b)) for a, b in pts)
            o.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="1.8"%s/>'
                     % (d, color, ' stroke-dasharray="5,3"' if dashed else ""))
        return "\n".join(o)


def legend(x, y, items):
    o = []
    for i, (label, color, dashed) in enumerate(items):
        yy = y + 16 * i
        o.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>'
                 % (x, yy, x + 22, yy, color, ' stroke-dasharray="5,3"' if dashed else ""))
        o.append('<text x="%d" y="%d" font-size="11">%s</text>' % (x + 28, yy + 4, label))
    return "\n".join(o)


def write_svg(path, panels, items, width, height):
    with open(path, "w") as f:
        f.write('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
                'font-family="sans-serif">\n<rect width="100%%" height="100%%" fill="white"/>\n'
                % (width, height))
        for p in panels:
            f.write(p.svg() + "\n")
        f.write(legend(width - 250, 30, items) + "\n</svg>\n")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    folder = sys.argv[1]
    rs = runs(folder)
    write_summary(folder, rs)

    sweep = {}
    for r in rs:
        m = re.match(r"sweep-(.*)-([0-9.e+-]+)$", r["name"])
        if m and r["rows"]:
            sweep.setdefault(m.group(1), []).append(
                (float(m.group(2)), float(r["rows"][-1]["align_mean"]), r["pgd"]))
    if sweep:
        pa = Panel(0, 0, 420, 320, "lambda sweep: mean |cos| (last epoch)", "lambda", "mean |cos|", True)
        pb = Panel(420, 0, 420, 320, "lambda sweep: PGD-10 accuracy (500 images)", "lambda", "%", True)
        items = []
        for i, (v, pts) in enumerate(sorted(sweep.items())):
            pts.sort()
            c, dashed = PALETTE[i % len(PALETTE)], "mse" in v
            pa.add(v, [(a, b) for a, b, _ in pts], c, dashed)
            pb.add(v, [(a, p) for a, _, p in pts], c, dashed)
            items.append((v, c, dashed))
        write_svg(os.path.join(folder, "sweep.svg"), [pa, pb], items, 1100, max(340, 30 + 16 * len(items)))

    full = [r for r in rs if not r["name"].startswith("sweep-") and r["rows"]]
    if full:
        ps = [Panel(0, 0, 420, 300, "test accuracy", "epoch", "%"),
              Panel(420, 0, 420, 300, "training loss (CE or MSE, as trained)", "epoch", "loss"),
              Panel(0, 300, 420, 300, "mean |cos(g, h)| over hooks", "epoch", "|cos|"),
              Panel(420, 300, 420, 300, "training accuracy (adversarial for PGD-AT)", "epoch", "%")]
        items = []
        for i, r in enumerate(full):
            c, dashed = PALETTE[i % len(PALETTE)], "mse" in r["name"]
            e = [int(x["epoch"]) for x in r["rows"]]
            ps[0].add(r["name"], list(zip(e, [100 * float(x["test_acc"]) for x in r["rows"]])), c, dashed)
            ps[1].add(r["name"], list(zip(e, [float(x["train_loss"]) for x in r["rows"]])), c, dashed)
            al = [float(x["align_mean"]) for x in r["rows"]]
            if any(a > 0 for a in al):
                ps[2].add(r["name"], list(zip(e, al)), c, dashed)
            ps[3].add(r["name"], list(zip(e, [100 * float(x["train_acc"]) for x in r["rows"]])), c, dashed)
            items.append((r["name"], c, dashed))
        write_svg(os.path.join(folder, "curves.svg"), ps, items, 1110, max(620, 30 + 16 * len(items)))
    ev = evaluation(folder)
    if ev:
        write_evaluation(folder, ev)
    print("wrote summary.md%s%s%s in %s" % (", sweep.svg" if sweep else "", ", curves.svg" if full else "",
                                            ", evaluation.md" if ev else "", folder))


if __name__ == "__main__":
    main()
