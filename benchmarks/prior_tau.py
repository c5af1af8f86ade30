"""The text->radical prior's logit adjustment (issue 42): how often the guess is right, per third, for each tau.

    python benchmarks/prior_tau.py                  # data/embed/embeddings.parquet made WITHOUT embed.radical_prior
    python benchmarks/prior_tau.py --taus 0 0.5 1

Uses the embed stage's own prior (glyffuser/diffusion/prior.py): the head fit on all training definitions guesses the
test split (what the model is told at evaluation), and 5-fold cross-fitting guesses each training definition from a
head that never saw it (the numbers tau may be chosen on: the test split is only reported). Thirds as the evaluate
stage cuts them (by the radical's training glyphs). Writes benchmarks/results/prior_tau-cpu<N>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pyarrow.parquet as pq
from common import RESULTS, ROOT, device_description

sys.path.insert(0, str(ROOT / "src"))
from glyffuser.analysis.metrics import THIRDS, by_third, frequency_thirds  # noqa: E402
from glyffuser.artifacts.embeddings import load_embeddings  # noqa: E402
from glyffuser.diffusion.prior import cross_fit, fit_prior, pooled_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", default=str(ROOT / "data/embed/embeddings.parquet"))
    parser.add_argument("--definitions", default=str(ROOT / "data/render/definitions.parquet"))
    parser.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    emb = load_embeddings(args.embeddings)
    if "radical_prior" in emb.meta or emb.meta.get("radical_hint"):
        sys.exit(f"{args.embeddings} already carries a radical before each definition: use plain embeddings")
    defs = pq.read_table(args.definitions, columns=["codepoint", "radical", "split"]).to_pandas()
    row = {int(c): i for i, c in enumerate(emb.codepoints)}
    # each definition's own tokens, fp16 as stored: the same pooling as the embed stage and the pipeline
    states = [emb.hidden[i, emb.mask[i]].float().numpy() for i in range(len(emb.codepoints))]
    pooled = pooled_rows(states)
    train, test = defs[defs.split == "train"], defs[defs.split == "test"]
    x_train, y_train = pooled[[row[c] for c in train.codepoint]], train.radical.to_numpy()
    x_test, y_test = pooled[[row[c] for c in test.codepoint]], test.radical.to_numpy()
    rows = []
    for tau in args.taus:
        start = time.perf_counter()
        guess_test = fit_prior(x_train, y_train, tau).predict(x_test)
        guess_train = cross_fit(x_train, y_train, args.folds, tau)
        result = {"tau": tau, "seconds": round(time.perf_counter() - start, 1)}
        for name, guess, y in (("test", guess_test, y_test), ("train_crossfit", guess_train, y_train)):
            hits = guess == y
            thirds = by_third(hits, frequency_thirds(y, y_train))
            result[name] = {"all": round(float(hits.mean()), 4), **{t: round(thirds[t], 4) for t in THIRDS}}
        rows.append(result)
        print(json.dumps(result), flush=True)
    out = RESULTS / f"prior_tau-cpu{device_description()['cpu_count']}.json"
    out.write_text(json.dumps({"device": device_description(), "date": time.strftime("%Y-%m-%d"),
                               "command": "python " + " ".join(sys.argv), "folds": args.folds, "rows": rows},
                              indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
