"""Remotes: push and pull against a real S3 protocol server on loopback (moto), beside boto3.

Two shapes: 1,000 small objects (1 KiB arrays) and 100 MB in 1 MB objects
(random, so stored raw). terra's push/pull (obstore, 64 requests in flight,
create-only puts, verification of every object pulled) is timed beside
boto3 uploading and downloading the same stored bytes one object at a time,
in the same run against the same server; then a second push of the
unchanged store. moto itself bounds all of these: the figures are about the
client's overheads and concurrency, not about S3. Run alone:
``python -m benchmarks remote [--quick]``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._report import MB, fmt_ratio, fmt_time  # noqa: E402


_SERVER = """
import logging, sys, time
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("%s:%d" % server.get_host_and_port(), flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
server.stop()
"""


def _server():
    """moto in a process of its own, so the server does not share the client's GIL."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    where = proc.stdout.readline().strip()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{where}",
                       "AWS_ALLOW_HTTP": "true"})
    return proc


def _store_with(root: str, n: int, size: int):
    """A store whose one run outputs ``n`` random arrays of ``size`` bytes (each its own object)."""
    import numpy as np

    import terra

    terra.configure(storage_dir=root, quiet=True)

    @terra.task
    def make(n: int, size: int, seed: int):
        rng = np.random.default_rng(seed)
        return [rng.integers(0, 256, size, dtype=np.uint8) for _ in range(n)]

    make(n, size, 7)
    from terra.session import current_store

    return current_store()


def _case(report_rows, label: str, n: int, size: int, tmp: str, s3) -> None:
    import terra
    from terra.remote import pull, push
    from terra.remote._transfer import read_raw
    from terra.remote.layout import object_path

    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    store = _store_with(os.path.join(tmp, f"A-{label}"), n, size)
    oids = list(store.iter_ids())
    raws = read_raw(store, oids)
    nbytes = sum(len(r) for r in raws)

    # boto3, one object at a time: the same stored bytes, the same paths.
    t = time.perf_counter()
    for oid, raw in zip(oids, raws):
        s3.put_object(Bucket=bucket, Key="boto3/" + object_path(oid), Body=raw)
    boto_up = time.perf_counter() - t
    t = time.perf_counter()
    for oid in oids:
        s3.get_object(Bucket=bucket, Key="boto3/" + object_path(oid))["Body"].read()
    boto_down = time.perf_counter() - t

    url = f"s3://{bucket}/terra"
    t = time.perf_counter()
    first = push(all=True, remote=url)
    up = time.perf_counter() - t
    t = time.perf_counter()
    second = push(all=True, remote=url)
    again = time.perf_counter() - t
    assert second.objects == 0, second

    terra.configure(storage_dir=os.path.join(tmp, f"B-{label}"), quiet=True)
    t = time.perf_counter()
    got = pull(all=True, remote=url)
    down = time.perf_counter() - t
    assert got.objects == first.objects == len(oids), (got, first, len(oids))

    objs = len(oids)
    report_rows += [
        (label, "push: terra (obstore)", objs, f"{nbytes / MB:.1f}", fmt_time(up), f"{objs / up:,.0f}",
         f"{nbytes / MB / up:.1f}", fmt_ratio(boto_up / up)),
        (label, "put: boto3, one at a time", objs, f"{nbytes / MB:.1f}", fmt_time(boto_up),
         f"{objs / boto_up:,.0f}", f"{nbytes / MB / boto_up:.1f}", "1.00x"),
        (label, "pull: terra (verified)", objs, f"{nbytes / MB:.1f}", fmt_time(down), f"{objs / down:,.0f}",
         f"{nbytes / MB / down:.1f}", fmt_ratio(boto_down / down)),
        (label, "get: boto3, one at a time", objs, f"{nbytes / MB:.1f}", fmt_time(boto_down),
         f"{objs / boto_down:,.0f}", f"{nbytes / MB / boto_down:.1f}", "1.00x"),
        (label, "second push (unchanged)", 0, "0.0", fmt_time(again), "-", "-",
         f"{second.objects} objects sent"),
    ]


def run(report, quick: bool = False) -> None:
    import boto3

    server = _server()
    tmp = tempfile.mkdtemp(prefix="terra-bench-remote-")
    try:
        s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        rows: list = []
        small = 200 if quick else 1000
        big = 20 if quick else 100
        _case(rows, f"{small:,} x 1 KiB", small, 1024, tmp, s3)
        _case(rows, f"{big} x 1 MB", big, MB, tmp, s3)
        report("remote: push/pull against moto S3 on loopback (ratio: speed over boto3 one at a time)",
               ["objects", "client", "n", "MB", "time", "objects/s", "MB/s", "vs boto3"], rows)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    from benchmarks._report import make_reporter

    run(make_reporter(), quick="--quick" in sys.argv)
