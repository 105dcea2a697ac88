"""What the fused-op model tests share: a tiny masked batch and one training-step pass that
returns the loss, the logits and every parameter's gradient (the model's grads cleared after)."""

from __future__ import annotations

import torch

from vqdna.models.masking import mask_tokens


def tiny_batch(cfg, B=4, T=16):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_sizes[0], (B, T, 1), generator=gen)
    return mask_tokens(ids, cfg, ratio=0.25, generator=gen)


def run_model(model, masked, labels, seed=1):
    """`(loss, logits, {name: grad})` of one forward + backward; `seed` seeds the dropout draws."""
    torch.manual_seed(seed)
    out = model(masked, None, labels=labels)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out.loss.detach(), out.logits.detach(), grads
