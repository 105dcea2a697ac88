"""Figure 5: the HRQ codebooks in 2-D (UMAP), each code coloured by the class it speaks for.

Paper §4.4: "The label of each code is obtained by calculating the most relevant class with
Grad-CAM of the linear classifier learned upon HRQ-tokenized sequences." Our reading:

- Each sequence is represented by the mean over positions of its code vectors, one block per
  level (levels concatenated), and a multinomial logistic regression is fit on that.
- For such a linear model over mean-pooled inputs, Grad-CAM's relevance of position t for
  class c is ReLU(∂logit_c/∂e_t · e_t) = ReLU(w_c · e_t) / T, evaluated per level block.
- A code's relevance for class c is the mean, over the sequences of class c, of the summed
  relevance of its occurrences; the code's label is the class of largest relevance. Codes
  that never occur have no label (drawn grey, or left out: report.figure5.show_unused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class CodeLabels:
    labels: list[np.ndarray]  # per level: class index per code, -1 = code never used
    relevance: list[np.ndarray]  # per level: [V_l, n_classes]
    classes: np.ndarray  # class values in classifier order
    train_accuracy: float


def fit_linear(code_vectors: Sequence, token_arrays: Sequence[np.ndarray], labels: np.ndarray, *,
               C: float, max_iter: int, seed: int):
    from sklearn.linear_model import LogisticRegression

    from .features import codebook_features

    x = codebook_features(code_vectors, token_arrays)
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    clf.fit(x, labels)
    return clf, float(clf.score(x, labels))


def class_weights(clf) -> np.ndarray:
    """[n_classes, n_features]; a binary model's single row w becomes (-w, w) as softmax logits."""
    coef = np.asarray(clf.coef_)
    if coef.shape[0] == 1 and len(clf.classes_) == 2:
        coef = np.concatenate([-coef / 2, coef / 2])
    return coef


def grad_cam_code_labels(code_vectors: Sequence, token_arrays: Sequence[np.ndarray], labels: np.ndarray, *,
                         C: float = 1.0, max_iter: int = 1000, seed: int = 0) -> CodeLabels:
    books = [np.asarray(v, dtype=np.float64) for v in code_vectors]
    dims = [b.shape[1] for b in books]
    labels = np.asarray(labels)
    clf, acc = fit_linear(books, token_arrays, labels, C=C, max_iter=max_iter, seed=seed)
    weights = class_weights(clf)
    classes = np.asarray(clf.classes_)
    class_index = {c: i for i, c in enumerate(classes.tolist())}
    n_classes = len(classes)
    # relevance of every code of every level for every class: ReLU(w_c · e_k), [V_l, n_classes]
    offsets = np.cumsum([0] + dims)
    code_rel = [np.maximum(books[l] @ weights[:, offsets[l]:offsets[l + 1]].T, 0.0) for l in range(len(books))]
    totals = [np.zeros((b.shape[0], n_classes)) for b in books]
    counts_per_class = np.zeros(n_classes)
    used = [np.zeros(b.shape[0], dtype=bool) for b in books]
    for arr, y in zip(token_arrays, labels):
        arr = np.asarray(arr).reshape(len(arr), -1)
        c = class_index[y.item() if hasattr(y, "item") else y]
        counts_per_class[c] += 1
        for l in range(len(books)):
            ids, occurrences = np.unique(arr[:, l], return_counts=True)
            used[l][ids] = True
            # Grad-CAM for the sequence's own class, 1/T from the mean pooling
            totals[l][ids, c] += code_rel[l][ids, c] * occurrences / len(arr)
    relevance = [t / np.maximum(counts_per_class, 1.0) for t in totals]
    code_labels = []
    for l in range(len(books)):
        lab = relevance[l].argmax(1)
        lab[~used[l] | (relevance[l].max(1) <= 0)] = -1
        code_labels.append(lab)
    return CodeLabels(code_labels, relevance, classes, acc)


def umap_embedding(code_vectors: Sequence, *, n_neighbors: int, min_dist: float, seed: int) -> list[np.ndarray]:
    """One UMAP of all levels' code vectors together (they share the code space), split back per level."""
    import umap

    books = [np.asarray(v, dtype=np.float32) for v in code_vectors]
    stacked = np.concatenate(books)
    n_neighbors = max(2, min(n_neighbors, len(stacked) - 1))
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed, n_jobs=1)
    xy = reducer.fit_transform(stacked)
    out, start = [], 0
    for b in books:
        out.append(xy[start:start + len(b)])
        start += len(b)
    return out


LEVEL_MARKERS = ["p", "o", "s", "^", "D"]  # paper: pentagons for the first HRQ level, circles for the second


def plot_codebook_map(xy: list[np.ndarray], code_labels: CodeLabels, class_names: Sequence[str], out_base,
                      *, title: str, show_unused: bool, level_names: Sequence[str] | None = None) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .figures import save_figure

    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(8, 6.5))
    level_names = list(level_names or [f"level {l + 1}" for l in range(len(xy))])
    for l, (pts, lab) in enumerate(zip(xy, code_labels.labels)):
        marker = LEVEL_MARKERS[l % len(LEVEL_MARKERS)]
        alpha = 0.95 if l == 0 else 0.45  # the paper draws the finer level pale
        if show_unused and (lab < 0).any():
            ax.scatter(pts[lab < 0, 0], pts[lab < 0, 1], marker=marker, s=14, c="lightgrey", alpha=0.5,
                       linewidths=0)
        for c in range(len(class_names)):
            sel = lab == c
            if sel.any():
                ax.scatter(pts[sel, 0], pts[sel, 1], marker=marker, s=38 if l == 0 else 22, color=cmap(c),
                           alpha=alpha, edgecolors="k" if l == 0 else "none", linewidths=0.3)
    class_handles = [Line2D([], [], marker="o", linestyle="", color=cmap(c), label=str(name))
                     for c, name in enumerate(class_names) if any((lab == c).any() for lab in code_labels.labels)]
    level_handles = [Line2D([], [], marker=LEVEL_MARKERS[l % len(LEVEL_MARKERS)], linestyle="", color="dimgrey",
                            label=level_names[l]) for l in range(len(xy))]
    if show_unused:
        level_handles.append(Line2D([], [], marker="o", linestyle="", color="lightgrey", label="unused code"))
    leg1 = ax.legend(handles=class_handles, title="class (Grad-CAM)", loc="upper left",
                     bbox_to_anchor=(1.01, 1.0), fontsize=8, title_fontsize=9, frameon=False)
    ax.add_artist(leg1)
    leg2 = ax.legend(handles=level_handles, title="codebook", loc="lower left", bbox_to_anchor=(1.01, 0.0),
                     fontsize=8, title_fontsize=9, frameon=False)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    paths = save_figure(fig, out_base, extra_artists=[leg1, leg2])
    plt.close(fig)
    return paths


def codebook_figure(tokenizer, splits: dict, out_base, fcfg: dict, *, seed: int, class_names=None,
                    title: str = "HRQ codebooks (UMAP), codes labelled by Grad-CAM class") -> dict:
    """Fit the classifier on `fcfg['fit_splits']`, label the codes, draw the map. Returns a summary."""
    vectors = tokenizer.code_vectors()
    if vectors is None:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'kind', '?')!r} has no code vectors to map")
    seqs, labels = [], []
    for name in fcfg["fit_splits"]:
        seqs += list(splits[name].sequences)
        labels.append(np.asarray(splits[name].labels))
    labels = np.concatenate(labels)
    tokens = tokenizer.encode(seqs)
    code_labels = grad_cam_code_labels(vectors, tokens, labels, C=fcfg["C"], max_iter=fcfg["max_iter"], seed=seed)
    xy = umap_embedding(vectors, n_neighbors=fcfg["n_neighbors"], min_dist=fcfg["min_dist"], seed=seed)
    if class_names:
        # names are given in label order: label value v is called class_names[v]
        if any(not (0 <= int(c) < len(class_names)) for c in code_labels.classes):
            from ..errors import ConfigError

            raise ConfigError(f"report.figure5.class_names has {len(class_names)} names but the labels are "
                              f"{[int(c) for c in code_labels.classes]}")
        names = [str(class_names[int(c)]) for c in code_labels.classes]
    else:
        names = [f"class {c}" for c in code_labels.classes]
    level_names = [f"level {l + 1} ({len(v)} codes)" for l, v in enumerate(vectors)]
    paths = plot_codebook_map(xy, code_labels, names, out_base, title=title, show_unused=fcfg["show_unused"],
                              level_names=level_names)
    return {
        "paths": [str(p) for p in paths],
        "train_accuracy": code_labels.train_accuracy,
        "labelled_codes_per_level": [int((lab >= 0).sum()) for lab in code_labels.labels],
        "codes_per_level": [len(v) for v in vectors],
        "classes": [str(c) for c in code_labels.classes],
    }
