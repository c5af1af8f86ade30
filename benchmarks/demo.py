"""How fast `glyffuser demo` starts and draws, through the same HTTP API a browser uses.

    python benchmarks/demo.py [--repeats 3]    # needs data/ from dvc repro; writes benchmarks/results/demo-<device>.json

Times the app's start (`serve`: model, classifier, training glyphs and map loaded, server up), then
Generate through Gradio's client for 4 and 16 glyphs at the default 20 steps, with its live frames
(one gallery update per step) and readings, against the pipeline's own sampler on the same prompts
without frames or readings (`GlyffuserPipeline.sample`): the difference is what the page costs.
"""

from __future__ import annotations

import argparse
import time

from common import ROOT, write_result

PROMPT = "a kind of fish"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()  # imports included: Gradio's is part of the start a user waits for
    from gradio_client import Client

    from glyffuser.demo import DemoPaths, serve
    from glyffuser.params import load_params

    params = load_params(ROOT / "params.yaml")
    s = params.sample
    data = ROOT / "data"
    paths = DemoPaths(data / "model", data / "classifier", data / "render" / "definitions.parquet",
                      data / "render" / "glyphs.parquet", data / "umap" / "points.parquet",
                      data / "evaluate" / "metrics.json")
    app, url = serve(params, paths, 0, block=False)
    start_s = time.perf_counter() - start
    client = Client(url, verbose=False)
    from glyffuser.diffusion.pipeline import GlyffuserPipeline

    pipe = GlyffuserPipeline.from_pretrained(paths.model, bf16=s.autocast())
    text, mask, empty = pipe.encode([PROMPT])
    rows = []
    for count in (4, 16):
        client.predict(PROMPT, count, s.steps, s.guidance, 0, s.scheduler, api_name="/generate")  # warm-up
        page, bare = [], []
        for r in range(args.repeats):
            t = time.perf_counter()
            client.predict(PROMPT, count, s.steps, s.guidance, r, s.scheduler, api_name="/generate")
            page.append(time.perf_counter() - t)
            t = time.perf_counter()
            pipe.sample(text[[0] * count], mask[[0] * count], empty, list(range(count)), s.steps, s.guidance, s.scheduler)
            bare.append(time.perf_counter() - t)
        rows.append({"glyphs": count, "steps": s.steps, "page_seconds": min(page), "sampler_seconds": min(bare),
                     "page_glyphs_per_s": count / min(page), "sampler_glyphs_per_s": count / min(bare)})
        print(rows[-1])
    app.close()
    write_result("demo", {"start_seconds": round(start_s, 2), "prompt": PROMPT, "guidance": s.guidance,
                          "scheduler": s.scheduler, "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
