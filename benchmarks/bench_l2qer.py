"""End-to-end time of L²QER on SmolLM2-135M (issue 5 target: < 3 minutes on 2 CPU cores).

    .venv/bin/python benchmarks/bench_l2qer.py            # 32 x 512 calibration, rank 32, W4A8 paper preset

Times: model load (the one-time GGUF conversion is done first and excluded), calibration-set
tokenization, then ``quantize_model`` broken down into capture + statistics ("calibrate"), RTN
("round") and the SVD reconstruction ("reconstruct"). All 210 decoder linears are quantized
(lm_head stays in high precision, as in the paper setting; ``--lm-head`` adds it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--recipe", default="l2qer")
    p.add_argument("--n", type=int, default=32, help="calibration sequences")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lm-head", action="store_true", help="quantize lm_head too")
    p.add_argument("--target-s", type=float, default=180.0)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from hwsim.eval import data, models
    from hwsim.quant import get_recipe, quantize_model, with_formats

    t = time.perf_counter()
    if args.model in models.list_models():
        models.convert(args.model, progress=False)  # one-time conversion (cached), excluded
    t_conv = time.perf_counter() - t
    t0 = time.perf_counter()
    model, tok = models.load(args.model, progress=False)
    t_load = time.perf_counter() - t0
    t = time.perf_counter()
    calib = data.calibration_set(tok, "austen", n=args.n, seq_len=args.seq_len, seed=0)
    t_data = time.perf_counter() - t
    rec = with_formats(get_recipe(args.recipe), rank=args.rank)
    if args.lm_head:
        rec = get_recipe(rec, skip=())
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = quantize_model(model, rec, calib, progress=False)
    t_q = time.perf_counter() - t
    total = time.perf_counter() - t0
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"model={args.model} recipe={rec.name} W={rec.layer.w} X={rec.layer.x} rank={rec.layer.rank} "
          f"calib={args.n}x{args.seq_len} threads={torch.get_num_threads()} linears={rep.n_quantized} "
          f"bits/weight={rep.bits_per_weight:.3f}")
    print(f"one-time conversion check (excluded): {t_conv:.1f} s")
    print(f"load {t_load:.1f} s | calibration data {t_data:.1f} s | quantize_model {t_q:.1f} s")
    print("  quantize_model stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in rep.timings.items()))
    print(f"end to end (load + data + quantize): {total:.1f} s; target {args.target_s:.0f} s; "
          f"ratio total/target = {total / args.target_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
