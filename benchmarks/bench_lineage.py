"""Lineage queries and gc as the store grows (1k, 10k, 100k runs).

Synthetic stores are written directly through ``Store.put_many`` and
``update_refs`` in large batches, with the same objects and index entries a
task run commits (inputs tree, output, log, record; run/task/cache/edge/
produced refs), so 100k runs take seconds to build rather than 100k calls.
Shape: one shared "dataset" run consumed by every pipeline; pipelines of 4
runs (prepare → split → train → evaluate) chained 25 pipelines deep (each
chain's prepare consumes the previous pipeline's evaluation). 10% extra
unreferenced objects are garbage for gc.

Lineage queries read only the edge indexes, so a query over a lineage of
fixed size should cost the same in any store; a query whose lineage grows
with the store (everything downstream of the shared dataset) and gc should
grow linearly. Run alone: ``python -m benchmarks.bench_lineage [--full]``
(``--full`` adds the 100k-run store; so does ``TERRA_BENCH_FULL=1``).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._report import fmt_ratio, fmt_time  # noqa: E402

CHAIN = 25  # pipelines per chain
STEPS = ("prepare", "split", "train", "evaluate")


def _build(root: str, n_runs: int):
    """A store at ``root`` with ``n_runs`` runs (plus the dataset run); returns (store, probe run ids)."""
    import xxhash

    from terra import runs as R
    from terra.objects import Blob, Run, Tree, object_id
    from terra.session import store_at

    store = store_at(root)
    now = time.time()
    objs: list = []
    refs: list[tuple[bytes, bytes]] = []

    def flush(force=False):
        if len(objs) >= 40_000 or (force and objs):
            store.put_many(objs)
            objs.clear()
        if len(refs) >= 50_000 or (force and refs):
            batch = list(refs)
            refs.clear()

            def write(txn):
                for k, v in batch:
                    txn.put(k, v)

            store.update_refs(write)

    def add_run(rid: int, task: str, inputs: list[tuple[str, object, int | None]]):
        identity = f"bench:{task}"
        out = Blob("bytes", {}, b"output of run %d " % rid * 4)
        log = Blob("text", {"encoding": "utf-8"}, b"log of run %d\n" % rid)
        tree = Tree("inputs", tuple(sorted((name, e) for name, e, _ in inputs)))
        out_id, log_id, tree_id = object_id(out), object_id(log), object_id(tree)
        key = xxhash.xxh3_128_digest(b"%d" % rid)
        rec = Run({"task": task, "identity": identity, "status": "success", "inputs": tree_id, "output": out_id,
                   "log": log_id, "start_time": now, "end_time": now, "cache_key": key,
                   "code": {f"bench.{task}": "0" * 32}, "parents": sorted({p for _, _, p in inputs if p})})
        objs.extend([out, log, tree, rec])
        refs.extend([
            (R.k_run(rid), R.pack({"status": "success", "task": task, "identity": identity, "start_time": now,
                                   "end_time": now, "record": bytes(object_id(rec))})),
            (R.k_task(identity, rid), R.status_byte("success")),
            (R.k_cache(key), R.rid8(rid) + R.pack_entry(out_id)),
            (b"produced/" + bytes(out_id), R.rid8(rid)),
        ])
        for _, e, producer in inputs:
            if producer:
                refs.append((R.k_edge_c(rid, producer, bytes(e)), b""))
                refs.append((R.k_edge_p(producer, rid, bytes(e)), b""))
        flush()
        return out_id

    dataset = add_run(1, "dataset", [("url", "file://data", None)])
    rid = 1
    prev = None  # (run id, output) of the previous evaluate in the chain
    first_eval = chain_end = None
    for p in range(n_runs // 4):
        if p % CHAIN == 0:
            prev = None
        ins = [("data", dataset, 1)] + ([("previous", prev[1], prev[0])] if prev else [])
        last = None
        for step in STEPS:
            rid += 1
            out = add_run(rid, step, ins if last is None else [("data", dataset, 1), ("x", last[1], last[0])])
            last = (rid, out)
        prev = last
        if p == 0:
            first_eval = rid
        if p % CHAIN == CHAIN - 1:
            chain_end = rid
    # Garbage: unreferenced objects, 10% of the live ones.
    for i in range(n_runs * 4 // 10):
        objs.append(Blob("bytes", {}, b"garbage %d " % i * 4))
        flush()
    flush(force=True)

    def counter(txn):  # as committed runs leave them: the counter and the highest committed id
        txn.put(R.K_COUNTER, R.rid8(rid))
        txn.put(R.K_COMMITTED, R.rid8(rid))

    store.update_refs(counter)
    return store, {"pipeline": first_eval, "chain": chain_end or rid}


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _measure(root: str, n: int) -> dict:
    import terra

    t = time.perf_counter()
    store, probe = _build(root, n)
    build = time.perf_counter() - t
    res = {"n": n, "build": build}
    for name, ref, down in (("pipeline", probe["pipeline"], False), ("chain", probe["chain"], False),
                            ("all", 1, True)):
        reps = 3 if name == "all" else 20
        dag = terra.provenance(ref, downstream=down, store=store)
        res[f"{name}_runs"] = len(dag)
        res[name] = _median_time(lambda: terra.provenance(ref, downstream=down, store=store), reps)
    stats = terra.gc(grace_period=0, store=store)
    res["gc"] = stats.duration
    res["gc_objects"] = stats.examined_objects
    res["gc_deleted"] = stats.deleted_objects
    t = time.perf_counter()
    report = terra.fsck(store=store)
    res["fsck"] = time.perf_counter() - t
    assert report.ok, str(report)
    return res


def run(report, quick: bool = False, full: bool | None = None) -> None:
    """Build stores of growing size; report lineage query and gc times."""
    if full is None:
        full = os.environ.get("TERRA_BENCH_FULL") == "1"
    sizes = (1_000, 10_000) + ((100_000,) if full and not quick else ())
    base = tempfile.mkdtemp(prefix="terra-bench-lineage-")
    results = []
    try:
        for n in sizes:
            results.append(_measure(os.path.join(base, str(n)), n))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    first = results[0]
    report("lineage queries vs store size (edge indexes; median)",
           ["runs in store", "pipeline (5 runs)", "chain (101 runs)", "downstream of shared dataset", "per run (all)",
            "pipeline vs smallest"],
           [[f"{r['n']:,}", fmt_time(r["pipeline"]), fmt_time(r["chain"]),
             f"{fmt_time(r['all'])} ({r['all_runs']:,} runs)", fmt_time(r["all"] / r["all_runs"]),
             fmt_ratio(r["pipeline"] / first["pipeline"])] for r in results])
    report("gc and fsck vs store size (grace 0, 10% garbage)",
           ["runs in store", "objects", "deleted", "gc time", "gc objects/s", "gc time per object vs smallest",
            "fsck time", "build time"],
           [[f"{r['n']:,}", f"{r['gc_objects']:,}", f"{r['gc_deleted']:,}", fmt_time(r["gc"]),
             f"{r['gc_objects'] / r['gc']:,.0f}",
             fmt_ratio((r["gc"] / r["gc_objects"]) / (first["gc"] / first["gc_objects"])),
             fmt_time(r["fsck"]), fmt_time(r["build"])] for r in results])


if __name__ == "__main__":
    from benchmarks._report import make_reporter

    run(make_reporter(plain="--plain" in sys.argv), quick="--quick" in sys.argv,
        full=True if "--full" in sys.argv else None)
