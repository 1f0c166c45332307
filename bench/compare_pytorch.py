#!/usr/bin/python3
"""bench/compare_pytorch.py -- the dd_bench measurements, in PyTorch 1.13.

Run with Debian's interpreter and torch (python3-torch 1.13):

    /usr/bin/python3 bench/compare_pytorch.py --arch cnn-cw --mode plain \
        --batch 128 --steps 20 --threads 2

Same models as lib/zoo/zoo.c (cnn-cw, resnet20, preact-resnet18, with the
CIFAR-10 normalize layer first), same synthetic batch (pixels uniform in
[0,1), labels i % 10), same modes and the same JSON line as bench/dd_bench.c
with "impl":"pytorch":

  plain   zero_grad, forward (train), cross-entropy, backward, SGD step
  infer   forward in eval mode under torch.inference_mode()
  gfa     J = L + sum_t lambda R_t over the default hooks (the input of every
          Conv2d and Linear, the normalised image included): g = B * dL/dh by
          torch.autograd.grad(L, hooked, create_graph=True), R = mean(1 - c^2),
          c = <g,h> / sqrt((|g|^2 + eps)(|h|^2 + eps)), eps = 1e-12
          (shared/GFA.md), then J.backward() and the SGD step
  pgd-at  PGD-10 Linf (eps 8/255, step 2/255, uniform random start, eval mode,
          torchattacks' loop: 10 forward + input-gradient passes), then a
          plain training step on x_adv in train mode

Best configuration on this machine (issue 2): torch.set_num_threads(threads);
OpenBLAS as the BLAS (Debian's torch links the generic libblas.so.3, which may
resolve to the reference netlib BLAS: the OpenBLAS libblas is LD_PRELOADed);
glibc malloc tuned so that freed activations stay in the heap
(MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_, and
MALLOC_MMAP_MAX_=0 because glibc caps the mmap threshold at 32 MiB, below
some activations of preact-resnet18 at batch 128). LD_PRELOAD and malloc
settings only act at process start, so unless --no-reexec is given the
script re-executes itself with them (environment values already set win).
Both NCHW and channels_last are timed and the faster is reported, with the
other's median in "other_layout_ms". Timing, the disturbed-step check, FLOP
counting and peak RSS follow bench/dd_bench.c; "primitive_ms" is null (no
hook into PyTorch's oneDNN calls).
"""

import argparse
import glob
import json
import math
import os
import resource
import sys
import time

OPENBLAS_GLOBS = [
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib/*/openblas*/libblas.so.3",
]
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),  # glibc's maximum (larger values are ignored)
    "MALLOC_MMAP_MAX_": "0",                  # so everything larger comes from the heap as well
    "MALLOC_TRIM_THRESHOLD_": str(64 << 30),  # never give freed memory back
    "MALLOC_TOP_PAD_": str(256 << 20),        # grow the heap in large steps
}
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
NUM_CLASSES = 10
EPS_GFA = 1e-12


def find_openblas():
    for pat in OPENBLAS_GLOBS:
        hits = sorted(glob.glob(pat))
        if hits:
            return hits[0]
    return None


def reexec_if_needed(args):
    """Re-executes this script with LD_PRELOAD, malloc and thread settings."""
    if args.no_reexec or os.environ.get("DD_BENCH_REEXEC") == "1":
        return
    env = dict(os.environ)
    env["DD_BENCH_REEXEC"] = "1"
    blas = find_openblas()
    if blas and "LD_PRELOAD" not in env:
        env["LD_PRELOAD"] = blas
    elif not blas:
        print("compare_pytorch: OpenBLAS libblas.so.3 not found "
              "(apt-get install libopenblas0-pthread)", file=sys.stderr)
    for k, v in MALLOC_ENV.items():
        env.setdefault(k, v)
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    env.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def loaded_blas():
    """Path of the libblas / libopenblas mapped into this process."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1]
                if "blas" in os.path.basename(p):
                    libs.add(os.path.realpath(p))
    except OSError:
        pass
    return sorted(libs)


# ---- models, as lib/zoo/zoo.c builds them -------------------------------------

def build_model(torch, arch):
    nn = torch.nn

    class Normalize(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1))

        def forward(self, x):
            return (x - self.mean) / self.std

    class BasicBlock(nn.Module):
        """He et al. block; 1x1 stride-s conv + BN shortcut when the shape changes."""

        def __init__(self, inp, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or inp != planes:
                self.shortcut = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, 0, bias=False),
                                              nn.BatchNorm2d(planes))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + self.shortcut(x))

    class ResNet20(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            layers, inp = [], 16
            for stage in range(3):
                planes = 16 << stage
                blocks = []
                for i in range(3):
                    blocks.append(BasicBlock(inp, planes, 2 if (i == 0 and stage > 0) else 1))
                    inp = planes
                layers.append(nn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3 = layers
            self.linear = nn.Linear(64, k)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
            return self.linear(x)

    class PreActBlock(nn.Module):
        """out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut, shortcut = 1x1 conv of relu(bn1(x))."""

        def __init__(self, inp, planes, stride):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(inp)
            self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.shortcut = None
            if stride != 1 or inp != planes:
                self.shortcut = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, 0, bias=False))

        def forward(self, x):
            o = torch.relu(self.bn1(x))
            sc = self.shortcut(o) if self.shortcut is not None else x
            y = self.conv1(o)
            y = self.conv2(torch.relu(self.bn2(y)))
            return y + sc

    class PreActResNet18(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            layers, inp = [], 64
            for stage in range(4):
                planes = 64 << stage
                blocks = []
                for i in range(2):
                    blocks.append(PreActBlock(inp, planes, 2 if (i == 0 and stage > 0) else 1))
                    inp = planes
                layers.append(nn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.bn = nn.BatchNorm2d(512)
            self.linear = nn.Linear(512, k)

        def forward(self, x):
            x = self.conv1(x)
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = torch.relu(self.bn(x))
            x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
            return self.linear(x)

    if arch == "cnn-cw":
        body = nn.Sequential(
            nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3), nn.ReLU(), nn.Conv2d(128, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(3200, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, NUM_CLASSES))
    elif arch == "resnet20":
        body = ResNet20(NUM_CLASSES)
    elif arch == "preact-resnet18":
        body = PreActResNet18(NUM_CLASSES)
    else:
        raise ValueError("unknown arch " + arch)
    for mod in body.modules():  # He/Kaiming initialisation, as the library
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
    return nn.Sequential(Normalize(), body)


# ---- FLOPs, counted as bench/dd_bench.c does -----------------------------------

def count_flops(torch, model, x):
    """(fwd, bwd_data): 2*MACs of every Conv2d/Linear forward; bwd_data only
    for layers whose input needs a gradient in a plain step (not the first conv)."""
    nn = torch.nn
    acc = {"fwd": 0.0, "bwd_data": 0.0}

    def hook(mod, inp, out):
        i = inp[0]
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            fl = 2.0 * out.numel() * (mod.in_channels // mod.groups) * kh * kw
        else:
            fl = 2.0 * out.numel() * mod.in_features
        acc["fwd"] += fl
        if i.requires_grad:
            acc["bwd_data"] += fl

    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.train()
    model(x)
    for h in hs:
        h.remove()
    return acc["fwd"], acc["bwd_data"]


def sgemm_peak(torch):
    """Best GFLOP/s of 5 torch.mm at 1024^3 (the BLAS torch uses), after a warm-up."""
    n = 1024
    a = torch.rand(n, n) - 0.5
    b = torch.rand(n, n) - 0.5
    best = 0.0
    for r in range(6):
        t0 = time.perf_counter()
        torch.mm(a, b)
        t = time.perf_counter() - t0
        if r > 0:
            best = max(best, 2.0 * n ** 3 / t * 1e-9)
    return best


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---- steps ----------------------------------------------------------------------

class Bench:
    def __init__(self, torch, args, layout):
        self.torch, self.args = torch, args
        torch.manual_seed(args.seed)
        g = torch.Generator().manual_seed(args.seed)
        self.channels_last = layout == "channels_last"
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = build_model(torch, args.arch).to(memory_format=fmt)
        self.x = torch.rand(args.batch, 3, 32, 32, generator=g).contiguous(memory_format=fmt)
        self.y = torch.arange(args.batch) % NUM_CLASSES
        decay, no_decay = [], []
        for mod in self.model.modules():  # as the library: no decay on biases and batch norm
            for name, p in mod.named_parameters(recurse=False):
                is_w = name == "weight" and isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))
                (decay if is_w else no_decay).append(p)
        self.opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                                    {"params": no_decay, "weight_decay": 0.0}],
                                   lr=0.01, momentum=0.9)
        self.hooked = []
        self.hook_handles = []
        self.num_hooks = 0

    # plain ------------------------------------------------------------------
    def train_on(self, x):
        F = self.torch.nn.functional
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(x), self.y)
        loss.backward()
        self.opt.step()

    def step_plain(self):
        self.train_on(self.x)

    # infer ------------------------------------------------------------------
    def step_infer(self):
        self.model.eval()
        with self.torch.inference_mode():
            self.model(self.x)

    # gfa --------------------------------------------------------------------
    def enable_gfa(self):
        nn = self.torch.nn

        def pre_hook(mod, inp):
            # a tensor feeding several layers (a block input: conv1 and the
            # shortcut) is one hook, as in the library
            if not any(h is inp[0] for h in self.hooked):
                self.hooked.append(inp[0])

        for mod in self.model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                self.hook_handles.append(mod.register_forward_pre_hook(pre_hook))

    def step_gfa(self):
        torch = self.torch
        F = torch.nn.functional
        lam, B = self.args.gfa_lambda, self.args.batch
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        self.hooked = []
        x = self.x.detach().requires_grad_(True)  # so the normalised image (a hook) has a gradient
        loss = F.cross_entropy(self.model(x), self.y)
        grads = torch.autograd.grad(loss, self.hooked, create_graph=True)
        obj = loss
        for h, G in zip(self.hooked, grads):
            hf = h.reshape(B, -1)
            gf = (B * G).reshape(B, -1)
            a = (gf * hf).sum(1)
            p = (gf * gf).sum(1) + EPS_GFA
            q = (hf * hf).sum(1) + EPS_GFA
            c = a / torch.sqrt(p * q)
            obj = obj + lam * (1.0 - c * c).mean()
        obj.backward()
        self.opt.step()
        self.num_hooks = len(self.hooked)
        self.hooked = []

    # pgd-at -----------------------------------------------------------------
    def pgd(self):
        torch = self.torch
        F = torch.nn.functional
        eps, alpha = 8.0 / 255.0, 2.0 / 255.0
        self.model.eval()
        x = self.x
        x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp_(0.0, 1.0).detach()
        for _ in range(10):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(self.model(x_adv), self.y)
            (g,) = torch.autograd.grad(loss, [x_adv])
            x_adv = x_adv.detach() + alpha * g.sign()
            x_adv = (x + (x_adv - x).clamp_(-eps, eps)).clamp_(0.0, 1.0).detach()
        return x_adv

    def step_pgd_at(self):
        self.train_on(self.pgd())


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def measure(args, fn):
    wall, util, good = [], [], []
    disturbed = 0
    for i in range(args.warmup + args.steps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        t1, c1 = time.perf_counter(), time.process_time()
        if i < args.warmup:
            continue
        w = t1 - t0
        u = (c1 - c0) / (args.threads * w)
        wall.append(w)
        util.append(u)
        if u >= 0.9:
            good.append(w)
        else:
            disturbed += 1
    return {"ms_median": 1e3 * median(wall), "ms_min": 1e3 * min(wall),
            "ms_undisturbed": 1e3 * median(good) if good else None,
            "cpu_util": median(util), "disturbed": disturbed}


def jclean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return round(v, 6) if isinstance(v, float) else v


def emit(args, mode, t, layout, other_ms, peak, gflop, extra=None):
    d = {"impl": "pytorch", "arch": args.arch, "mode": mode, "batch": args.batch,
         "threads": args.threads,
         "images_per_s": args.batch / (t["ms_median"] * 1e-3),
         "ms_per_step": t["ms_median"], "ms_min": t["ms_min"],
         "ms_undisturbed": t["ms_undisturbed"], "primitive_ms": None, "outside_frac": None,
         "peak_gflops": peak, "gflop_per_step": gflop,
         "efficiency": gflop / (t["ms_median"] * 1e-3) / peak if peak > 0 else None,
         "steps": args.steps, "disturbed": t["disturbed"], "cpu_util": t["cpu_util"],
         "peak_rss_mb": peak_rss_mb(), "layout": layout, "other_layout_ms": other_ms,
         "blas": "openblas" if any("openblas" in p for p in loaded_blas()) else "other"}
    if extra:
        d.update(extra)
    print(json.dumps({k: jclean(v) for k, v in d.items()}), flush=True)


def run_mode(torch, args, mode, layouts, state):
    """Times `mode` in each layout on fresh models; returns (best timing, layout, other ms, extras)."""
    results = {}
    extras = {}
    for layout in layouts:
        b = Bench(torch, args, layout)
        if mode == "gfa":
            b.enable_gfa()
        fn = {"plain": b.step_plain, "infer": b.step_infer, "gfa": b.step_gfa,
              "pgd-at": b.step_pgd_at}[mode]
        results[layout] = measure(args, fn)
        if mode == "gfa":
            extras["hooks"] = b.num_hooks  # distinct hooked tensors
        if "flops" not in state:
            state["flops"] = count_flops(torch, b.model, b.x)
        del fn, b
    best = min(results, key=lambda k: results[k]["ms_median"])
    others = [results[k]["ms_median"] for k in results if k != best]
    return results[best], best, (others[0] if others else None), extras


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="cnn-cw", choices=["cnn-cw", "resnet20", "preact-resnet18"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", default="all", choices=["plain", "infer", "gfa", "pgd-at", "all"])
    ap.add_argument("--gfa-lambda", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--layout", default="best", choices=["best", "nchw", "channels_last"])
    ap.add_argument("--no-reexec", action="store_true",
                    help="do not re-execute with LD_PRELOAD=OpenBLAS and the malloc settings")
    args = ap.parse_args()
    if args.batch < 1 or args.steps < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("batch, steps, threads >= 1; warmup >= 0")
    reexec_if_needed(args)

    import torch
    torch.set_num_threads(args.threads)
    print("compare_pytorch: torch %s, threads %d, blas %s, LD_PRELOAD=%s, %s" % (
        torch.__version__, torch.get_num_threads(), ",".join(loaded_blas()) or "?",
        os.environ.get("LD_PRELOAD", ""),
        " ".join("%s=%s" % (k, os.environ.get(k, "")) for k in MALLOC_ENV)), file=sys.stderr)

    layouts = ["nchw", "channels_last"] if args.layout == "best" else [args.layout]
    peak = sgemm_peak(torch)
    state = {}
    want = ["plain", "infer", "pgd-at", "gfa"] if args.mode == "all" else (
        [args.mode] if args.mode in ("plain", "infer") else ["plain", args.mode])

    plain_ms = plain_rss = None
    for mode in want:
        t, layout, other, extra = run_mode(torch, args, mode, layouts, state)
        fwd, bwd_data = state["flops"]
        if mode == "plain":
            plain_ms, plain_rss = t["ms_median"], peak_rss_mb()
            gflop = 2 * fwd + bwd_data
        elif mode == "infer":
            gflop = fwd
        elif mode == "gfa":
            # backward to the image hook (2 fwd), tangent (2 fwd), second backward (fwd + bwd_data)
            gflop = 6 * fwd + bwd_data
            extra.update({"ratio_to_plain": t["ms_median"] / plain_ms,
                          "rss_ratio_to_plain": peak_rss_mb() / plain_rss,
                          "gfa_lambda": args.gfa_lambda})
        else:
            gflop = 2 * fwd + bwd_data + 20 * fwd  # 10 forward + 10 input-gradient passes
            extra.update({"ratio_to_plain": t["ms_median"] / plain_ms,
                          "attack_forward_passes": 10, "attack_gradient_passes": 10})
        emit(args, mode, t, layout, other, peak, gflop * 1e-9, extra)


if __name__ == "__main__":
    main()
