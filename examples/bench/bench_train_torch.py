#!/usr/bin/env python3
"""bench_train_torch: the same training step as bench_train, in PyTorch, for a like-for-like throughput figure.

The model is the header's (fbi_llm.hpp §5): token embedding, L blocks of [x + Attn(RMSNorm(x)); h + MLP(RMSNorm(h))]
with rotate-half RoPE and SwiGLU, a final RMSNorm and an untied LM head, no biases. The student's block linears are
FBI-linears (W_hat = alpha * sign(W) + beta, one alpha and beta per input column, identity straight-through
estimator); its loss is autoregressive distillation against a frozen FP teacher whose forward runs under no_grad.
AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices), gradient clipping at 1.0, as in TrainOptions.

usage: bench_train_torch.py OUT.csv [SHAPE ...]    SHAPE: tiny small wide (default: tiny)
Writes one CSV row per (shape, run, threads): median ms per step and tokens/s; bench_train reads it and prints
its own figures against these. Only a benchmark: nothing here is a test.
"""
import ctypes
import math
import os
import statistics
import sys
import time


def openblas_core_from_flags():
    """Debian's OpenBLAS picks its kernels from the CPU model and falls back to a generic SSE3 one ("Prescott",
    4-5x slower) on models it does not know, as on some virtual Xeons: name the core from the CPU's flags instead."""
    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        return None
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


# Read when the library loads. A value inherited from the environment is replaced too: this script is a baseline,
# and OPENBLAS_CORETYPE=Haswell on an AVX-512 machine (seen here) ran the tiny step 2.5x slower than SkylakeX.
CORE = openblas_core_from_flags()
CORE_NOTE = ""
if CORE:
    inherited = os.environ.get("OPENBLAS_CORETYPE")
    if inherited and inherited != CORE:
        CORE_NOTE = f" (OPENBLAS_CORETYPE={inherited} from the environment replaced by the CPU flags' choice)"
    os.environ["OPENBLAS_CORETYPE"] = CORE
import torch  # noqa: E402


def blas_library():
    """The BLAS library torch loaded (a ctypes handle) and its path, or (None, reason)."""
    for line in open("/proc/self/maps"):
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if "blas" in path and ".so" in path:
            try:
                return ctypes.CDLL(path), path
            except OSError:
                return None, path
    return None, "no BLAS library found"


def blas_name():
    """The BLAS library torch loaded, and for OpenBLAS the kernel set it runs."""
    lib, path = blas_library()
    try:
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return f"OpenBLAS ({lib.openblas_get_corename().decode()} kernels; {path})"
    except AttributeError:  # no library (lib is None) or not OpenBLAS
        return path

# name: (V, C, L, NH, F, T, B) — the shapes bench_train runs (V = 65, TinyShakespeare's characters)
SHAPES = {
    "tiny": (65, 128, 4, 4, 344, 64, 12),
    "small": (65, 192, 6, 6, 512, 128, 16),
    "wide": (65, 384, 4, 6, 1024, 64, 12),
}
WARMUP, REPS = 5, 30


def rmsnorm(x, g):
    return g * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)


def rope_tables(T, hs):
    half = hs // 2
    inv = 10000.0 ** (-2.0 * torch.arange(half, dtype=torch.float64) / hs)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def rope(x, cos, sin):  # x: B, NH, T, hs; "rotate half"
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


class Model(torch.nn.Module):
    def __init__(self, V, C, L, NH, F, T, fbi):
        super().__init__()
        self.C, self.NH, self.fbi = C, NH, fbi
        mat = lambda m, n: torch.nn.Parameter(torch.randn(m, n) * 0.02)
        self.emb = mat(V, C)
        self.blocks = torch.nn.ModuleList()
        for _ in range(L):
            blk = torch.nn.Module()
            blk.n1, blk.n2 = torch.nn.Parameter(torch.ones(C)), torch.nn.Parameter(torch.ones(C))
            blk.w = torch.nn.ParameterList([mat(C, C) for _ in range(4)] + [mat(F, C), mat(F, C), mat(C, F)])
            if fbi:  # [F4]: beta = column mean, alpha = column mean absolute deviation
                blk.beta = torch.nn.ParameterList([torch.nn.Parameter(w.detach().mean(0)) for w in blk.w])
                blk.alpha = torch.nn.ParameterList(
                    [torch.nn.Parameter((w.detach() - b.detach()).abs().mean(0)) for w, b in zip(blk.w, blk.beta)])
            self.blocks.append(blk)
        self.nf = torch.nn.Parameter(torch.ones(C))
        self.head = mat(V, C)
        self.cos, self.sin = rope_tables(T, C // NH)

    def weight(self, blk, i):
        w = blk.w[i]
        if not self.fbi:
            return w
        s = w + (torch.where(w > 0, 1.0, -1.0) - w).detach()  # sign with the identity STE
        return blk.alpha[i] * s + blk.beta[i]

    def forward(self, idx):
        B, T = idx.shape
        NH, hs = self.NH, self.C // self.NH
        cos, sin = self.cos[:T], self.sin[:T]
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.emb[idx]
        for blk in self.blocks:
            W = [self.weight(blk, i) for i in range(7)]
            u = rmsnorm(x, blk.n1)
            q, k, v = [(u @ W[i].t()).view(B, T, NH, hs).transpose(1, 2) for i in range(3)]
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hs) + mask, dim=-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, self.C)
            h = x + y @ W[3].t()
            u = rmsnorm(h, blk.n2)
            x = h + (torch.nn.functional.silu(u @ W[4].t()) * (u @ W[5].t())) @ W[6].t()
        return rmsnorm(x, self.nf) @ self.head.t()


def optimizer(model):
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    rest = [p for n, p in model.named_parameters() if p.dim() != 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                             lr=1e-3, betas=(0.9, 0.95), eps=1e-8)


def time_run(shape, student, threads, blas_threads):
    V, C, L, NH, F, T, B = SHAPES[shape]
    torch.set_num_threads(threads)
    lib, _ = blas_library()
    if lib is not None and hasattr(lib, "openblas_set_num_threads"):
        lib.openblas_set_num_threads(blas_threads)  # OpenBLAS keeps its own thread pool beside torch's OpenMP one
    torch.manual_seed(1)
    teacher = Model(V, C, L, NH, F, T, False)
    for p in teacher.parameters():
        p.requires_grad_(False)
    model = Model(V, C, L, NH, F, T, student)
    opt = optimizer(model)
    data = torch.randint(0, V, (B, T + 1))
    x, y = data[:, :-1], data[:, 1:]
    ms, reps = [], REPS if C < 384 and T < 128 else REPS // 2  # as bench_train
    for s in range(WARMUP + reps):
        t0 = time.perf_counter()
        logits = model(x)
        if student:
            with torch.no_grad():
                pt = torch.softmax(teacher(x), dim=-1)
            loss = -(pt * torch.log_softmax(logits, dim=-1)).sum(-1).mean()  # [D1]
        else:
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))  # [D0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s >= WARMUP:
            ms.append(1e3 * (time.perf_counter() - t0))
    med = statistics.median(ms)
    return med, B * T / (med * 1e-3)


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: bench_train_torch.py OUT.csv [tiny|small|wide ...]")
    shapes = sys.argv[2:] or ["tiny"]
    for s in shapes:
        if s not in SHAPES:
            sys.exit(f"bench_train_torch: unknown shape '{s}' (tiny, small, wide)")
    print(f"bench_train_torch | PyTorch {torch.__version__}, {blas_name()}{CORE_NOTE} | median of {REPS} steps ({REPS // 2} at the larger shapes) after {WARMUP}")
    rows = ["shape,run,threads,ms_per_step,tokens_per_s"]
    for shape in shapes:
        for threads in (1, 2):
            for student in (False, True):
                # 1 thread: BLAS on 1 thread too. 2 threads: the better of BLAS on 1 thread (torch's OpenMP threads
                # run the element-wise work) and on 2 (both pools busy-wait for each other on 2 cores: often slower).
                med, tps, blas = min((time_run(shape, student, threads, b) + (b,) for b in range(1, threads + 1)))
                run = "student" if student else "teacher"
                print(f"  {shape:6s} {run:8s} {threads} thread(s): {med:8.2f} ms/step {tps:9.0f} tokens/s"
                      f" (BLAS on {blas} thread(s))", flush=True)
                rows.append(f"{shape},{run},{threads},{med:.3f},{tps:.1f}")
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write("\n".join(rows) + "\n")
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])


if __name__ == "__main__":
    main()
