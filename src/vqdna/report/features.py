"""Measurements behind Table 1, Table 2 and the ablation tables: token usage, frozen
features (backbone or codebook), the linear probe, parameter and FLOP counts."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def token_usage(token_arrays: Sequence[np.ndarray], vocab_sizes: Sequence[int]) -> tuple[float, list[float]]:
    """Percent of the vocabulary that occurs in the tokenized data: overall (codes used over
    all levels / total codes) and per level."""
    used = [np.zeros(v, dtype=bool) for v in vocab_sizes]
    for arr in token_arrays:
        arr = np.asarray(arr).reshape(len(arr), -1)
        for level, mask in enumerate(used):
            ids = arr[:, level]
            mask[ids[(ids >= 0) & (ids < len(mask))]] = True
    per_level = [100.0 * m.mean() for m in used]
    overall = 100.0 * sum(m.sum() for m in used) / sum(len(m) for m in used)
    return float(overall), [float(p) for p in per_level]


def backbone_features(model, token_arrays: Sequence[np.ndarray], *, batch_size: int, max_tokens: int | None,
                      device: str = "cpu") -> np.ndarray:
    """Mean over real tokens ([CLS] and padding excluded) of the frozen backbone's last hidden state."""
    import torch

    from ..models import collate

    model = model.to(device).eval()
    # longest first keeps padding per batch small; the original order is restored at the end
    order = sorted(range(len(token_arrays)), key=lambda i: -len(token_arrays[i]))
    feats: list[np.ndarray | None] = [None] * len(order)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = collate([token_arrays[i] for i in idx], model.config, max_len=max_tokens, add_cls=True)
            mask = batch["attention_mask"].to(device)
            hidden = model(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
            keep = mask.clone().float()
            keep[:, 0] = 0.0  # the [CLS] position
            pooled = (hidden.float() * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
            for i, row in zip(idx, pooled.cpu().numpy()):
                feats[i] = row
    return np.stack(feats)  # type: ignore[arg-type]


def codebook_features(code_vectors: Sequence, token_arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Per sequence, the mean code vector of each level, levels concatenated: the tokenizer's
    own representation, for probing tokenizer variants that have no pretrained backbone."""
    books = [np.asarray(v, dtype=np.float32) for v in code_vectors]
    rows = []
    for arr in token_arrays:
        arr = np.asarray(arr).reshape(len(arr), -1)
        rows.append(np.concatenate([books[l][arr[:, l]].mean(0) for l in range(len(books))]))
    return np.stack(rows)


def linear_probe(train_x, train_y, eval_sets: dict[str, tuple], *, C: float, max_iter: int, seed: int) -> dict:
    """Standardised features, multinomial logistic regression fit on train; macro F1 per eval split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    clf.fit(train_x, train_y)
    out = {"train_f1_macro": float(f1_score(train_y, clf.predict(train_x), average="macro")),
           "n_train": int(len(train_y))}
    for name, (x, y) in eval_sets.items():
        out[f"{name}_f1_macro"] = float(f1_score(y, clf.predict(x), average="macro"))
        out[f"n_{name}"] = int(len(y))
    return out


def count_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters())) if module is not None else 0


def probe_sequence(length: int, seed: int) -> str:
    """A fixed random ACGT sequence: FLOPs of fixed-rate tokenizers do not depend on content;
    for BPE it gives a typical (not best/worst case) token count."""
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list("ACGT"), size=length))


def count_flops(fn) -> int:
    """FLOPs of the torch ops `fn()` runs (torch.utils.flop_counter: a multiply-add = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def model_cost(model, tokenizer, *, length: int, seed: int) -> dict:
    """Parameters and forward FLOPs for one `length`-nt sequence: backbone and tokenizer apart."""
    import torch

    from ..models import collate

    seq = probe_sequence(length, seed)
    tokens: list = []
    tok_flops = count_flops(lambda: tokens.extend(tokenizer.encode([seq])))
    batch = collate(tokens, model.config, add_cls=True)
    model = model.eval()
    with torch.inference_mode():
        backbone_flops = count_flops(lambda: model(**batch))
    return {
        "backbone_params": count_params(model),
        "tokenizer_params": count_params(getattr(tokenizer, "model", None)),
        "backbone_flops": backbone_flops,
        "tokenizer_flops": tok_flops,
        "tokens_per_sequence": int(len(tokens[0])),
        "flops_length_nt": length,
    }
