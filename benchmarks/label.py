"""How much of a person's time `glyffuser label` costs beyond their own decisions, for 100 pairs.

    python benchmarks/label.py [--pairs 100] [--think 1.0 2.0]    # needs data/ from dvc repro
    # writes benchmarks/results/label-<device>.json

Starts the command's own server (`glyffuser.label.Labeller` + `serve`, port 0, the pipeline's model and
upsampler, a throw-away feedback table) and answers it the way the page's script does: GET /pair, wait the
person's decision time ("think", seconds), POST /answer, GET /pair again. For each think time it records
how long each pair took to appear after the previous answer (the wait a person sees: zero while the
background drawer keeps AHEAD pairs ready) and the whole session's minutes. A person's own decision time
cannot be measured by a script; the target of issue 44 (100 pairs in ≤ 5 min) needs, per pair, the
person's decision + the page's wait ≤ 3 s, and this benchmark measures the second term.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import ROOT, write_result


def call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def session(url: str, pairs: int, think: float) -> dict:
    """One person answering `pairs` pairs, `think` seconds each; the waits are what the page adds."""
    waits, choices = [], ["left", "right", "skip"]
    start = time.perf_counter()
    for i in range(pairs):
        asked = time.perf_counter()
        pair = call(url + "/pair")
        waits.append(time.perf_counter() - asked)
        time.sleep(think)
        call(url + "/answer", {"id": pair["id"], "choice": choices[i % 3]})
    total = time.perf_counter() - start
    return {"think_s": think, "pairs": pairs, "minutes": round(total / 60, 2),
            "page_wait_s_total": round(sum(waits), 1), "page_wait_s_median": round(statistics.median(waits), 3),
            "page_wait_s_max": round(max(waits), 2), "pairs_waited_over_0.1s": sum(w > 0.1 for w in waits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--think", type=float, nargs="+", default=[2.0, 1.0],
                        help="a person's decision seconds per pair, one session each (default: 2 and 1)")
    args = parser.parse_args()

    from glyffuser.diffusion.pipeline import choose_upsampler
    from glyffuser.label import AHEAD, Labeller, serve
    from glyffuser.params import load_params

    data = ROOT / "data"
    model = data / "align" / "model"  # what `glyffuser label` opens by default: the pipeline's final model
    results = {"model": str(model.relative_to(ROOT)), "ahead": AHEAD, "sessions": []}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        labeller = Labeller(load_params(ROOT / "params.yaml"), model, data / "render" / "definitions.parquet",
                            Path(tmp) / "feedback.sqlite", "benchmark", choose_upsampler(model, None, False), seed=0)
        server = serve(labeller, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        call(url + "/pair")  # the first pair: what a person waits for after opening the page
        results["first_pair_s"] = round(time.perf_counter() - start, 1)
        # the drawer's own rate with nobody answering: the time it takes to fill the queue up to AHEAD pairs
        drawn, queued = time.perf_counter(), labeller.ready.qsize()
        while labeller.ready.qsize() < AHEAD:
            time.sleep(0.05)
        results["draw_s_per_pair"] = round((time.perf_counter() - drawn) / max(AHEAD - queued, 1), 2)
        for think in args.think:
            results["sessions"].append(session(url, args.pairs, think))
            print(json.dumps(results["sessions"][-1]))
        server.shutdown()
        labeller.close()
    write_result("label", results)


if __name__ == "__main__":
    main()
