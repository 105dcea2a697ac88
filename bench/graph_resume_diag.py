"""Which tensors differ between two uninterrupted CUDA runs in torch's default (not
deterministic) mode, eager and graphed; JSON to $OUT/diag.json, written after each pair.
Usage (GPU): PYTHONPATH=src python3 bench/graph_resume_diag.py bert_base tiny"""
import json, os, sys, time
sys.path.insert(0, "tests")
import torch
import test_pretrain_graph_resume as t

out = {"deterministic": torch.are_deterministic_algorithms_enabled()}
path = os.path.join(os.environ.get("OUT", "."), "diag.json")
for shape in sys.argv[1:]:
    arch = dict(t.TINY if shape == "tiny" else t.BERT_BASE)
    rows, length = arch.pop("rows"), arch.pop("length")
    cfg = t.VQDNAConfig(levels=2, vocab_sizes=[20, 30], hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0,
                        fused_dropout_norm=True, **arch)
    data = t.make_data(cfg, rows, length, 2)
    for graphs in (False, True):
        t0 = time.time()
        runs = []
        for _ in range(2):
            run = t.build(cfg, 2, length, graphs=graphs)
            losses, _ = t.train(run, data, 2, range(t.STEPS))
            runs.append((losses, t.state_of(run)))
        diffs = t.differing(runs[0][1], runs[1][1])
        first = next((s for s, (a, b) in enumerate(zip(runs[0][0], runs[1][0])) if a != b), None)
        out[f"{shape}_{'graphs' if graphs else 'eager'}"] = {
            "losses_equal": runs[0][0] == runs[1][0], "first_step_with_other_loss": first,
            "tensors": len(runs[0][1]), "differing": len(diffs), "differing_names": diffs,
            "losses": [runs[0][0], runs[1][0]], "s": round(time.time() - t0, 1)}
        json.dump(out, open(path, "w"), indent=1)
        print(shape, graphs, len(diffs), diffs[:8], flush=True)
