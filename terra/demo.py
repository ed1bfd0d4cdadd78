"""The README's iris pipeline: download → split → train → evaluate, run twice.

``python -m terra.demo`` runs it on the default store (``~/.terra`` unless
configured). The second pass is served entirely from the cache; then the
lineage of the final metric is printed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

import terra
from terra import Task

# A Path: the task is keyed by the file's content, so an edited CSV reruns the pipeline.
IRIS_CSV = Path(__file__).parent / "data" / "iris.csv"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@Task.make_task
def download_iris(path: Path, run_dir: str = None):
    """Read the iris table (a local CSV stands in for a download)."""
    return pd.read_csv(path)


@Task.make_task
def split_data(df: pd.DataFrame, train_frac: float = 0.8, seed: int = 0, run_dir: str = None):
    """Random train/test masks over the rows."""
    mask = np.random.default_rng(seed).random(len(df)) < train_frac
    return {"train": mask, "test": ~mask}


@Task.make_task
def train(df: pd.DataFrame, mask: np.ndarray, lr: float = 0.1, epochs: int = 300, run_dir: str = None):
    """Softmax regression by gradient descent; returns weights and class names."""
    x, y, classes = _xy(df[mask])
    w = np.zeros((x.shape[1], len(classes)))
    onehot = np.eye(len(classes))[y]
    for epoch in range(epochs):
        p = _softmax(x @ w)
        w -= lr * x.T @ (p - onehot) / len(x)
        if epoch % 100 == 0:
            loss = -np.mean(np.log(p[np.arange(len(y)), y] + 1e-12))
            print(f"epoch {epoch}: loss {loss:.4f}")
    np.save(os.path.join(run_dir, "weights.npy"), w)
    return {"weights": w, "classes": list(classes)}


@Task.make_task
def evaluate(df: pd.DataFrame, mask: np.ndarray, model: dict, run_dir: str = None):
    """Accuracy of the model on the rows in ``mask``."""
    x, y, classes = _xy(df[mask], model["classes"])
    pred = np.argmax(x @ model["weights"], axis=1)
    return {"accuracy": float(np.mean(pred == y)), "n": int(mask.sum())}


def _xy(df: pd.DataFrame, classes=None):
    x = df[FEATURES].to_numpy(dtype=float)
    x = np.hstack([(x - x.mean(axis=0)) / x.std(axis=0), np.ones((len(x), 1))])
    classes = classes if classes is not None else sorted(df["species"].unique())
    y = np.array([classes.index(s) for s in df["species"]])
    return x, y, classes


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def pipeline():
    """Run the four steps; returns the metrics Artifact."""
    data = download_iris(IRIS_CSV)
    splits = split_data(df=data, train_frac=0.7)
    model = train(data, splits["train"])
    return evaluate(data, splits["test"], model)


STEPS = (download_iris, split_data, train, evaluate)


def _timed_pass() -> tuple[object, float, int]:
    """Run the pipeline once: (metrics, seconds, how many steps ran rather than came from the cache)."""
    from .listing import list_runs

    rows, _ = list_runs(limit=1)
    newest = rows[0].run_id if rows else 0
    t = time.perf_counter()
    metrics = pipeline()
    elapsed = time.perf_counter() - t
    # A step ran in this pass exactly when its run is newer than every run before the pass.
    ran = sum(1 for step in STEPS if (step.last_run_id or 0) > newest)
    return metrics, elapsed, ran


def main() -> None:
    print(f"store: {terra.get_config().store_path}")
    for n in (1, 2):
        metrics, elapsed, ran = _timed_pass()
        how = "all from the cache" if ran == 0 else f"{ran} of {len(STEPS)} steps ran, {len(STEPS) - ran} from the cache"
        print(f"pass {n}: {elapsed * 1e3:.1f} ms ({how}), accuracy={metrics['accuracy']:.3f}")
    run_id = evaluate.last_run_id
    print(f"\nlineage of the metrics (run {run_id}):")
    print(terra.provenance(run_id).to_text())
    print("\nlook around: terra ls · terra show RUN · terra why evaluate · terra ui")


if __name__ == "__main__":
    # Run the imported module's tasks: as `python -m terra.demo` this file is __main__, and tasks
    # defined here would be recorded as __main__:train, mixing with any script's own `train`.
    from terra.demo import main as _main

    _main()
