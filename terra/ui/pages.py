"""The pages of ``terra ui``, each a function of the store and the query that returns HTML.

Pages only read: runs table, run, artifact, lineage and compare. They are
plain server-rendered HTML with a few lines of CSS; links and GET forms do
the navigation, so every page works without JavaScript.
"""

from __future__ import annotations

import copy
import datetime as _dt
import html
import threading
from urllib.parse import urlencode

from .. import runs as R
from .._format import flatten
from ..errors import TerraError
from ..listing import DAMAGED, RunRow, consumers, fill_details, iter_rows, page_of_runs, run_tags
from ..objects import ObjectId, Tree
from .graph import to_svg
from ..preview import kind_of, preview_html, safe_to_load
from .diff import describe_diff

__all__ = ["BadRequest", "artifact_bytes", "artifact_page", "compare_page", "download_format", "figure_bytes",
           "lineage_page", "not_found_page", "page", "run_page", "runs_page"]

PER_PAGE = 50
MAX_SCALAR_COLUMNS = 8
e = html.escape


class BadRequest(TerraError):
    """A page was asked for with parameters it cannot use."""


# -- layout ---------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;font-size:14px}
header{background:#2b3a42;color:#fff;padding:8px 16px}header a{color:#fff;text-decoration:none;margin-right:16px}
main{padding:12px 16px}td.t{white-space:nowrap}h1{font-size:20px;margin:8px 0}h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th a{color:inherit}tr:hover{background:#f6f8fa}pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:480px}
.status{padding:1px 6px;border-radius:8px;font-size:12px}.success{background:#d9f2d9}.failure{background:#f8d0d0}
.interrupted{background:#fbe3c0}.running{background:#d6e6fb}.damaged{background:#ccc}
.muted{color:#777}.bad{color:#a00}.diff{background:#fff3b0}code{font-size:12px}
.kv th{width:160px;color:#555;font-weight:500}form.filters{margin:8px 0}form.filters *{margin-right:6px}
.pager a{margin-right:10px}img.figure{max-width:640px;border:1px solid #ddd}.tag{background:#e8e0f8;padding:0 5px;
border-radius:6px;margin-right:3px;font-size:12px}
"""


def page(title: str, body: str) -> str:
    """A full HTML document around ``body``."""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)} · terra</title>"
            f"<style>{CSS}</style></head><body><header><a href='/'><b>terra</b></a><a href='/'>runs</a></header>"
            f"<main>{body}</main></body></html>")


def _status(s: str) -> str:
    return f"<span class='status {e(s)}'>{e(s)}</span>"


def _time(t) -> str:
    if not isinstance(t, (int, float)):
        return ""
    return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _dur(d) -> str:
    if d is None:
        return ""
    if d < 1:
        return f"{d * 1e3:.3g} ms"
    return f"{d:.3g} s" if d < 100 else f"{d:,.0f} s"


def _run_link(rid) -> str:
    return f"<a href='/run/{int(rid)}'>{int(rid)}</a>"


def _art_link(oid: str) -> str:
    return f"<a href='/artifact/{e(oid)}'><code>{e(oid[:12])}</code></a>"


def _scalar(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else e(repr(v) if isinstance(v, str) else str(v))


# -- runs table -----------------------------------------------------------------------

_details_cache: dict[tuple[int, bytes | None], RunRow] = {}
_refs_cache: dict[bytes, RunRow] = {}
_cache_lock = threading.Lock()
_REF_SORTS = {"run": lambda r: r.run_id, "task": lambda r: (r.task or "", r.run_id),
              "status": lambda r: (r.status, r.run_id), "start": lambda r: (r.start_time or 0, r.run_id),
              "duration": lambda r: (r.duration if r.duration is not None else -1, r.run_id),
              "host": lambda r: (r.host or "", r.run_id)}


def _details(store, row: RunRow) -> RunRow:
    """``fill_details`` with a cache: records are immutable, so a (run, record) pair never changes."""
    key = (row.run_id, row.record)
    hit = _details_cache.get(key)
    if hit is None or row.record is None:
        hit = fill_details(store, row)
        if row.record is not None:
            with _cache_lock:
                if len(_details_cache) > 200_000:
                    _details_cache.clear()
                _details_cache[key] = hit
    else:  # a copy: the cached row is shared between requests (threads)
        hit = copy.copy(hit)
        hit.tags, hit.status = row.tags, row.status
    return hit


def _date(text: str, end: bool = False) -> float | None:
    """A date filter from a form: ``YYYY-MM-DD`` (an ``until`` date includes that whole day), ISO time or age."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        d = _dt.datetime.fromisoformat(text)
    except ValueError:
        from ..retention import parse_time

        try:
            return parse_time(text)
        except TerraError:
            raise BadRequest(f"not a date: {text!r} (use YYYY-MM-DD or an age such as 2d)") from None
    if end and len(text) == 10:
        d += _dt.timedelta(days=1)
    return d.timestamp()


def _sort_key(col: str):
    if col in _REF_SORTS:
        return _REF_SORTS[col]
    side, _, name = col.partition(":")
    if side not in ("in", "out") or not name:
        raise BadRequest(f"unknown sort column {col!r}")

    def key(r: RunRow):
        v = (r.inputs if side == "in" else r.outputs).get(name)
        # Numbers sort before text, missing values last; the run id breaks ties.
        return (v is None, isinstance(v, str), v if isinstance(v, (int, float)) else str(v or ""), r.run_id)

    return key


def runs_page(store, q: dict) -> str:
    """The runs table: filter by task/status/tag/date, sort by any column, one page at a time."""
    one = {k: (v[0] if v else "") for k, v in q.items()}
    task, status, tag = one.get("task") or None, one.get("status") or None, one.get("tag") or None
    since, until = _date(one.get("since", "")), _date(one.get("until", ""), end=True)
    sort, desc = one.get("sort") or "run", one.get("desc", "1" if "sort" not in one else "0") == "1"
    try:
        page_no = max(1, int(one.get("page") or 1))
        per = min(1000, max(1, int(one.get("per") or PER_PAGE)))
    except ValueError:
        raise BadRequest("page and per must be whole numbers") from None
    if status and status not in R.STATUSES + (DAMAGED,):
        raise BadRequest(f"unknown status {status!r}")
    key = _sort_key(sort)
    if sort == "run" and not (task or status or tag or since or until):
        # All runs in id order: only the page shown is decoded, however many runs there are.
        shown, total = page_of_runs(store, (page_no - 1) * per, per, newest_first=desc)
        pages = max(1, -(-total // per))
        if page_no > pages:
            page_no = pages
            shown, total = page_of_runs(store, (page_no - 1) * per, per, newest_first=desc)
    else:
        rows = list(iter_rows(store, task, status, since, until, tag, cache=_refs_cache))
        if sort not in _REF_SORTS:  # a scalar column: every matching record is needed to sort
            rows = [_details(store, r) for r in rows]
        rows.sort(key=key, reverse=desc)
        total = len(rows)
        pages = max(1, -(-total // per))
        page_no = min(page_no, pages)
        shown = [_details(store, r) for r in rows[(page_no - 1) * per: page_no * per]]
    in_cols = _columns(r.inputs for r in shown)
    out_cols = _columns(r.outputs for r in shown)
    base = {k: v for k, v in one.items() if k in ("task", "status", "tag", "since", "until", "per") and v}

    def head(label: str, col: str) -> str:
        flip = "0" if (sort == col and desc) else "1"
        arrow = (" ▼" if desc else " ▲") if sort == col else ""
        return f"<th><a href='/?{e(urlencode({**base, 'sort': col, 'desc': flip}))}'>{e(label)}{arrow}</a></th>"

    heads = ("<th></th>" + head("run", "run") + head("task", "task") + head("status", "status")
             + head("started", "start") + head("duration", "duration") + head("host", "host") + "<th>tags</th>"
             + "".join(head(f"in: {c}", f"in:{c}") for c in in_cols)
             + "".join(head(f"out: {c}", f"out:{c}") for c in out_cols))
    body = []
    for r in shown:
        tags = "".join(f"<span class=tag>{e(t)}</span>" for t in r.tags)
        cells = [f"<td><input type=checkbox name=run value={r.run_id} aria-label='select run {r.run_id}'></td>",
                 f"<td>{_run_link(r.run_id)}</td>",
                 f"<td title='{e(r.identity or '')}'>{e(r.task or '?')}</td>", f"<td>{_status(r.status)}</td>",
                 f"<td class=t>{_time(r.start_time)}</td>", f"<td class=t>{_dur(r.duration)}</td>",
                 f"<td>{e(r.host or '')}</td>",
                 f"<td>{tags}</td>"]
        cells += [f"<td>{_scalar(r.inputs[c]) if c in r.inputs else ''}</td>" for c in in_cols]
        cells += [f"<td>{_scalar(r.outputs[c]) if c in r.outputs else ''}</td>" for c in out_cols]
        body.append(f"<tr data-run='{r.run_id}' data-status='{e(r.status)}'>{''.join(cells)}</tr>")
    options = "".join(f"<option{' selected' if s == status else ''}>{s}</option>" for s in ("",) + R.STATUSES)
    filters = (
        "<form class=filters method=get action='/'>"
        f"<input name=task placeholder='task' value='{e(task or '')}'>"
        f"<select name=status aria-label=status>{options}</select>"
        f"<input name=tag placeholder='tag' value='{e(tag or '')}'>"
        f"<label>since <input name=since type=date value='{e(one.get('since', ''))}'></label>"
        f"<label>until <input name=until type=date value='{e(one.get('until', ''))}'></label>"
        "<button type=submit>filter</button> <a href='/'>clear</a></form>")
    def page_url(n: int) -> str:
        return "/?" + e(urlencode({**base, "sort": sort, "desc": int(desc), "page": n}))

    pager = []
    if page_no > 1:
        pager.append(f"<a rel=prev href='{page_url(page_no - 1)}'>← previous</a> ")
    pager.append(f"<span>page {page_no} of {pages} · {total:,} run{'s' if total != 1 else ''}</span>")
    if page_no < pages:
        pager.append(f" <a rel=next href='{page_url(page_no + 1)}'>next →</a>")
    table = (f"<form method=get action='/compare'><table id=runs><thead><tr>{heads}</tr></thead>"
             f"<tbody>{''.join(body)}</tbody></table>"
             "<p><button type=submit id=compare>compare selected runs</button></p></form>") if shown else \
        "<p class=muted>no runs match</p>"
    return page("runs", f"<h1>Runs</h1>{filters}<p class=pager>{''.join(pager)}</p>{table}")


def _columns(dicts) -> list[str]:
    seen: dict[str, None] = {}
    for d in dicts:
        for k in d:
            seen.setdefault(k, None)
    return list(seen)[:MAX_SCALAR_COLUMNS]


# -- run page ---------------------------------------------------------------------------


def _preview(art) -> str:
    return preview_html(art, figure_src=lambda a: f"/artifact/{a.id}/png")


def _value_rows(items, with_producer: bool) -> str:
    from ..io import Artifact

    rows = []
    for name, v in items:
        if isinstance(v, Artifact):
            prod = _run_link(v.run_id) if with_producer and v.run_id is not None else ""
            cell = f"{_art_link(v.id)} {prod and 'from run ' + prod}<div class=preview>{_preview(v)}</div>"
        else:
            cell = f"<code>{_scalar(v)}</code>"
        rows.append(f"<tr><th>{e(name)}</th><td>{cell}</td></tr>")
    return f"<table class=kv>{''.join(rows)}</table>" if rows else "<p class=muted>none</p>"


def run_page(store, rid: int, q: dict) -> str:
    """One run: record, inputs and outputs with previews, log, run-dir files, environment, why, lineage."""
    import terra

    from ..retention import resolve_run

    rid = resolve_run(rid, store)
    meta = _raw_meta(store, rid)
    used_by = consumers(store, rid)
    tags = run_tags(store).get(rid, [])
    start, end = meta.get("start_time"), meta.get("end_time")
    git = meta.get("git") or {}
    record = [("task", e(meta.get("task") or "?")), ("identity", f"<code>{e(meta.get('identity') or '')}</code>"),
              ("status", _status(meta.get("status", "?"))), ("started", _time(start)), ("ended", _time(end)),
              ("duration", _dur(end - start) if start and end else ""),
              ("tags", "".join(f"<span class=tag>{e(t)}</span>" for t in tags)),
              ("inputs from", ", ".join(_run_link(p) for p in meta.get("parents") or []) or "—"),
              ("used by", ", ".join(_run_link(c) for c in used_by) or "—")]
    if meta.get("cache_key"):
        record.append(("cache key", f"<code>{bytes(meta['cache_key']).hex()}</code>"))
    if meta.get("fingerprint"):
        record.append(("code fingerprint", f"<code>{e(str(meta['fingerprint']))}</code>"))
    if meta.get("version"):
        record.append(("version", e(str(meta["version"]))))
    env = [("host", e(str(meta.get("host", "")))), ("user", e(str(meta.get("user", "")))),
           ("pid", e(str(meta.get("pid", ""))))]
    env += [(k, e(str(v))) for k, v in sorted((meta.get("versions") or {}).items())]
    if git.get("commit"):
        env.append(("git", f"<code>{e(git['commit'])}</code>{' (dirty)' if git.get('dirty') else ''}"
                            f" {e(str(git.get('branch') or ''))}"))
    err = meta.get("error") or {}
    error = ""
    if err:
        error = (f"<h2>Error</h2><p class=bad>{e(str(err.get('type')))}: {e(str(err.get('message')))}</p>"
                 f"<pre>{e(str(err.get('traceback') or ''))}</pre>")
    inputs = terra.inp(rid, store)
    outputs = flatten(terra.out(rid, store)) if meta.get("status") == "success" else []
    try:
        log = R.get_log(rid, store)
        log_html = (f"<pre id=log>{e(log[-200_000:])}</pre>" if log else
                    "<p class=muted id=log>no output captured</p>")
    except Exception as ex:  # noqa: BLE001 - the rest of the page is still worth showing
        log_html = f"<p class=bad id=log>log unreadable: {e(type(ex).__name__)}: {e(str(ex))}</p>"
    try:
        why = terra.why(rid, store)
        why_html = f"<pre id=why>{e(str(why))}</pre>"
        if why.baseline is not None:
            why_html += (f"<p>closest earlier run: {_run_link(why.baseline)} · "
                         f"<a id=compare-baseline href='/compare?run={why.baseline}&amp;run={rid}'>compare</a></p>")
    except TerraError as ex:
        why_html = f"<p class=bad>{e(str(ex))}</p>"
    down = (q.get("lineage") or [""])[0] == "down"
    lineage = terra.provenance(rid, downstream=down, store=store)
    toggle = (f"<a id=upstream href='/run/{rid}?lineage=up#lineage'>upstream</a> · "
              f"<a id=downstream href='/run/{rid}?lineage=down#lineage'>downstream</a> · "
              f"<a href='/lineage/{rid}{'?dir=down' if down else ''}'>full view</a>")
    body = (f"<h1>Run {rid} · {e(meta.get('task') or '?')} {_status(meta.get('status', '?'))}</h1>"
            f"<h2>Record</h2>{_kv(record)}{error}"
            f"<h2>Inputs</h2>{_value_rows(inputs.items(), True)}"
            f"<h2>Outputs</h2>{_value_rows(outputs, False)}"
            f"<h2>Log</h2>{log_html}"
            f"<h2>Run directory</h2>{_run_dir(store, meta, rid)}"
            f"<h2>Environment</h2>{_kv(env)}"
            f"<h2>Why did it run?</h2>{why_html}"
            f"<h2 id=lineage>Lineage ({'downstream' if down else 'upstream'})</h2><p>{toggle}</p>"
            f"<div class=graph>{to_svg(lineage)}</div>")
    return page(f"run {rid}", body)


def _raw_meta(store, rid: int) -> dict:
    return {k: v for k, v in R.get_run(rid, store).items() if k not in ("inputs", "output", "log")}


def _kv(rows) -> str:
    return "<table class=kv>" + "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _run_dir(store, meta: dict, rid: int) -> str:
    rec = R.get_run(rid, store)
    snap = rec.get("run_dir_tree")
    if snap is None:
        return "<p class=muted>no files</p>" if meta.get("has_run_dir") else "<p class=muted>no run directory</p>"
    tree = store.get(ObjectId(snap))
    if not isinstance(tree, Tree):
        return "<p class=bad>run directory snapshot is not a tree</p>"
    from ..serialize import summarize

    rows = []
    for name, oid in tree.entries:
        if isinstance(oid, ObjectId):
            size = summarize(store, oid).get("nbytes")
            rows.append(f"<tr><td>{e(name)}</td><td>{_art_link(oid.hex())}</td>"
                        f"<td>{'' if size is None else f'{size:,} bytes'}</td></tr>")
    return f"<table id=files>{''.join(rows)}</table>"


# -- artifact page ----------------------------------------------------------------------


def artifact_page(store, ident: str) -> str:
    """One stored value: id, size, type, producer, consumers, preview and download."""
    import terra

    from ..serialize import summarize

    art = terra.get_artifact(ident, store)
    summary = summarize(store, art.__terra_ref__)
    used_by = [] if art.run_id is None else consumers(store, art.run_id, art.__terra_ref__)
    rows = [("id", f"<code>{art.id}</code>"), ("type", e(str(summary.get("type", "?"))))]
    for k in ("shape", "dtype", "len", "columns"):
        if summary.get(k) is not None:
            rows.append((k, e(str(summary[k]))))
    if summary.get("nbytes") is not None:
        rows.append(("size", f"{summary['nbytes']:,} bytes"))
    rows.append(("produced by", _run_link(art.run_id) if art.run_id is not None else "—"))
    rows.append(("used by", ", ".join(_run_link(c) for c in used_by) or "—"))
    fmt = download_format(store, art.__terra_ref__, summary)
    download = (f"<a id=download href='/artifact/{art.id}/download'>download ({fmt[1]})</a>" if fmt
                else "<span class=muted>no download: pickled objects are not decoded here</span>")
    rows.append(("download", download))
    return page(f"artifact {art.id[:12]}", f"<h1>Artifact <code>{art.id[:12]}</code></h1>{_kv(rows)}"
                                          f"<h2>Preview</h2>{_preview(art)}")


def download_format(store, oid: ObjectId, summary: dict) -> tuple[str, str] | None:
    """(file suffix, format name) a value downloads as, or None when it cannot be decoded safely."""
    kind = kind_of(store, oid)
    if kind == "figure":
        return ".png", "png"
    if kind != "safe":
        return None
    t = str(summary.get("type", ""))
    if t == "numpy.ndarray":
        return ".npy", "npy"
    if t.startswith("pandas."):
        return ".parquet", "parquet"
    if t == "str":
        return ".txt", "text"
    if t in ("bytes", "bytearray"):
        return ".bin", "bytes"
    return ".json", "json"


def artifact_bytes(store, ident: str) -> tuple[bytes, str, str]:
    """(content, media type, file name) of an artifact in its download format.

    Raises:
        BadRequest: the value is pickled (never decoded here) or has no JSON form.
    """
    import io
    import json

    import terra

    from ..serialize import figure_png, summarize

    art = terra.get_artifact(ident, store)
    oid = art.__terra_ref__
    fmt = download_format(store, oid, summarize(store, oid))
    if fmt is None:
        raise BadRequest(f"artifact {art.id[:12]} is pickled: not decoded by the UI (use terra cat --help)")
    suffix, name = fmt
    if name == "png":
        return figure_png(store, oid), "image/png", art.id[:12] + suffix
    value = art.load()
    buf = io.BytesIO()
    if name == "npy":
        import numpy as np

        np.save(buf, value, allow_pickle=False)
        media = "application/octet-stream"
    elif name == "parquet":
        (value.to_frame() if hasattr(value, "to_frame") else value).to_parquet(buf)
        media = "application/vnd.apache.parquet"
    elif name == "text":
        buf.write(value.encode("utf-8"))
        media = "text/plain; charset=utf-8"
    elif name == "bytes":
        buf.write(bytes(value))
        media = "application/octet-stream"
    else:
        try:
            buf.write(json.dumps(value, indent=2, default=_json_default).encode())
        except (TypeError, ValueError) as ex:
            raise BadRequest(f"artifact {art.id[:12]} has no JSON form: {ex}") from None
        media = "application/json"
    return buf.getvalue(), media, art.id[:12] + suffix


def _json_default(v):
    if isinstance(v, (set, frozenset)):
        return sorted(v, key=repr)
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} is not JSON")


def figure_bytes(store, ident: str) -> bytes:
    """PNG bytes of a stored figure."""
    import terra

    from ..serialize import figure_png

    return figure_png(store, terra.get_artifact(ident, store).__terra_ref__)


# -- lineage ------------------------------------------------------------------------


def lineage_page(store, ref: str, q: dict) -> str:
    """The lineage of a run or artifact as a layered SVG graph, upstream or downstream."""
    import terra

    down = (q.get("dir") or [""])[0] == "down"
    lineage = terra.provenance(ref, downstream=down, store=store)
    what = f"artifact {lineage.artifact[:12]}" if lineage.artifact else f"run {lineage.focus}"
    toggle = (f"<a id=upstream href='/lineage/{e(ref)}'>upstream</a> · "
              f"<a id=downstream href='/lineage/{e(ref)}?dir=down'>downstream</a>")
    body = (f"<h1>Lineage of {e(what)} ({'downstream' if down else 'upstream'})</h1><p>{toggle} · "
            f"{len(lineage.runs)} runs, {len(lineage.edges)} edges</p>"
            + (f"<div class=graph>{to_svg(lineage)}</div>" if lineage.runs else "<p class=muted>no recorded runs</p>"))
    return page(f"lineage {what}", body)


# -- compare ------------------------------------------------------------------------


def compare_page(store, q: dict) -> str:
    """Two or more runs of one task side by side; cells that differ from the first run are highlighted."""
    import terra

    from ..io import Artifact
    from ..retention import resolve_run

    refs = q.get("run") or []
    if len(refs) < 2:
        raise BadRequest("compare needs two or more runs: /compare?run=1&run=2")
    rids = sorted({resolve_run(r, store) for r in refs})  # the earliest run is the baseline
    metas = [_raw_meta(store, r) for r in rids]
    identities = {m.get("identity") for m in metas}
    if len(identities) > 1:
        raise BadRequest("compare runs of one task: got " + ", ".join(sorted(str(i) for i in identities)))
    ins = [terra.inp(r, store) for r in rids]
    outs = [dict(flatten(terra.out(r, store))) if m.get("status") == "success" else {} for r, m in zip(rids, metas)]

    def same(a, b) -> bool:
        if isinstance(a, Artifact) or isinstance(b, Artifact):
            return isinstance(a, Artifact) and isinstance(b, Artifact) and a.id == b.id
        return type(a) is type(b) and a == b

    def cell(v, base, first: bool, present: bool) -> str:
        if not present:
            return "<td class=diff><span class=muted>absent</span></td>"
        if isinstance(v, Artifact):
            text = _art_link(v.id)
            if not first and isinstance(base, Artifact) and base.id != v.id:
                text += f"<div class=muted>{_diff(base, v)}</div>"
        elif isinstance(v, _Text):
            text = e(v)
        else:
            text = f"<code>{_scalar(v)}</code>"
        cls = "" if first or same(v, base) else " class=diff"
        return f"<td{cls}>{text}</td>"

    def section(title: str, dicts: list[dict]) -> str:
        names: dict[str, None] = {}
        for d in dicts:
            for k in d:
                names.setdefault(k, None)
        rows = []
        for n in names:
            base = dicts[0].get(n)
            cells = "".join(cell(d.get(n), base, i == 0, n in d) for i, d in enumerate(dicts))
            differs = any(not same(d.get(n), base) or (n in d) != (n in dicts[0]) for d in dicts[1:])
            rows.append(f"<tr{' class=differs' if differs else ''}><th>{e(n)}</th>{cells}</tr>")
        return f"<tr><th colspan={len(dicts) + 1}><h2>{title}</h2></th></tr>" + "".join(rows)

    heads = "".join(f"<th>{_run_link(r)} {_status(m.get('status', '?'))}</th>" for r, m in zip(rids, metas))
    info = [{"started": _Text(_time(m.get("start_time"))),
             "duration": _Text(_dur(m["end_time"] - m["start_time"] if m.get("end_time") and m.get("start_time")
                                    else None)),
             "code": _Text(str(m.get("fingerprint", ""))[:12])} for m in metas]
    body = (f"<h1>Compare {len(rids)} runs of {e(metas[0].get('task') or '?')}</h1>"
            f"<table id=compare><thead><tr><th></th>{heads}</tr></thead><tbody>"
            + section("Run", info) + section("Inputs", ins) + section("Outputs", outs) + "</tbody></table>")
    return page("compare", body)


class _Text(str):
    """Display text (shown as is, not as a Python value)."""


def _diff(a, b) -> str:
    try:
        if not (safe_to_load(a.store, a.__terra_ref__) and safe_to_load(b.store, b.__terra_ref__)):
            return "pickled: compared by id only"
        return e(describe_diff(a.load(), b.load()))
    except Exception as ex:  # noqa: BLE001 - a page shows the problem instead of failing
        return f"<span class=bad>{e(type(ex).__name__)}</span>"


def not_found_page(message: str) -> str:
    """The page for a reference that names nothing."""
    return page("not found", f"<h1>Not found</h1><p class=bad>{e(message)}</p><p><a href='/'>all runs</a></p>")

