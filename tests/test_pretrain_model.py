"""The backbone API (docs/contracts.md): save/load, padding, long inputs, peft, codebook embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_tokens_data import genome_text, tiny_vq_tokenizer
from vqdna.models import (
    LORA_TARGET_MODULES,
    VQDNAConfig,
    VQDNAForMaskedLM,
    VQDNAModel,
    collate,
    special_token_ids,
)
from vqdna.tokenizers.onehot import OneHotTokenizer

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def real_seqs(n: int, length: int, start: int = 0) -> list[str]:
    seq = genome_text()
    return [seq[start + i * length: start + (i + 1) * length] for i in range(n)]


@pytest.fixture(params=["onehot", "hrq"])
def model_and_tokens(request):
    tok = OneHotTokenizer() if request.param == "onehot" else tiny_vq_tokenizer("hrq")
    torch.manual_seed(0)
    model = VQDNAForMaskedLM.from_tokenizer(tok, **TINY).eval()
    seqs = real_seqs(3, 40)
    seqs[1] = seqs[1][:25]  # a shorter one, so the batch is padded
    return model, tok, tok.encode(seqs)


def test_special_ids_follow_the_vocabulary():
    cfg = VQDNAConfig(levels=2, vocab_sizes=[8, 16], **TINY)
    assert special_token_ids(cfg) == {"pad": [8, 16], "mask": [9, 17], "cls": [10, 18]}


def test_collate_pads_and_prepends_cls(model_and_tokens):
    model, _tok, arrays = model_and_tokens
    batch = collate(arrays, model.config, max_len=30)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    special = special_token_ids(model.config)
    assert ids.shape == (3, 30, model.config.levels)
    assert ids[:, 0].tolist() == [special["cls"]] * 3
    assert mask[1].sum() == 26 and (ids[1, 26:] == torch.tensor(special["pad"])).all()
    assert torch.equal(ids[0, 1:30], torch.from_numpy(arrays[0][:29]))


def test_codebook_embedding_holds_the_tokenizer_vectors():
    tok = tiny_vq_tokenizer("hrq")
    model = VQDNAForMaskedLM.from_tokenizer(tok, **TINY)
    assert model.config.embedding == "codebook" and model.config.code_dim == 16
    books = model.vqdna.embeddings.tokens.codebooks
    for book, vec in zip(books, tok.code_vectors()):
        assert torch.equal(book, vec)
    # frozen: not a parameter any optimizer or peft could touch
    assert not any("codebook" in name for name, _ in model.named_parameters())


def test_special_tokens_take_their_learned_rows_and_gradients():
    """[PAD]/[MASK]/[CLS] positions carry their learned row (ids past the last special count as
    [CLS]), code positions the projected code vector; the special rows' gradient is the sum over
    the positions that use them, as an embedding lookup's would be."""
    tok = tiny_vq_tokenizer("hrq")
    torch.manual_seed(0)
    model = VQDNAForMaskedLM.from_tokenizer(tok, **TINY)
    emb = model.vqdna.embeddings.tokens
    ids = torch.from_numpy(tok.encode(real_seqs(2, 12))[0][:12]).long()[None].repeat(2, 1, 1)
    v0 = model.config.vocab_sizes[0]
    special = special_token_ids(model.config)
    for pos, name in [(0, "cls"), (3, "mask"), (7, "pad"), (9, "mask")]:
        ids[0, pos] = torch.tensor(special[name])
    ids[1, 5, 0] = v0 + 7  # past the last special id
    out = emb(ids)
    weight = emb.special.weight
    which = {0: 2, 3: 1, 7: 0, 9: 1}
    for pos, row in which.items():
        assert torch.equal(out[0, pos], weight[row])
    assert torch.equal(out[1, 5], weight[2])
    codes = [p for p in range(12) if p not in which]
    books = emb.codebooks  # HRQ levels combined by their mean (level_combine)
    plain = emb.proj(sum(torch.nn.functional.embedding(ids[0, codes, l], b) for l, b in enumerate(books)) / len(books))
    torch.testing.assert_close(out[0, codes], plain)
    grad = torch.randn_like(out)
    out.backward(grad)
    want = torch.zeros_like(weight)
    for pos, row in which.items():
        want[row] += grad[0, pos]
    want[2] += grad[1, 5]
    torch.testing.assert_close(weight.grad, want)


def test_padding_does_not_change_real_tokens(model_and_tokens):
    model, _tok, arrays = model_and_tokens
    with torch.no_grad():
        padded = model.vqdna(**collate(arrays, model.config)).last_hidden_state
        alone = model.vqdna(**collate(arrays[1:2], model.config)).last_hidden_state
    n = len(arrays[1]) + 1
    torch.testing.assert_close(padded[1, :n], alone[0, :n], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("position_encoding", ["rope", "alibi"])
def test_save_and_from_pretrained_give_identical_outputs(tmp_path, position_encoding):
    tok = tiny_vq_tokenizer("hrq")
    torch.manual_seed(1)
    model = VQDNAForMaskedLM.from_tokenizer(tok, position_encoding=position_encoding, **TINY).eval()
    batch = collate(tok.encode(real_seqs(2, 50)), model.config)
    with torch.no_grad():
        logits = model(**batch).logits
        hidden = model.vqdna(**batch).last_hidden_state
    model.save_pretrained(tmp_path)
    again = VQDNAForMaskedLM.from_pretrained(tmp_path).eval()
    encoder = VQDNAModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(**batch).logits, logits)
        assert torch.equal(encoder(**batch).last_hidden_state, hidden)
    assert encoder.config.vocab_sizes == [8, 16]


def test_lora_targets_exist_and_train(model_and_tokens):
    from peft import LoraConfig, get_peft_model

    model, _tok, arrays = model_and_tokens
    encoder = model.vqdna
    peft_model = get_peft_model(encoder, LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGET_MODULES))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for target in LORA_TARGET_MODULES:
        assert any(f".{target}.lora_A" in n for n in trainable), target
    out = peft_model(**collate(arrays, model.config)).last_hidden_state
    out.float().pow(2).mean().backward()


def test_masked_lm_scores_only_masked_positions(model_and_tokens):
    model, _tok, arrays = model_and_tokens
    batch = collate(arrays, model.config)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[0, 3] = batch["input_ids"][0, 3]
    labels[2, 7] = batch["input_ids"][2, 7]
    out = model(**batch, labels=labels)
    assert out.logits.shape == (2, sum(model.config.vocab_sizes))
    assert out.num_masked.item() == 2 and torch.isfinite(out.loss)
    full = model(**batch).logits
    T = batch["input_ids"].shape[1]
    torch.testing.assert_close(out.logits, full.reshape(-1, full.shape[-1])[torch.tensor([3, 2 * T + 7])])


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_sparse_last_block_equals_dense(monkeypatch, norm_position):
    """The MLM path computes the last block only at masked positions; same loss, logits, gradients."""
    from vqdna.models.masking import mask_tokens

    tok = tiny_vq_tokenizer("hrq")
    torch.manual_seed(2)
    model = VQDNAForMaskedLM.from_tokenizer(tok, norm_position=norm_position, **{**TINY, "num_hidden_layers": 3}).eval()
    ids = collate(tok.encode(real_seqs(4, 40)), model.config)["input_ids"]
    masked, labels = mask_tokens(ids, model.config, ratio=0.25, generator=torch.Generator().manual_seed(0))

    def run(sparse: bool):
        monkeypatch.setattr(VQDNAForMaskedLM, "sparse_last_layer", sparse)
        model.zero_grad()
        out = model(masked, None, labels=labels)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    sparse, g_sparse = run(True)
    dense, g_dense = run(False)
    assert torch.equal(sparse.masked_positions, dense.masked_positions)
    torch.testing.assert_close(sparse.logits, dense.logits, rtol=1e-5, atol=1e-6)
    assert g_sparse.keys() == g_dense.keys()
    for name in g_dense:
        torch.testing.assert_close(g_sparse[name], g_dense[name], rtol=1e-4, atol=1e-6, msg=name)
