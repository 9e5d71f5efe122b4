#!/usr/bin/env python3
"""Damaged copies of a good model directory, one per kind of bad input (tests/interop.sh checks each message).

  make_bad.py GOOD_BIN_DIR GOOD_SHARDED_BIN_DIR GOOD_SAFETENSORS_DIR OUT     writes OUT/<case>/ for every case below
"""
import json, os, shutil, struct, sys
import torch

sys.path.insert(0, os.path.dirname(__file__))
from torch_ref import read_safetensors, write_safetensors  # noqa: E402

good_bin, good_sharded, good_st, out = sys.argv[1:5]


def copy(src, name):
    d = os.path.join(out, name)
    shutil.copytree(src, d)
    return d


def edit_config(d, **kv):
    c = json.load(open(os.path.join(d, "config.json")))
    c.update(kv)
    json.dump(c, open(os.path.join(d, "config.json"), "w"))


def st_header(d):
    raw = open(os.path.join(d, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_write_raw(d, header, data):
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    open(os.path.join(d, "model.safetensors"), "wb").write(struct.pack("<Q", len(h)) + h + data)


os.makedirs(out, exist_ok=True)
os.remove(os.path.join(copy(good_bin, "no_config"), "config.json"))
os.remove(os.path.join(copy(good_bin, "no_weights"), "pytorch_model.bin"))
d = copy(good_sharded, "shard_missing")
os.remove(os.path.join(d, "pytorch_model-00002-of-00002.bin"))
d = copy(good_bin, "truncated_bin")
p = os.path.join(d, "pytorch_model.bin")
open(p, "r+b").truncate(os.path.getsize(p) // 2)
d = copy(good_st, "truncated_safetensors")
p = os.path.join(d, "model.safetensors")
open(p, "r+b").truncate(os.path.getsize(p) - 100)
d = copy(good_st, "offsets_past_end")
h, data = st_header(d)
h["lm_head.weight"]["data_offsets"][1] += 4 * len(data)
st_write_raw(d, h, data)
d = copy(good_st, "offsets_overlap")  # two norms of the same shape: point one at the other's bytes
h, data = st_header(d)
h["model.layers.0.post_attention_layernorm.weight"]["data_offsets"] = list(h["model.layers.0.input_layernorm.weight"]["data_offsets"])
st_write_raw(d, h, data)
d = copy(good_st, "unknown_dtype")
h, data = st_header(d)
h["model.norm.weight"]["dtype"] = "I32"
st_write_raw(d, h, data)
for case, change in [("key_missing", "drop"), ("key_extra", "add"), ("wrong_shape", "reshape")]:
    d = copy(good_st, case)
    sd = read_safetensors(os.path.join(d, "model.safetensors"))
    if change == "drop":
        del sd["model.layers.1.mlp.up_proj.wbias"]
    elif change == "add":
        sd["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(sd["model.norm.weight"].shape)
    else:
        sd["model.layers.0.self_attn.k_proj.wscale"] = sd["model.layers.0.self_attn.k_proj.wscale"].reshape(-1)
    write_safetensors(os.path.join(d, "model.safetensors"), sd)
edit_config(copy(good_bin, "gqa"), num_key_value_heads=2)
edit_config(copy(good_bin, "tied"), tie_word_embeddings=True)
edit_config(copy(good_bin, "rope_scaling"), rope_scaling={"type": "linear", "factor": 2.0})
edit_config(copy(good_bin, "rope_theta"), rope_theta=500000.0)
d = copy(good_bin, "bad_json")
open(os.path.join(d, "config.json"), "w").write("{ not json")


class Evil:  # a pickle that would run a command if it were unpickled by pickle.load
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(out, "PWNED"),))


d = copy(good_bin, "evil_pickle")
sd = torch.load(os.path.join(d, "pytorch_model.bin"))
sd["model.norm.weight"] = Evil()
torch.save(sd, os.path.join(d, "pytorch_model.bin"))
