#!/usr/bin/python3
"""tests/study/check_study_report.py -- tools/study_report.py's evaluation.md
against hand-made report JSONs whose answers are known: the diagnostics
table's cells, each masking flag raised exactly where its sign is planted
(and none for a model without one), the common-sample count, and the claims
table's differences and norm ratios against PGD-AT. Exits non-zero on the
first wrong cell."""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, "..", "..", "tools", "study_report.py")
E8, E32 = 8 / 255, 32 / 255


def rows(acc, common=None):
    """robust rows from {(attack, eps): accuracy in [0,1]}"""
    return [{"attack": a, "norm": "Linf", "eps": e, "eps_pm1": 2 * e, "accuracy": v,
             "accuracy_common": (common or {}).get((a, e)), "seconds": 1.0, "from_min_norm": False}
            for (a, e), v in acc.items()]


def model(name, clean, acc, common=None, min_norm=()):
    return {"name": name, "path": name + ".safetensors", "input_range": "pm1", "clean_accuracy": clean,
            "robust": rows(acc, common), "min_norm": list(min_norm)}


def grad(fgsm, pgd, ce, dlr, t, t32, transfer):
    return {("fgsm", E8): fgsm, ("pgd-linf", E8): pgd, ("apgd-ce-linf", E8): ce, ("apgd-dlr-linf", E8): dlr,
            ("apgd-t-linf", E8): t, ("fgsm", E32): t32, ("pgd-linf", E32): t32, ("apgd-ce-linf", E32): t32,
            ("apgd-dlr-linf", E32): t32, ("apgd-t-linf", E32): t32, ("transfer-pgd<-plain-ce", E8): transfer}


def mn(attack, key, v):
    r = {"attack": attack, "images": 1000, "fooled": 10, "seconds": 1.0}
    for k in ("l2", "l1", "linf"):
        r["median_" + k] = r["mean_" + k] = None
    r[key] = v
    return r


def main():
    gradient = {"data": "x", "images": 1000, "common_images": 400, "models": [
        model("plain-ce", 0.75, grad(0.03, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
        model("pgd-at", 0.47, grad(0.32, 0.29, 0.28, 0.27, 0.26, 0.0, 0.40),
              {("apgd-ce-linf", E8): 0.50, ("fgsm", E8): 0.60}),
        # every sign of masking: FGSM below PGD, transfer below white-box, 30% left at 32/255
        model("gfa-masked", 0.60, grad(0.20, 0.45, 0.44, 0.43, 0.42, 0.30, 0.10),
              {("apgd-ce-linf", E8): 0.70, ("fgsm", E8): 0.40}),
    ]}
    ens = {"data": "x", "images": 1000, "common_images": 400, "models": [
        model("plain-ce", 0.75, {("autoattack-linf", E8): 0.0, ("square-linf", E8): 0.0},
              min_norm=[mn("deepfool-l2", "median_l2", 0.1), mn("ead", "median_l1", 1.0)]),
        model("pgd-at", 0.47, {("autoattack-linf", E8): 0.25, ("square-linf", E8): 0.30},
              {("autoattack-linf", E8): 0.45}, [mn("deepfool-l2", "median_l2", 0.5), mn("ead", "median_l1", 4.0)]),
        model("gfa-masked", 0.60, {("autoattack-linf", E8): 0.05, ("square-linf", E8): 0.05},
              {("autoattack-linf", E8): 0.08}, [mn("deepfool-l2", "median_l2", 2.0), mn("ead", "median_l1", 12.0)]),
    ]}
    with tempfile.TemporaryDirectory() as d:
        for name, rep in (("report-gradient", gradient), ("report-ensemble", ens)):
            with open(os.path.join(d, name + ".json"), "w") as f:
                json.dump(rep, f)
        subprocess.run([sys.executable, TOOL, d], check=True, stdout=subprocess.DEVNULL)
        text = open(os.path.join(d, "evaluation.md")).read()
    lines = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]]
             for l in text.splitlines() if l.startswith("| ") and not l.startswith("| model")}
    diag = text[:text.index("## The paper's claims")]
    diag_rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]]
                 for l in diag.splitlines() if l.startswith("| ") and not l.startswith("| model")}
    want = {
        # clean FGSM PGD CE DLR T AA Square transfer 32/255 flags
        "pgd-at": ["47.00", "32.00", "29.00", "28.00", "27.00", "26.00", "25.00", "30.00", "40.00", "0.00",
                   "none"],
        "gfa-masked": ["60.00", "20.00", "45.00", "44.00", "43.00", "42.00", "5.00", "5.00", "10.00", "30.00",
                       "Square below the gradient attacks; transfer below the white-box attacks; "
                       "FGSM below PGD-20; not 0 at 32/255"],
    }
    bad = 0
    for n, w in want.items():
        if diag_rows.get(n) != w:
            print("FAIL: diagnostics row %s:\n  got  %s\n  want %s" % (n, diag_rows.get(n), w))
            bad = 1
    claims = lines.get("gfa-masked")
    want_claims = ["+16.00 / +20.00", "-20.00 / -37.00", "-12.00 / -20.00", "4.00x", "3.00x"]
    if claims != want_claims:
        print("FAIL: claims row gfa-masked:\n  got  %s\n  want %s" % (claims, want_claims))
        bad = 1
    if "400 of its 1000 images are classified correctly by all 3 models" not in text:
        print("FAIL: the common-sample count is not stated")
        bad = 1
    if not bad:
        print("PASS: study_report.py evaluation.md")
    return bad


if __name__ == "__main__":
    sys.exit(main())
