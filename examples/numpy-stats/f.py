# Summary statistics of a list of numbers, with numpy from the base image.
import numpy as np


def f(event):
    xs = np.asarray((event or {}).get("values", [1, 2, 3, 4]), dtype=float)
    return {
        "n": int(xs.size),
        "mean": float(xs.mean()),
        "std": float(xs.std()),
        "p50": float(np.percentile(xs, 50)),
        "p99": float(np.percentile(xs, 99)),
    }
