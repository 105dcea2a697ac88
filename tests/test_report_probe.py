"""`vqdna probe` measurements and the Figure 5 Grad-CAM/UMAP code on tiny real models
(the upstream VQTokenizer / VQDNAModel classes), CPU only."""

from __future__ import annotations

import re

import numpy as np
import pytest

from vqdna.report.codebook_map import codebook_figure, grad_cam_code_labels
from vqdna.report.features import count_flops, token_usage
from vqdna.report.probe import probe

PROBE_CFG = {"features": "backbone", "usage_splits": ["train", "dev", "test"], "batch_size": 8,
             "max_tokens": None, "C": 1.0, "max_iter": 500, "flops_length": 64}
FIG5_CFG = {"fit_splits": ["train"], "C": 1.0, "max_iter": 500, "n_neighbors": 5, "min_dist": 0.1,
            "show_unused": True}


class Split:
    def __init__(self, sequences, labels):
        self.sequences, self.labels = sequences, np.asarray(labels)


def motif_splits(seed=0, n=24, length=48):
    """Three classes that differ in composition (AC-rich, GT-rich, balanced): learnable from tokens."""
    rng = np.random.default_rng(seed)
    alphabets = {0: "AACCA", 1: "GGTTG", 2: "ACGT"}

    def make(count):
        labels = np.arange(count) % 3
        seqs = ["".join(rng.choice(list(alphabets[y]), size=length)) for y in labels]
        return Split(seqs, labels)

    return {"train": make(n), "dev": make(9), "test": make(9)}


@pytest.fixture(scope="module")
def tiny_hrq():
    import torch

    from vqdna.tokenizers.model import VQModelConfig, VQVAE
    from vqdna.tokenizers.vq import VQTokenizer

    torch.manual_seed(0)
    cfg = VQModelConfig(kind="hrq", dim=16, stem_dim=8, depth=2, taps=[1, 2], codebook_sizes=[8, 16])
    return VQTokenizer(VQVAE(cfg))


@pytest.fixture(scope="module")
def tiny_backbone(tiny_hrq, tmp_path_factory):
    import torch

    from vqdna.models import VQDNAForMaskedLM, VQDNAModel

    torch.manual_seed(0)
    mlm = VQDNAForMaskedLM.from_tokenizer(tiny_hrq, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32)
    path = tmp_path_factory.mktemp("pretrain") / "hrq"
    mlm.save_pretrained(path)
    return VQDNAModel.from_pretrained(path)


def test_token_usage_hand_computed():
    arrays = [np.array([[0, 1], [1, 1]]), np.array([[3, 0]])]
    overall, per_level = token_usage(arrays, (4, 8))
    assert per_level == [75.0, 25.0]  # level 0 uses {0,1,3} of 4; level 1 uses {0,1} of 8
    assert overall == pytest.approx(100 * 5 / 12)


def test_flop_counter_counts_a_matmul():
    import torch

    a, b = torch.ones(4, 8), torch.ones(8, 3)
    assert count_flops(lambda: a @ b) == 2 * 4 * 8 * 3


def test_probe_on_tiny_hrq_backbone(tiny_hrq, tiny_backbone):
    splits = motif_splits()
    result = probe(tiny_hrq, splits, PROBE_CFG, model=tiny_backbone, seed=0)
    assert 0 < result["token_usage_pct"] <= 100
    assert len(result["token_usage_pct_per_level"]) == 2
    lin = result["linear_probe"]
    assert 0.0 <= lin["test_f1_macro"] <= 1.0 and lin["n_test"] == 9 and lin["n_train"] == 24
    model = result["model"]
    assert model["backbone_params"] == sum(p.numel() for p in tiny_backbone.parameters())
    assert model["tokenizer_params"] == sum(p.numel() for p in tiny_hrq.model.parameters())
    assert model["backbone_flops"] > 0 and model["tokenizer_flops"] > 0
    assert model["tokens_per_sequence"] == 64  # one code per nucleotide
    # deterministic: the same inputs give the same numbers
    again = probe(tiny_hrq, splits, PROBE_CFG, model=tiny_backbone, seed=0)
    assert again["linear_probe"] == lin


def test_codebook_probe_separates_composition_classes(tiny_hrq):
    cfg = dict(PROBE_CFG, features="codebook")
    result = probe(tiny_hrq, motif_splits(), cfg, model=None, seed=0)
    assert "model" not in result
    # AC-rich vs GT-rich vs balanced sequences give different codes even from an untrained encoder
    assert result["linear_probe"]["train_f1_macro"] > 0.6


def test_grad_cam_labels_codes_by_the_class_that_uses_them():
    # level 0: codes 0-1 only in class-0 sequences, codes 2-3 only in class-1 sequences, code 4 unused
    rng = np.random.default_rng(0)
    book0 = rng.normal(size=(5, 4))
    book1 = rng.normal(size=(3, 4))
    arrays, labels = [], []
    for i in range(40):
        y = i % 2
        lvl0 = rng.choice([0, 1] if y == 0 else [2, 3], size=10)
        lvl1 = rng.choice([0, 1, 2], size=10)
        arrays.append(np.stack([lvl0, lvl1], axis=1))
        labels.append(y)
    out = grad_cam_code_labels([book0, book1], arrays, np.array(labels), C=10.0, max_iter=1000, seed=0)
    assert out.train_accuracy == 1.0
    assert list(out.labels[0][:4]) == [0, 0, 1, 1]
    assert out.labels[0][4] == -1  # never used: no label
    assert out.relevance[0].shape == (5, 2) and out.relevance[1].shape == (3, 2)


def test_figure5_on_tiny_hrq_writes_labelled_figure(tiny_hrq, tmp_path):
    names = ["AC-rich", "GT-rich", "balanced"]
    summary = codebook_figure(tiny_hrq, motif_splits(), tmp_path / "fig5", FIG5_CFG, seed=0, class_names=names)
    png, svg = tmp_path / "fig5.png", tmp_path / "fig5.svg"
    assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text()
    assert "UMAP 1" in text and "UMAP 2" in text  # axis labels
    assert summary["codes_per_level"] == [8, 16]
    assert sum(summary["labelled_codes_per_level"]) >= 2
    # the legend names the classes the codes were labelled with, and both codebook levels
    assert "level 1 (8 codes)" in text and "level 2 (16 codes)" in text
    assert any(n in text for n in names)
    assert re.search(r"class \(Grad-CAM\)", text)


def test_figure5_keeps_both_legends_inside_the_image(tmp_path):
    """The class legend sits outside the axes next to the level legend: a long class name must widen
    the saved image, not be cut at the edge (the demo's 'A. thaliana chloroplast' once was)."""
    from PIL import Image

    from vqdna.report.codebook_map import CodeLabels, plot_codebook_map

    rng = np.random.default_rng(0)
    xy = [rng.normal(size=(10, 2)), rng.normal(size=(10, 2))]
    lab = np.arange(10) % 2
    labels = CodeLabels(labels=[lab, np.where(np.arange(10) == 9, -1, lab)],
                        relevance=[np.zeros((10, 2)), np.zeros((10, 2))], classes=np.arange(2), train_accuracy=1.0)
    widths = {}
    for name in ("ab", "A. thaliana chloroplast genome, long label"):
        paths = plot_codebook_map(xy, labels, ["cd", name], tmp_path / f"fig_{len(name)}", title="t",
                                  show_unused=True)
        widths[name] = Image.open(paths[0]).size[0]
    assert widths["A. thaliana chloroplast genome, long label"] > widths["ab"] + 100
