"""``hwsim formats demo``: quantize one tensor in many formats; print error vs bits per element and
write a small report (markdown table + plot)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_FORMATS = ("fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "mxint8", "mxfp8_e4m3",
                   "mxint6", "mxfp6_e2m3", "mxfp6_e3m2", "mxint4", "mxfp4", "nvfp4", "bfp8",
                   "bfp4", "int8_ch", "int4_g128", "int4_g128_asym", "mxint3", "mxint2")


def llm_like_tensor(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Activation-like fp32 data: Gaussian with per-channel scales and a few outlier channels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x *= np.exp(rng.normal(0.0, 0.5, size=(1, cols))).astype(np.float32)
    outliers = rng.choice(cols, size=max(1, cols // 128), replace=False)
    x[:, outliers] *= 20.0
    return x


def format_errors(x: np.ndarray, formats=DEFAULT_FORMATS) -> pd.DataFrame:
    """Error metrics of fake_quant(x) along the last axis for each format; ``seconds`` is the time
    of the call on x alone (a call on x's first row first compiles or loads the kernels)."""
    import hwsim.formats as F

    rows = []
    ref = x.astype(np.float64)
    power = float(np.mean(ref ** 2))
    for name in formats:
        spec = F.get(name)
        F.fake_quant(np.ascontiguousarray(x[:1]), spec, axis=-1)  # compilation is not the format's time
        t0 = time.perf_counter()
        y = F.fake_quant(x, spec, axis=-1).astype(np.float64)
        dt = time.perf_counter() - t0
        err = y - ref
        mse = float(np.mean(err ** 2))
        rows.append({
            "format": spec.name,
            "bits_per_element": spec.bits_per_element(x.shape),
            "rel_rms_error": float(np.sqrt(mse / power)),
            "sqnr_db": float(10 * np.log10(power / mse)) if mse > 0 else float("inf"),
            "max_abs_error": float(np.max(np.abs(err))),
            "seconds": dt,
        })
    return pd.DataFrame(rows)


def write_report(df: pd.DataFrame, out_dir: Path, shape) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    finite = df[np.isfinite(df.sqnr_db)]
    ax.scatter(finite.bits_per_element, finite.sqnr_db)
    for _, r in finite.iterrows():
        ax.annotate(r["format"], (r.bits_per_element, r.sqnr_db), fontsize=7,
                    xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("bits per element (scales included)")
    ax.set_ylabel("SQNR (dB)")
    ax.set_xscale("log", base=2)
    ax.set_title(f"Quantization error vs storage, LLM-like tensor {shape[0]}x{shape[1]}")
    ax.grid(True, alpha=0.3)
    png = out_dir / "formats_demo.png"
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    md = out_dir / "formats_demo.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(
        "# hwsim format demo\n\n"
        f"Input: {shape[0]}x{shape[1]} fp32, Gaussian with log-normal channel scales and "
        "outlier channels (x20); blocks along the last axis; RNE.\n\n"
        + df.to_markdown(index=False, floatfmt=".4g") + "\n\n![SQNR vs bits](formats_demo.png)\n")
    tmp.replace(md)
    return md


def _run(args) -> int:
    x = llm_like_tensor(args.rows, args.cols, args.seed)
    df = format_errors(x, args.formats or DEFAULT_FORMATS)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    path = write_report(df, Path(args.out), x.shape)
    print(f"\nreport: {path}")
    return 0


def add_parser(subparsers) -> None:
    """Adds ``demo`` to the ``hwsim formats`` actions."""
    from ._args import int_at_least, with_examples

    p = subparsers.add_parser("demo", help="quantize a tensor in many formats; error vs bits report",
                              description="Quantize one LLM-like tensor in many formats; print the error against "
                                          "the bits per element and write a markdown report with a plot.",
                              **with_examples("hwsim formats demo", "hwsim formats demo --rows 64 --cols 1024 "
                                              "--formats mxint4 mxfp4 nvfp4 --out /tmp/demo"))
    p.add_argument("--rows", type=int_at_least(1), default=256, help="rows of the tensor (default 256)")
    p.add_argument("--cols", type=int_at_least(1), default=4096,
                   help="columns, the quantized axis (default 4096)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random tensor (default 0)")
    p.add_argument("--formats", nargs="*", help="format names (default: a representative set)")
    p.add_argument("--out", default="reports", help="report directory (default: reports/)")
    p.set_defaults(func=_run)
