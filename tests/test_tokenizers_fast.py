"""The frozen inference path (`vqdna.tokenizers.fast_encode`) computes the model's function:
folded layer scale, deferred fc2 biases, the stem as a table lookup and the split-bf16 distance
GEMM give the model's codes; bf16 compute stays close; the tokenizer and `vqdna tokenize` use it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_tokens_data import genome_text, write_shards
from vqdna.dna import to_codes
from vqdna.tokenizers.fast_encode import FastEncoder, FastEncodeSettings, _mm_f32, _tap
from vqdna.tokenizers.model import VQModelConfig, VQVAE
from vqdna.tokenizers.quantizer import code_counts
from vqdna.tokenizers.vq import VQTokenizer


def real_windows(rows: int, length: int, offset: int = 0) -> torch.Tensor:
    codes = to_codes(genome_text()[offset: offset + rows * length])
    return torch.from_numpy(codes.reshape(rows, length))


def model(kind: str, stem_dim: int = 24, seed: int = 0) -> VQVAE:
    torch.manual_seed(seed)
    taps, sizes = ([2], [64]) if kind == "vq" else ([1, 2], [32, 64])
    m = VQVAE(VQModelConfig(kind=kind, dim=32, stem_dim=stem_dim, depth=2, taps=taps, codebook_sizes=sizes,
                            layer_scale_init=0.5)).eval()
    with torch.no_grad():  # non-trivial biases, norms and layer scales: every folded term matters
        for p in m.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
        x = real_windows(16, 128, offset=5000)
        m.quantizer.init_codebooks([z.float() for z in m.encoder(x)], 5, torch.Generator().manual_seed(0))
    return m


@pytest.mark.parametrize("kind", ["vq", "hrq"])
@pytest.mark.parametrize("distance", ["fp32", "bf16x3"])
@pytest.mark.parametrize("stem_dim", [24, 32])  # with and without the stem->block projection
def test_fp32_fast_path_gives_the_model_codes(kind, distance, stem_dim):
    m = model(kind, stem_dim)
    x = real_windows(8, 200)
    ref = m.encode(x)
    for epilogue in (False, True):
        fast = FastEncoder.from_model(m, FastEncodeSettings(distance=distance, gelu_epilogue=epilogue, compile=False),
                                      compute_dtype=torch.float32)
        out = fast(x)
        assert out.shape == ref.shape and out.dtype == torch.int32
        # identical up to float re-association near exact ties (none at this size in practice)
        assert (out.long() == ref).float().mean() >= 0.999


def test_split_bf16_distances_are_fp32_accurate():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, 64, generator=g)
    e = torch.randn(128, 64, generator=g)
    hi = e.to(torch.bfloat16)
    lo = (e - hi.float()).to(torch.bfloat16)
    ln_w, ln_b = torch.ones(64), torch.zeros(64)
    # _tap normalises first: compare on the normalised latents
    z = torch.nn.functional.layer_norm(x, (64,))
    exact = z.double() @ e.double().t()
    split = _mm_f32(_tap(x, torch.zeros(64), ln_w, ln_b, 1e-5, None, None, "bf16x3"),
                    torch.cat([hi, hi, lo], 1).t())
    single = _mm_f32(_tap(x, torch.zeros(64), ln_w, ln_b, 1e-5, None, None, "bf16"), hi.t())
    err_split = ((split.double() - exact).norm() / exact.norm()).item()
    err_single = ((single.double() - exact).norm() / exact.norm()).item()
    assert err_split < 2e-5 < 1e-3 < err_single


@pytest.mark.parametrize("kind", ["vq", "hrq"])
@pytest.mark.parametrize("residual", ["bf16", "fp32"])
def test_bf16_fast_path_stays_close(kind, residual):
    m = model(kind)
    x = real_windows(8, 200)
    ref = m.encode(x)
    out = FastEncoder.from_model(m, FastEncodeSettings(compile=False, residual=residual),
                                 compute_dtype=torch.bfloat16)(x)
    assert (out.long() == ref).float().mean() >= 0.98


def test_fp32_stream_is_closer_than_bf16_stream():
    m = model("vq")
    x = real_windows(32, 200, offset=20000)
    ref = m.encode(x)
    share = {r: float((FastEncoder.from_model(m, FastEncodeSettings(compile=False, residual=r),
                                             compute_dtype=torch.bfloat16)(x).long() == ref).float().mean())
             for r in ("bf16", "fp32")}
    assert share["fp32"] >= share["bf16"]
    with pytest.raises(ValueError, match="residual"):
        FastEncodeSettings(residual="fp16")


def test_tokenizer_fast_switch(tmp_path):
    tok = VQTokenizer(model("hrq"))
    seqs = [genome_text()[i * 300: i * 300 + 150] for i in range(5)] + [genome_text()[:77]]
    plain = tok.encode(seqs)
    tok.save_pretrained(tmp_path / "t")
    fast = VQTokenizer.from_pretrained(tmp_path / "t", fast={"distance": "bf16x3"})
    assert fast.fast_settings.distance == "bf16x3"
    for a, b in zip(plain, fast.encode(seqs)):
        assert a.shape == b.shape and (a == b).mean() >= 0.99
    x = real_windows(4, 64)
    assert fast.encode_codes(x).dtype == torch.long
    assert fast.encode_codes(x, out_dtype=torch.int16).dtype == torch.int16
    with pytest.raises(ValueError, match="distance"):
        fast.enable_fast({"distance": "fp16"})


def test_code_counts_equals_bincount():
    idx = torch.randint(0, 37, (5, 11), generator=torch.Generator().manual_seed(0))
    want = torch.bincount(idx.reshape(-1), minlength=40)
    assert torch.equal(code_counts(idx, 40, torch.int64), want)
    assert torch.equal(code_counts(idx, 40), want.float())


def test_tokenize_with_the_fast_path_matches(tmp_path):
    from vqdna.tokens import TokenFile
    from vqdna.tokens.tokenize import tokenize_split

    tok = VQTokenizer(model("hrq"))
    tok.save_pretrained(tmp_path / "tok")
    write_shards(tmp_path / "shards", "train", window=64, rows_per_shard=7, n_shards=3)
    base = {"device": "cpu", "tokens": {"batch_nt": 300}}
    fast = {"device": "cpu", "tokens": {"batch_nt": 300, "fast": {"enabled": True, "distance": "bf16x3"}}}
    tokenize_split(tmp_path / "tok", tmp_path / "shards", "train", tmp_path / "a", base)
    tokenize_split(tmp_path / "tok", tmp_path / "shards", "train", tmp_path / "b", fast)
    a, b = TokenFile(tmp_path / "a", "train"), TokenFile(tmp_path / "b", "train")
    ids_a = np.stack([a.window(i) for i in range(len(a))])
    ids_b = np.stack([b.window(i) for i in range(len(b))])
    assert ids_a.shape == ids_b.shape == (21, 64, 2)
    assert (ids_a == ids_b).mean() >= 0.999
