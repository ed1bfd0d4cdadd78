"""`terra ui` over HTTP: every page, filters, sorting, paging, previews, downloads, and what it refuses."""

from __future__ import annotations

import http.client
import io
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

import terra
from terra import demo
from terra.session import current_store
from terra.ui.graph import layout
from terra.ui.diff import describe_diff

import _ui_store


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ui") / "store")
    ids = _ui_store.build(root)
    server = _ui_store.serve(current_store())
    yield server, ids
    server.shutdown()
    server.server_close()
    terra.configure(quiet=False)


@pytest.fixture(autouse=True)
def _same_store(ui):
    """The module's server reads the store the fixture built; keep it current for direct calls."""
    server, _ = ui
    terra.configure(storage_dir=server.store.root, quiet=True)


def get(server, path, code=200, host=None):
    req = urllib.request.Request(server.url.rstrip("/") + path)
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, body, headers = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, body, headers = e.code, e.read(), e.headers
    assert status == code, (path, status, body[:500])
    return body.decode() if headers.get_content_type() in ("text/html", "text/plain") else body


def rows(page: str) -> list[int]:
    return [int(x) for x in re.findall(r"<tr data-run='(\d+)'", page)]


def test_runs_table_lists_filters_sorts_and_pages(ui):
    server, _ = ui
    page = get(server, "/")
    assert rows(page) == list(range(12, 0, -1))
    assert "in: train_frac" in page and "out: accuracy" in page and "<span class=tag>best</span>" in page
    assert rows(get(server, "/?status=failure")) == [12]
    assert rows(get(server, "/?task=train")) == [6, 3]
    assert rows(get(server, "/?task=terra.demo:evaluate&status=success")) == [7, 4]
    assert rows(get(server, "/?tag=best")) == [4]
    assert rows(get(server, "/?since=2999-01-01")) == []
    assert rows(get(server, "/?until=2000-01-01")) == []
    assert rows(get(server, "/?since=1d")) == list(range(12, 0, -1))
    assert rows(get(server, "/?task=evaluate&status=success&sort=out:accuracy&desc=0")) == [7, 4]  # 0.838 < 0.963
    assert rows(get(server, "/?sort=run&desc=0&per=5")) == [1, 2, 3, 4, 5]
    second = get(server, "/?sort=run&desc=0&per=5&page=2")
    assert rows(second) == [6, 7, 8, 9, 10] and "page 2 of 3" in second and "rel=next" in second
    assert "unknown status" in get(server, "/?status=bogus", code=400)
    assert "not a date" in get(server, "/?since=someday", code=400)
    assert "unknown sort column" in get(server, "/?sort=nothing", code=400)


def test_run_page_shows_record_previews_log_files_environment_why_lineage(ui):
    server, ids = ui
    page = get(server, "/run/3")
    for text in ("Run 3 · train", "success", "terra.demo:train", "Inputs", "Outputs", "epoch 0: loss",
                 "weights.npy", "python", "numpy", "Why did it run?", "first recorded run"):
        assert text in page, text
    assert f"/artifact/{ids['data']}" in page and "from run <a href='/run/1'>1</a>" in page
    assert "shape</th><td>5 × 3" in page and "dtype</th><td>float64" in page  # array summary of the weights
    # the lineage links to the parents
    assert "<svg" in page and 'data-run="1"' in page and 'href="/run/1" class="node"' in page
    first = get(server, "/run/1")
    assert "sepal_length" in first and "150 rows × 5 columns" in first  # DataFrame head
    assert "compared with run 3" in get(server, "/run/6") and "/compare?run=3&amp;run=6" in get(server, "/run/6")
    down = get(server, "/run/1?lineage=down")
    assert "Lineage (downstream)" in down and 'data-run="12"' in down
    failed = get(server, "/run/12")
    assert "ValueError" in failed and "Traceback" in failed
    assert "/png" in get(server, "/run/8")  # the figure as an image
    assert get(server, "/run/best").startswith("<!doctype html>")  # a tag works as a reference
    assert "no run with run_id=99" in get(server, "/run/99", code=404)


def test_artifact_page_and_downloads(ui):
    server, ids = ui
    page = get(server, f"/artifact/{ids['data']}")
    assert ids["data"] in page and "pandas.DataFrame" in page and "bytes" in page
    assert "produced by</th><td><a href='/run/1'>1</a>" in page
    assert all(f"/run/{r}'>{r}</a>" in page for r in (2, 3, 4, 5, 9, 10))  # consumers
    frame = pd.read_parquet(io.BytesIO(get(server, f"/artifact/{ids['data']}/download")))
    pd.testing.assert_frame_equal(frame, pd.read_csv(demo.IRIS_CSV))
    arr = np.load(io.BytesIO(get(server, f"/artifact/{ids['weights']}/download")))
    np.testing.assert_array_equal(arr, terra.load(ids["weights"]))
    png = get(server, f"/artifact/{ids['figure']}/png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "no artifact" in get(server, "/artifact/abcdef", code=404) or "no object" in get(
        server, "/artifact/abcdef", code=404)


def test_pickled_values_are_never_unpickled(ui):
    server, ids = ui
    _ui_store.UNPICKLED.clear()
    assert "pickled object, not previewed" in get(server, "/run/11")
    page = get(server, f"/artifact/{ids['pickle']}")
    assert "pickled object, not previewed" in page and "no download" in page
    assert "pickled" in get(server, f"/artifact/{ids['pickle']}/download", code=400)
    assert _ui_store.UNPICKLED == []
    terra.load(ids["pickle"])  # the canary works: loading it for real leaves a trace
    assert _ui_store.UNPICKLED == ["do not open"]


def test_lineage_page_and_layout_routes_edges_around_nodes(ui):
    server, _ = ui
    page = get(server, "/lineage/7")
    assert "Lineage of run 7 (upstream)" in page and page.count("class=\"node\"") == 4
    down = get(server, "/lineage/1?dir=down")
    assert "(downstream)" in down and down.count("class=\"node\"") == 12 - 1  # all but run 11 (no inputs)
    # A DAG with long edges: no edge segment may cross a node other than its own ends.
    runs = list(range(1, 9))
    pairs = [(1, 2), (2, 3), (3, 4), (1, 4), (1, 8), (2, 5), (5, 6), (6, 7), (4, 7), (3, 8), (1, 7)]
    lay = layout(runs, pairs)
    for p, c, pts in lay.edges:
        for (x1, y1), (x2, y2) in zip(pts, pts[1:]):
            for rid, (x, y, w, h) in lay.nodes.items():
                if rid in (p, c):
                    continue
                assert not _segment_hits_box(x1, y1, x2, y2, x, y, w, h), (p, c, rid)
    xs = {rid: x for rid, (x, *_rest) in lay.nodes.items()}
    assert all(xs[p] < xs[c] for p, c in pairs)  # producers left of consumers


def _segment_hits_box(x1, y1, x2, y2, bx, by, bw, bh, steps=200) -> bool:
    for i in range(steps + 1):
        t = i / steps
        x, y = x1 + (x2 - x1) * t, y1 + (y2 - y1) * t
        if bx < x < bx + bw and by < y < by + bh:
            return True
    return False


def test_compare_highlights_differences_by_kind(ui):
    server, _ = ui
    page = get(server, "/compare?run=3&run=6")
    assert "Compare 2 runs of train" in page
    assert "max abs diff" in page and "elements differ" in page  # arrays
    assert re.search(r"<tr class=differs><th>mask</th>", page)
    assert re.search(r"<tr><th>lr</th><td><code>0.1</code></td><td><code>0.1</code></td></tr>", page)
    frames = get(server, "/compare?run=9&run=10")
    assert "10 of 150 rows changed" in frames and "class=diff" in frames
    assert "compare runs of one task" in get(server, "/compare?run=3&run=4", code=400)
    assert "two or more runs" in get(server, "/compare?run=3", code=400)
    three = get(server, "/compare?run=4&run=7&run=12")
    assert "Compare 3 runs of evaluate" in three and "absent" in three  # the failed run has no outputs


def test_describe_diff_for_dicts_frames_arrays():
    assert describe_diff({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == "keys added: c; changed: b"
    df = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    assert describe_diff(df, df.assign(z=1.0)) == "columns added: z; 0 of 2 rows changed"
    assert "dtype changed: x int64→float64" in describe_diff(df, df.astype({"x": "float64"}))
    assert describe_diff(np.zeros(3), np.zeros(4)).startswith("shape/dtype (3,) float64 → (4,) float64")
    assert describe_diff(np.zeros(3), np.array([0, 0.5, -2.0])) == "max abs diff 2; 2 elements differ"


def test_read_only_and_loopback_only(ui):
    server, _ = ui
    assert server.server_address[0] == "127.0.0.1"
    get(server, "/", code=421, host="evil.example:80")  # a rebinding DNS name is refused
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("POST", "/", body=b"x")
    assert conn.getresponse().status == 405
    conn.close()
    assert "no page at /nothing" in get(server, "/nothing", code=404)


def test_terra_ui_command_prints_its_url_and_serves(ui, python, subprocess_env):
    server, _ = ui
    proc = subprocess.Popen([python, "-m", "terra", "--store", server.store.root, "ui"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env)
    try:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:(\d+)/)", line)
        assert m, line
        with urllib.request.urlopen(m.group(1), timeout=30) as r:
            assert r.status == 200 and b"download_iris" in r.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_api_json_free_runs_table_scales_to_pages(tmp_path):
    """Paging over many runs reads records only for the page shown."""
    from terra.listing import list_runs

    terra.configure(storage_dir=str(tmp_path / "s"), quiet=True)

    @terra.Task.make_task
    def many(i: int):
        return i * 2

    for i in range(30):
        many(i)
    rows, more = list_runs(limit=7)
    assert [r.run_id for r in rows] == list(range(30, 23, -1)) and more == 23
    assert rows[0].outputs == {"output": 58} and rows[0].inputs == {"i": 29}
    assert json.loads(json.dumps(rows[0].to_json()))["start_time"].endswith("+00:00")


def test_cached_listing_follows_changes_to_the_store(tmp_path):
    """The server's decoded-entry cache is keyed by the raw entry: removals, new runs and tags show at once."""
    from terra.listing import iter_rows, page_of_runs

    terra.configure(storage_dir=str(tmp_path / "s"), quiet=True)
    store = current_store()

    @terra.Task.make_task
    def sq(i: int):
        return i * i

    for i in range(6):
        sq(i)
    cache: dict = {}
    assert [r.run_id for r in iter_rows(store, status="success", cache=cache)] == [6, 5, 4, 3, 2, 1]
    terra.rm([3])
    terra.tag(5, "keep")
    sq(10)
    rows = list(iter_rows(store, status="success", cache=cache))
    assert [r.run_id for r in rows] == [7, 6, 5, 4, 2, 1]
    assert [r.tags for r in rows if r.run_id == 5] == [["keep"]] and len(cache) == 7
    assert [r.tags for r in iter_rows(store, cache=cache) if r.run_id == 6] == [[]]  # copies: tags never leak
    page, total = page_of_runs(store, 2, 2)
    assert [r.run_id for r in page] == [5, 4] and total == 6 and page[0].tags == ["keep"]
    assert page[1].outputs == {"output": 9}
    page, total = page_of_runs(store, 0, 4, newest_first=False)
    assert [r.run_id for r in page] == [1, 2, 4, 5]


def test_concurrent_requests_all_succeed(ui):
    """The threaded server reads one LMDB store from many threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    server, ids = ui
    paths = ["/", "/run/3", "/run/9", f"/artifact/{ids['data']}", "/lineage/7", "/compare?run=3&run=6",
             "/?status=success&sort=out:accuracy", f"/artifact/{ids['weights']}/download"] * 6
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda p: get(server, p), paths))
    assert len(bodies) == len(paths) and all(len(b) > 100 for b in bodies)


def test_terra_ui_refuses_a_busy_port(ui):
    from click.testing import CliRunner

    from terra.cli import cli

    server, _ = ui
    port = server.server_address[1]
    r = CliRunner().invoke(cli, ["--store", server.store.root, "ui", "--port", str(port)])
    assert r.exit_code == 1 and "cannot listen on 127.0.0.1" in r.stderr and "--port" in r.stderr
