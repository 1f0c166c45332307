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
               |cos| per epoch.
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
    print("wrote summary.md%s%s in %s" % (", sweep.svg" if sweep else "", ", curves.svg" if full else "",
                                          folder))


if __name__ == "__main__":
    main()
