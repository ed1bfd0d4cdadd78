import sys, numpy as np, terra
terra.configure(storage_dir=sys.argv[1], quiet=True)

@terra.task
def make(n: int):
    return np.arange(n, dtype=np.int64)

@terra.task
def double(a):
    return {"twice": a * 2, "label": "x" * 100}

@terra.task
def total(a, b):
    return float(a.sum() + b["twice"].sum())

a = make(10)
b = double(a)
c = total(a, b)
terra.tag(3, "final")
print(terra.get_meta(3)["parents"])
