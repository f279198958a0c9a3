#!/usr/bin/env python3
"""Reference timing for `cargo xtask bench rfm`: one xrfm RFM fit (kernel `l2_high_dim`) on the
data the Rust benchmark wrote, with the same fixed hyper-parameters and thread count.

    python tests/bench/xrfm_fit.py DIR --bandwidth 10 --exponent 1 --reg 1e-3 --iters 10 --threads 2

DIR holds x_train.npy, y_train.npy, x_val.npy, y_val.npy (float32). Prints one JSON line:
{"seconds": fit wall time, "val_auc": AUC of the best predictor, "peak_rss_mb": process peak RSS,
 "best_iter": ..., "xrfm": version}.
"""

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--bandwidth", type=float, required=True)
    ap.add_argument("--exponent", type=float, required=True)
    ap.add_argument("--reg", type=float, required=True)
    ap.add_argument("--iters", type=int, required=True)
    ap.add_argument("--center", action="store_true")
    ap.add_argument("--threads", type=int, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import xrfm
    from sklearn.metrics import roc_auc_score
    from xrfm.rfm_src.class_conversion import ClassificationConverter
    from xrfm.rfm_src.recursive_feature_machine import RFM

    d = Path(args.dir)
    x_tr, y_tr, x_va, y_va = (torch.from_numpy(np.load(d / f"{n}.npy")) for n in ("x_train", "y_train", "x_val", "y_val"))
    converter = ClassificationConverter(mode="zero_one", n_classes=2)
    model = RFM(kernel="l2_high_dim", bandwidth=args.bandwidth, exponent=args.exponent, device="cpu",
                verbose=False, tuning_metric="auc", class_converter=converter)
    start = time.perf_counter()
    model.fit((x_tr, y_tr), (x_va, y_va), iters=args.iters, reg=args.reg, center_grads=args.center,
              early_stop_rfm=False, get_agop_best_model=True, verbose=False)
    seconds = time.perf_counter() - start
    probas = converter.numerical_to_probas(model.predict(x_va))[:, 1].numpy()
    auc = roc_auc_score(y_va.numpy()[:, 0], probas)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"seconds": seconds, "val_auc": float(auc), "peak_rss_mb": peak,
                      "best_iter": int(model.best_iter), "xrfm": getattr(xrfm, "__version__", "?")}))


if __name__ == "__main__":
    main()
