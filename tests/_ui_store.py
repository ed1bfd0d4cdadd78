"""A store for the UI suites: the iris pipeline twice, a figure, a frame task, a pickle, a failure, a tag.

Runs: 1 download_iris; 2 split (0.7); 3 train; 4 evaluate; 5 split (0.6);
6 train; 7 evaluate; 8 plot (figure); 9 scale (frame, k=1.5); 10 scale (k=2);
11 keep (a pickled object); 12 evaluate, failed. Tag ``best`` names run 4.
"""

from __future__ import annotations

import threading

import pandas as pd

import terra
from terra import Task, demo

UNPICKLED: list[str] = []  # Canary.__setstate__ appends here: the UI must never unpickle


class Canary:
    """A value stored by pickle; unpickling it leaves a trace."""

    def __init__(self, note: str):
        self.note = note

    def __setstate__(self, state):
        UNPICKLED.append(state.get("note", "?"))
        self.__dict__.update(state)


@Task.make_task
def plot(model: dict):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    fig.add_subplot().imshow(model["weights"])
    return fig


@Task.make_task
def scale(df: pd.DataFrame, k: float):
    out = df.copy()
    out.loc[out.index[:10], "sepal_length"] *= k
    return out


@Task.make_task
def keep(note: str):
    return Canary(note)


def build(root: str) -> dict:
    """Fill a new store at ``root``; returns ids worth looking at."""
    terra.configure(storage_dir=root, quiet=True)
    ids = {}
    data = demo.download_iris(demo.IRIS_CSV)
    for frac in (0.7, 0.6):
        s = demo.split_data(df=data, train_frac=frac)
        model = demo.train(data, s["train"])
        metrics = demo.evaluate(data, s["test"], model)
        ids.setdefault("weights", model["weights"].id)
    ids["figure"] = plot(model).id
    ids["frame1"] = scale(data, 1.5).id
    ids["frame2"] = scale(data, 2.0).id
    ids["pickle"] = keep("do not open").id
    try:
        demo.evaluate(data, s["test"], {"classes": ["x"]})
    except ValueError:
        pass
    terra.tag(4, "best")
    ids["data"] = data.id
    ids["metrics"] = metrics
    return ids


def serve(store):
    """A running UI server on a free loopback port (shut it down after)."""
    from terra.ui import make_server

    server = make_server(store, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
