"""How far float32 results of the same network spread across engines,
thread counts and instruction-set paths (what the tests' tolerances rest on).

Each variant runs in its own process (some switches must be set before a
library is imported) on the same normalised real tiles: three 400 px tiles
(off the 32 px grid: the ONNX engine's one-graph path) and one 512 px tile
(on the grid: stem/core/head in row strips). Every pair is compared: max
|dp|, the 99.99th percentile of |dp|, and the largest difference of the
logits where 1e-6 < p < 1 - 1e-6.

    .venv/bin/python benchmarks/float_spread.py [--out benchmarks/results/float_spread]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "real"
EXAMPLE = HERE.parent / "examples" / "fitswcs_tpv_ctio_mosaic2.fits"

# name: (environment, engine, extra)
VARIANTS = {
    "savedmodel_tf": ({}, "savedmodel", {}),
    "savedmodel_tf_no_onednn": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "savedmodel", {}),
    "onnx_1_thread": ({}, "onnxruntime", {"threads": 1}),
    "onnx_2_threads": ({}, "onnxruntime", {"threads": 2}),
    "onnx_no_graph_opt": ({}, "onnxruntime", {"threads": 2, "no_opt": True}),
    "keras_tf": ({"KERAS_BACKEND": "tensorflow"}, "keras", {}),
    "keras_tf_no_onednn": ({"KERAS_BACKEND": "tensorflow", "TF_ENABLE_ONEDNN_OPTS": "0"}, "keras", {}),
    "keras_jax": ({"KERAS_BACKEND": "jax"}, "keras", {}),
}


def tiles() -> list[np.ndarray]:
    from astropy.io import fits

    from maxidetect.network.normalise import normalise

    out = []
    names = [("fitswcs_tpv_ctio_mosaic2.fits", (slice(0, 400), slice(0, 400))),
             ("ccdproc_a8280271_saao_raw.fits", (slice(100, 500), slice(136, 536))),
             ("fitswcs_zpn_ukirt_wfcam.fits", (slice(50, 450), slice(80, 480)))]
    for name, box in names:
        path = REAL / name if (REAL / name).exists() else EXAMPLE
        out.append(normalise(fits.getdata(path))[box].astype(np.float32))
    big = normalise(fits.getdata(EXAMPLE)).astype(np.float32)
    out.append(big[:512, :512])
    return out


def run_variant(name: str, out: Path) -> None:
    env, engine, extra = VARIANTS[name]
    batch = np.stack(tiles()[:3])
    grid = tiles()[3][None]
    if engine == "savedmodel":
        import tensorflow as tf

        from maxidetect.network.weights import maximask_savedmodel_dir

        fn = tf.saved_model.load(str(maximask_savedmodel_dir())).signatures["serving_default"]

        def fwd(b):
            n = 14
            r = fn(input_1=tf.constant(b[..., None]), input_2=tf.range(n, dtype=tf.int32),
                   input_3=tf.zeros(n), input_4=tf.zeros(n), input_5=tf.zeros(n))
            return np.moveaxis(r["output_1"].numpy(), -1, 1)
    else:
        from maxidetect.network.inference import Predictor

        if extra.get("no_opt"):
            import onnxruntime as ort

            level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            orig = ort.SessionOptions

            class Opts(orig):
                def __setattr__(self, key, value):
                    super().__setattr__(key, level if key == "graph_optimization_level" else value)

            ort.SessionOptions = Opts
        p = Predictor(engine=engine, threads=extra.get("threads"))

        def fwd(b):
            return np.moveaxis(p.forward(b), -1, 1)
    np.save(out / f"{name}.off_grid.npy", fwd(batch))
    np.save(out / f"{name}.on_grid.npy", fwd(grid))


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    ok = (a > 1e-6) & (a < 1 - 1e-6) & (b > 1e-6) & (b < 1 - 1e-6)
    la = np.log(a[ok] / (1 - a[ok]))
    lb = np.log(b[ok] / (1 - b[ok]))
    return {"max_dp": float(d.max()), "p9999_dp": float(np.percentile(d, 99.99)), "mean_dp": float(d.mean()),
            "max_dlogit": float(np.abs(la - lb).max()) if ok.any() else 0.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "results" / "float_spread"))
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.variant:
        run_variant(args.variant, Path(args.tmp))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="float-spread-"))
    done = []
    for name, (env, _, _) in VARIANTS.items():
        e = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
        r = subprocess.run([sys.executable, __file__, "--variant", name, "--tmp", str(tmp)], env=e,
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{name}: failed ({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode})")
            continue
        done.append(name)
        print(f"{name}: ok", flush=True)
    rows = []
    for grid in ("off_grid", "on_grid"):
        for a, b in itertools.combinations(done, 2):
            x, y = np.load(tmp / f"{a}.{grid}.npy"), np.load(tmp / f"{b}.{grid}.npy")
            rows.append({"tiles": grid, "a": a, "b": b, **compare(x, y)})
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = open("/proc/cpuinfo").read()
        isa = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx2") if f" {f}" in flags]
    except OSError:
        isa = []
    import onnxruntime

    meta = {"cpu": cpu, "cores": os.cpu_count(), "isa": isa, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "command": "python benchmarks/float_spread.py"}
    try:
        import tensorflow as tf

        meta["tensorflow"] = tf.__version__
    except ImportError:
        pass
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    worst = max(r["max_dp"] for r in rows)
    lines = ["# float32 spread of the network across engines, threads and instruction-set paths", "",
             f"`{meta['command']}` on {cpu} ({os.cpu_count()} cores; {', '.join(isa)}), onnxruntime "
             f"{meta['onnxruntime']}, tensorflow {meta.get('tensorflow', '-')}. Same normalised real tiles for every "
             "variant: 3 x 400 px (off the 32 px grid) and 1 x 512 px (on it).", "",
             f"Largest difference of a probability between any two variants: **{worst:.2e}**.", "",
             "| tiles | a | b | max abs dp | 99.99% abs dp | mean abs dp | max abs dlogit |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['tiles']} | {r['a']} | {r['b']} | {r['max_dp']:.2e} | {r['p9999_dp']:.2e} | {r['mean_dp']:.1e} | "
              f"{r['max_dlogit']:.2e} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:6]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
