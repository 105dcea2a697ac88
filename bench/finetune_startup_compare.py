"""Compare fine-tune outputs and MLflow runs of two demo re-runs (A: before, B: after).

usage: finetune_startup_compare.py RUNS_DIR_A RUNS_DIR_B MLFLOW_DB START_A END_A START_B END_B (unix seconds)
"""
import json, sqlite3, sys
from pathlib import Path

TIMING = {"wall_seconds", "mlflow_run_id"}
def metrics_files(root):
    return {str(p.relative_to(root)): json.loads(p.read_text()) for p in Path(root).rglob("metrics.json")}

a, b = metrics_files(sys.argv[1]), metrics_files(sys.argv[2])
assert a.keys() == b.keys(), (a.keys() ^ b.keys())
ndiff = 0
for k in sorted(a):
    ra = {x: v for x, v in a[k].items() if x not in TIMING}
    rb = {x: v for x, v in b[k].items() if x not in TIMING}
    ra["fit"] = {x: v for x, v in ra["fit"].items() if x != "seconds"}
    rb["fit"] = {x: v for x, v in rb["fit"].items() if x != "seconds"}
    if ra != rb:
        ndiff += 1
        print("DIFF", k, {x: (ra[x], rb.get(x)) for x in ra if ra[x] != rb.get(x)})
print(f"metrics.json: {len(a)} files, {ndiff} differ (timing fields and run ids aside)")

db = sqlite3.connect(sys.argv[3])
t0a, t1a, t0b, t1b = (int(x) * 1000 for x in sys.argv[4:8])
def runs(t0, t1):
    out = {}
    for run_uuid, name, status in db.execute(
            "select run_uuid, name, status from runs where start_time between ? and ? and name like 'finetune/%'", (t0, t1)):
        params = dict(db.execute("select key, value from params where run_uuid=?", (run_uuid,)))
        tags = {k: v for k, v in db.execute("select key, value from tags where run_uuid=?", (run_uuid,))}
        metrics = {(k, s): v for k, v, s in db.execute("select key, value, step from metrics where run_uuid=?", (run_uuid,))
                   if k != "train.seconds"}
        out[name] = (status, params, tags, metrics)
    return out
ra, rb = runs(t0a, t1a), runs(t0b, t1b)
print(f"MLflow finetune runs: A {len(ra)}, B {len(rb)}")
assert ra.keys() == rb.keys(), ra.keys() ^ rb.keys()
nd = 0
for name in ra:
    if ra[name] != rb[name]:
        nd += 1
        sa, pa, ta, ma = ra[name]; sb, pb, tb, mb = rb[name]
        print("DIFF", name, sa, sb, {k: (pa.get(k), pb.get(k)) for k in pa.keys() | pb.keys() if pa.get(k) != pb.get(k)},
              {k: (ta.get(k), tb.get(k)) for k in ta.keys() | tb.keys() if ta.get(k) != tb.get(k)},
              {k: (ma.get(k), mb.get(k)) for k in ma.keys() | mb.keys() if ma.get(k) != mb.get(k)})
print(f"MLflow runs differing in status/params/tags/metrics (train.seconds aside): {nd}")
