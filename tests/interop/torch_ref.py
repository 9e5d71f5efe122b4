#!/usr/bin/env python3
"""An independent PyTorch reference for the FBI-LLM file format, written from the equations (not from the C++).

A small LLaMA (RMSNorm, rotate-half RoPE, causal attention, SwiGLU, untied head) whose block linears are either
plain nn.Linear-style weights or the official FBI-LLM layer: a latent `weight` [out, in] and `wscale`, `wbias`
[1, in], forward  W_hat = wscale * sign(weight) + wbias  (torch.sign, as the official code), identity STE.
It reads and writes model directories in the release layout (config.json; pytorch_model.bin, sharded .bin with
pytorch_model.bin.index.json, or model.safetensors) without the transformers or safetensors packages.

  torch_ref.py write DIR [--config tiny|130m|1.3b] [--format bin|bin-sharded|safetensors|safetensors-sharded]
                         [--dtype fp32|bf16|fp16] [--plain] [--seed N] [--vocab V] [--ctx T]
                                                                            a synthetic checkpoint, release format
  torch_ref.py logits DIR --tokens 1,2,3 --out FILE                         fp32 logits (T×V), raw little-endian
  torch_ref.py eval DIR --corpus TXT [--T 64] [--windows N]                 validation CE, the C++ windows
  torch_ref.py write-stream DIR --config 7b [--seed N]                      the same, one tensor in memory at a time
                                                                            (sharded fp32 safetensors: the 7B shape)
  torch_ref.py generate DIR --tokens 1,2,3 --n N [--eos 2]                 greedy continuation, the new ids
  torch_ref.py ppl DIR --tokenizer M --text FILE [--window 2048] [--windows N]
                                                                            the FBI-LLM paper's perplexity protocol
  torch_ref.py train DIR --teacher TDIR --corpus TXT --out DIR2 [--steps 5] [--lr 1e-4] [--B 12] [--T 64]
                                                                            AdamW steps of AD distillation
Needs Debian's python3-torch and python3-numpy (run with /usr/bin/python3).
"""
import argparse, json, math, os, struct, sys
import numpy as np
import torch
import torch.nn.functional as Fn

CONFIGS = {  # (layers, hidden, intermediate, heads, vocab, context)
    "tiny": (2, 64, 176, 4, 97, 32),
    "130m": (12, 768, 2048, 12, 32000, 2048),
    "1.3b": (24, 2048, 5632, 32, 32000, 2048),
    "7b": (32, 4096, 11008, 32, 32000, 2048),
}
PROJ = [("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
        ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj")]


def hf_config(layers, hidden, inter, heads, vocab, ctx):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "hidden_size": hidden, "intermediate_size": inter, "num_attention_heads": heads,
            "num_key_value_heads": heads, "num_hidden_layers": layers, "vocab_size": vocab,
            "max_position_embeddings": ctx, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": False, "torch_dtype": "float32"}


def proj_shape(cfg, name):
    C, F = cfg["hidden_size"], cfg["intermediate_size"]
    return {"gate_proj": (F, C), "up_proj": (F, C), "down_proj": (C, F)}.get(name, (C, C))


# ---- files --------------------------------------------------------------------------------------------------------
ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, e in header.items():
        if k == "__metadata__":
            continue
        b, en = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:en]), dtype=ST_DTYPES[e["dtype"]]) if en > b else torch.empty(0)
        out[k] = t.reshape(e["shape"]).clone()
    return out


def write_safetensors(path, sd):
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    header, blobs, at = {}, [], 0
    for k, t in sd.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def load_dir(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    sd = {}
    if os.path.exists(os.path.join(d, "model.safetensors")):
        sd = read_safetensors(os.path.join(d, "model.safetensors"))
    elif os.path.exists(os.path.join(d, "model.safetensors.index.json")):
        for f in sorted(set(json.load(open(os.path.join(d, "model.safetensors.index.json")))["weight_map"].values())):
            sd.update(read_safetensors(os.path.join(d, f)))
    elif os.path.exists(os.path.join(d, "pytorch_model.bin")):
        sd = torch.load(os.path.join(d, "pytorch_model.bin"), map_location="cpu", weights_only=True)
    else:
        for f in sorted(set(json.load(open(os.path.join(d, "pytorch_model.bin.index.json")))["weight_map"].values())):
            sd.update(torch.load(os.path.join(d, f), map_location="cpu", weights_only=True))
    return cfg, {k: v.float() for k, v in sd.items()}


def save_dir(d, cfg, sd, fmt="safetensors", dtype=torch.float32):
    os.makedirs(d, exist_ok=True)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    sd = {k: v.to(dtype).contiguous() for k, v in sd.items()}
    keys = list(sd)
    half = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    if fmt == "bin":
        torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    elif fmt == "safetensors":
        write_safetensors(os.path.join(d, "model.safetensors"), sd)
    else:  # sharded: two files and an index, as save_pretrained writes them
        ext = "bin" if fmt == "bin-sharded" else "safetensors"
        stem = "pytorch_model" if ext == "bin" else "model"
        wmap = {}
        for i, part in enumerate(half):
            name = f"{stem}-{i + 1:05d}-of-00002.{ext}"
            shard = {k: sd[k] for k in part}
            torch.save(shard, os.path.join(d, name)) if ext == "bin" else write_safetensors(os.path.join(d, name), shard)
            wmap.update({k: name for k in part})
        total = sum(t.numel() * t.element_size() for t in sd.values())
        json.dump({"metadata": {"total_size": total}, "weight_map": wmap},
                  open(os.path.join(d, f"{stem}.{ext}.index.json"), "w"), indent=2)


def synthetic(cfg, fbi, seed):
    """Random weights in the release layout: latent N(0, 0.02²); wscale, wbias from the FBI-LLM init plus noise."""
    g = torch.Generator().manual_seed(seed)
    C, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    rnd = lambda *s: torch.randn(*s, generator=g) * 0.02
    sd = {"model.embed_tokens.weight": rnd(V, C)}
    for i in range(L):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
        for mod, name in PROJ:
            W = rnd(*proj_shape(cfg, name))
            sd[f"{p}{mod}.{name}.weight"] = W
            if fbi:
                beta = W.mean(0, keepdim=True)
                sd[f"{p}{mod}.{name}.wscale"] = (W - beta).abs().mean(0, keepdim=True) * (1 + 0.1 * torch.rand(1, W.shape[1], generator=g))
                sd[f"{p}{mod}.{name}.wbias"] = beta + 0.001 * torch.randn(1, W.shape[1], generator=g)
        sd[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
    sd["model.norm.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
    sd["lm_head.weight"] = rnd(V, C)
    return sd


def write_stream(d, cfg, seed, shard_bytes=2 << 30):
    """A synthetic FBI-LLM as sharded fp32 safetensors, written one tensor at a time (a 7B model is 27 GB)."""
    C, F, V, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    keys = [("model.embed_tokens.weight", (V, C))]
    for i in range(L):
        p = f"model.layers.{i}."
        keys.append((p + "input_layernorm.weight", (C,)))
        for mod, name in PROJ:
            shp = proj_shape(cfg, name)
            keys += [(f"{p}{mod}.{name}.weight", shp), (f"{p}{mod}.{name}.wscale", (1, shp[1])),
                     (f"{p}{mod}.{name}.wbias", (1, shp[1]))]
        keys.append((p + "post_attention_layernorm.weight", (C,)))
    keys += [("model.norm.weight", (C,)), ("lm_head.weight", (V, C))]
    shards, cur, size = [], [], 0
    for k, shp in keys:
        n = 4 * math.prod(shp)
        if cur and size + n > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((k, shp))
        size += n
    shards.append(cur)
    os.makedirs(d, exist_ok=True)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    g = torch.Generator().manual_seed(seed)
    wmap, latent = {}, None
    for si, part in enumerate(shards):
        name = f"model-{si + 1:05d}-of-{len(shards):05d}.safetensors"
        header, at = {}, 0
        for k, shp in part:
            header[k] = {"dtype": "F32", "shape": list(shp), "data_offsets": [at, at + 4 * math.prod(shp)]}
            at += 4 * math.prod(shp)
            wmap[k] = name
        h = json.dumps(header).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        with open(os.path.join(d, name), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
            for k, shp in part:
                if k.endswith("norm.weight"):
                    t = 1 + 0.1 * torch.randn(*shp, generator=g)
                elif k.endswith(".wscale"):
                    beta = latent.mean(0, keepdim=True)
                    t = (latent - beta).abs().mean(0, keepdim=True) * (1 + 0.1 * torch.rand(*shp, generator=g))
                elif k.endswith(".wbias"):
                    t = latent.mean(0, keepdim=True) + 0.001 * torch.randn(*shp, generator=g)
                else:
                    t = torch.randn(*shp, generator=g) * 0.02
                    # torch.randn gives a few exact zeros in 10^8 draws (5 in the 130M shape): torch.sign(0) = 0 but
                    # the header's sign(0) = -1 ([F1]); trained weights have none, so neither do these
                    t[t == 0] = 1e-6
                    latent = t
                f.write(t.contiguous().numpy().astype("<f4").tobytes())
        print(f"wrote {name}", flush=True)
    json.dump({"metadata": {"total_size": sum(4 * math.prod(s) for _, s in keys)}, "weight_map": wmap},
              open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=2)


# ---- the model ----------------------------------------------------------------------------------------------------
class Ref(torch.nn.Module):
    def __init__(self, cfg, sd):
        super().__init__()
        self.cfg = cfg
        self.p = torch.nn.ParameterDict({k.replace(".", "__"): torch.nn.Parameter(v.clone()) for k, v in sd.items()})
        self.fbi = any(k.endswith(".wscale") for k in sd)

    def w(self, key):
        return self.p[key.replace(".", "__")]

    def weight(self, prefix):
        W = self.w(prefix + ".weight")
        if not self.fbi:
            return W
        Wb = W + (torch.sign(W) - W).detach()  # identity STE: forward sign(W), backward the identity
        return self.w(prefix + ".wscale") * Wb + self.w(prefix + ".wbias")

    def forward(self, idx):  # idx: (B, T) int64 → logits (B, T, V)
        c = self.cfg
        B, T = idx.shape
        C, NH, eps = c["hidden_size"], c["num_attention_heads"], c["rms_norm_eps"]
        hs = C // NH
        rms = lambda x, g: g * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
        inv = c.get("rope_theta", 10000.0) ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
        cos, sin = torch.cat([ang.cos()] * 2, -1).float(), torch.cat([ang.sin()] * 2, -1).float()
        rot = lambda x: x * cos + torch.cat([-x[..., hs // 2:], x[..., : hs // 2]], -1) * sin
        x = self.w("model.embed_tokens.weight")[idx]
        mask = torch.full((T, T), float("-inf")).triu(1)
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = rms(x, self.w(p + "input_layernorm.weight"))
            q, k, v = (h @ self.weight(p + f"self_attn.{n}_proj").T for n in "qkv")
            q, k, v = (t.view(B, T, NH, hs).transpose(1, 2) for t in (q, k, v))
            att = torch.softmax(rot(q) @ rot(k).transpose(-1, -2) / math.sqrt(hs) + mask, -1)
            y = (att @ v).transpose(1, 2).reshape(B, T, C)
            x = x + y @ self.weight(p + "self_attn.o_proj").T
            h = rms(x, self.w(p + "post_attention_layernorm.weight"))
            gate, up = h @ self.weight(p + "mlp.gate_proj").T, h @ self.weight(p + "mlp.up_proj").T
            x = x + (Fn.silu(gate) * up) @ self.weight(p + "mlp.down_proj").T
        return rms(x, self.w("model.norm.weight")) @ self.w("lm_head.weight").T

    def state(self):
        return {k.replace("__", "."): v.detach().clone() for k, v in self.p.items()}


# ---- data: the C++ char tokenizer, 90/10 split, evaluation windows, training batches ----------------------------------
def corpus_tokens(d, path):
    vocab = bytes(json.load(open(os.path.join(d, "fbi_vocab.json")))["bytes"])
    ids = {b: i for i, b in enumerate(vocab)}
    data = open(path, "rb").read()
    toks = np.array([ids[b] for b in data], dtype=np.int64)
    n = len(toks) * 9 // 10
    return toks[:n], toks[n:]


def evaluate(model, data, T, windows):
    total = (len(data) - 1) // T
    count = min(windows, total) if windows > 0 else total
    loss, n = 0.0, 0
    with torch.no_grad():
        for w0 in range(0, count, 16):
            starts = [((w0 + b) * total // count) * T for b in range(min(16, count - w0))]
            x = torch.tensor(np.stack([data[s:s + T] for s in starts]))
            y = torch.tensor(np.stack([data[s + 1:s + T + 1] for s in starts]))
            z = model(x).double()
            loss += Fn.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1), reduction="sum").item()
            n += y.numel()
    return loss / n


def perplexity(model, ids, W, windows):
    """The official evaluation's protocol: numel // W windows side by side, each window's mean CE over its W - 1
    predictions, exp of the mean over windows."""
    ids = torch.tensor(ids, dtype=torch.int64)
    count = ids.numel() // W
    if windows:
        count = min(count, windows)
    nll = 0.0
    with torch.no_grad():
        for i in range(count):
            x = ids[i * W:(i + 1) * W][None]
            z = model(x)[0, :-1].double()
            nll += Fn.cross_entropy(z, x[0, 1:]).item()
    return nll / count, count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["write", "write-stream", "logits", "eval", "train", "generate", "ppl"])
    ap.add_argument("dir")
    ap.add_argument("--config", default="tiny", choices=list(CONFIGS))
    ap.add_argument("--format", default="bin", choices=["bin", "bin-sharded", "safetensors", "safetensors-sharded"])
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--plain", action="store_true", help="a plain LLaMA (no wscale/wbias)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tokens", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--corpus", default="")
    ap.add_argument("--teacher", default="")
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--B", type=int, default=12)
    ap.add_argument("--windows", type=int, default=0)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--vocab", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=0)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--eos", type=int, default=-1)
    ap.add_argument("--tokenizer", default="")
    ap.add_argument("--text", default="")
    ap.add_argument("--window", type=int, default=2048)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    if a.cmd in ("write", "write-stream"):
        L, C, F, NH, V, T = CONFIGS[a.config]
        cfg = hf_config(L, C, F, NH, a.vocab or V, a.ctx or T)
        if a.cmd == "write-stream":
            return write_stream(a.dir, cfg, a.seed)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[a.dtype]
        save_dir(a.dir, cfg, synthetic(cfg, not a.plain, a.seed), a.format, dtype)
        return
    cfg, sd = load_dir(a.dir)
    model = Ref(cfg, sd)
    if a.cmd == "logits":
        idx = torch.tensor([[int(t) for t in a.tokens.split(",")]])
        with torch.no_grad():
            model(idx)[0].contiguous().numpy().astype("<f4").tofile(a.out)
    elif a.cmd == "generate":  # greedy, the whole sequence again for every new token
        ids = [int(t) for t in a.tokens.split(",")]
        new = []
        with torch.no_grad():
            for _ in range(a.n):
                nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
                ids.append(nxt)
                new.append(nxt)
                if nxt == a.eos:  # build/generate stops at the tokenizer's EOS too
                    break
        print("ids: " + " ".join(map(str, new)))
    elif a.cmd == "ppl":
        import sentencepiece  # Debian's python3-sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=a.tokenizer)
        ids = [sp.bos_id()] + sp.encode(open(a.text, encoding="utf-8", newline="").read())
        nll, count = perplexity(model, ids, a.window, a.windows)
        print(f"mean_nll {nll:.9f}\nperplexity {math.exp(nll):.4f} over {count} windows of {a.window} tokens")
    elif a.cmd == "eval":
        _, val = corpus_tokens(a.dir, a.corpus)
        print(f"val_ce {evaluate(model, val, a.T, a.windows):.9f}")
    else:  # train: a.steps AdamW steps of AD against the teacher, on random windows of the training split
        train, val = corpus_tokens(a.dir, a.corpus)
        teacher = Ref(*load_dir(a.teacher))
        decay = [p for k, p in model.p.items() if p.dim() == 2 and not k.endswith(("wscale", "wbias"))]
        rest = [p for k, p in model.p.items() if not (p.dim() == 2 and not k.endswith(("wscale", "wbias")))]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
        rng = np.random.default_rng(a.seed)
        for step in range(a.steps):
            starts = rng.integers(0, len(train) - a.T - 1, a.B)
            x = torch.tensor(np.stack([train[s:s + a.T] for s in starts]))
            with torch.no_grad():
                pt = torch.softmax(teacher(x), -1)
            loss = -(pt * torch.log_softmax(model(x), -1)).sum(-1).mean()  # the AD loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            print(f"step {step + 1} ad_loss {loss.item():.6f}")
        print(f"val_ce {evaluate(model, val, a.T, a.windows):.9f}")
        save_dir(a.out, cfg, model.state())
        with open(os.path.join(a.out, "fbi_vocab.json"), "w") as f:
            f.write(open(os.path.join(a.dir, "fbi_vocab.json")).read())


if __name__ == "__main__":
    main()
