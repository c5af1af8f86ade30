"""`glyffuser label`: a keyboard-driven page that asks people which of two glyphs is the better one (issue 44).

    glyffuser label                    # http://127.0.0.1:7861 on the pipeline's model; answers in data/feedback/
    glyffuser label --labeller ana     # who answers, recorded with each row

The page shows one prompt, a training definition chosen at random (never a test-split one: what people say may be
trained on), and two glyphs the model drew for it from two seeds. ← or 1: the left one is better; → or 2: the right
one; ↓, space or 0: skip (neither, or cannot tell). Each answer is appended to the feedback table
(glyffuser/feedback.py) before the next pair is shown, with both images, seeds, sampler settings and the weights'
sha256. A background thread keeps a few pairs drawn ahead, so answering never waits on the model. Plain HTTP from
the standard library on 127.0.0.1, one page of HTML and script: nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import getpass
import json
import queue
import random
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from glyffuser.artifacts.images import to_png
from glyffuser.artifacts.tables import read_table
from glyffuser.command import inputs, run_command
from glyffuser.errors import GlyffuserError
from glyffuser.feedback import CHOICES, FEEDBACK, Answer, connect, record
from glyffuser.params import Params

AHEAD = 4  # pairs drawn before they are asked for
SHOWN_PX = 256  # each glyph's side in the page (upscaled by the browser, pixelated)
MAX_BODY = 4096  # bytes of an answer's JSON


@dataclass
class Pair:
    id: str
    prompt: str
    codepoint: int
    seeds: tuple[int, int]
    pngs: tuple[bytes, bytes]


class Labeller:
    """Draws pairs ahead in a thread and records answers; what the page's two requests call."""

    def __init__(self, params: Params, model: Path, definitions: Path, feedback: Path, labeller: str,
                 upsampler: Path | bool | None = None, seed: int | None = None):
        from glyffuser.diffusion.pipeline import GlyffuserPipeline

        table, _ = read_table(definitions, columns=["codepoint", "definition", "split"])
        rows = table.to_pandas()
        rows = rows[rows.split == "train"]
        if rows.empty:
            raise GlyffuserError(f"{definitions} has no training definitions to ask about")
        self.prompts = list(zip(rows.codepoint.astype(int), rows.definition))
        self.pipe = GlyffuserPipeline.from_pretrained(model, upsampler=upsampler)
        self.model_sha256 = self.pipe.info.get("weights_sha256") or "unknown"
        s = params.sample
        self.steps, self.guidance, self.scheduler = s.steps, float(s.guidance), s.scheduler
        self.labeller = labeller
        self.feedback = feedback
        self.con = connect(feedback)  # created now: a bad --feedback path fails before the page opens
        self.lock = threading.Lock()  # one connection, used by the request threads in turn
        self.rng = random.Random(seed)
        self.ready: queue.Queue[Pair] = queue.Queue(maxsize=AHEAD)
        self.pending: dict[str, Pair] = {}  # shown, not yet answered
        self.answered = 0
        self.error: str | None = None
        self.stopping = threading.Event()
        self.drawer = threading.Thread(target=self._draw_ahead, daemon=True)
        self.drawer.start()

    def close(self) -> None:
        """Stop drawing ahead (after the pair being drawn) and close the table."""
        self.stopping.set()
        self.drawer.join()
        self.con.close()

    def _draw_ahead(self) -> None:
        try:
            while not self.stopping.is_set():
                codepoint, prompt = self.rng.choice(self.prompts)
                seed = self.rng.randrange(0, 2**31 - 2)
                left, right = self.pipe([prompt], num_images=2, steps=self.steps, guidance=self.guidance,
                                        scheduler=self.scheduler, seed=seed)  # seeds seed and seed + 1
                pair = Pair(uuid.uuid4().hex, prompt, codepoint, (seed, seed + 1), (to_png(left), to_png(right)))
                while not self.stopping.is_set():
                    try:
                        self.ready.put(pair, timeout=0.2)
                        break
                    except queue.Full:
                        pass
        except Exception as err:  # shown in the page instead of a silent stall
            self.error = f"drawing stopped: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"

    def next_pair(self, timeout: float = 120) -> dict:
        if self.error:
            raise GlyffuserError(self.error)
        try:
            pair = self.ready.get(timeout=timeout)
        except queue.Empty:
            raise GlyffuserError(self.error or "no pair was drawn in time") from None
        with self.lock:
            self.pending[pair.id] = pair
        return {"id": pair.id, "prompt": pair.prompt, "answered": self.answered,
                "left": "data:image/png;base64," + base64.b64encode(pair.pngs[0]).decode(),
                "right": "data:image/png;base64," + base64.b64encode(pair.pngs[1]).decode()}

    def answer(self, pair_id: str, choice: str) -> dict:
        if choice not in CHOICES:
            raise GlyffuserError(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}")
        with self.lock:
            pair = self.pending.pop(pair_id, None)
            if pair is None:
                raise GlyffuserError("no such pair shown (answered already, or from before a restart)")
            record(self.con, Answer(pair.prompt, pair.codepoint, choice, pair.seeds[0], pair.seeds[1], self.steps,
                                    self.guidance, self.scheduler, self.model_sha256, pair.pngs[0], pair.pngs[1],
                                    self.labeller))
            self.answered += 1
            return {"answered": self.answered}


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>glyffuser label</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 760px; color: #222; }
h1 { font-size: 1.1rem; font-weight: 600; color: #555; }
#prompt { font-size: 1.6rem; margin: 1rem 0 1.5rem; min-height: 2.2rem; }
.pair { display: flex; gap: 2rem; justify-content: center; }
figure { margin: 0; text-align: center; }
img { width: SHOWNpx; height: SHOWNpx; image-rendering: pixelated; border: 3px solid #ddd; background: #fff; }
img.chosen { border-color: #2a7; }
figcaption, #status { color: #666; margin-top: .5rem; }
kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 .3rem; background: #f6f6f6; }
#error { color: #b00; }
</style></head><body>
<h1>glyffuser label — which glyph fits the definition better, as a plausible character?</h1>
<div id="prompt">drawing the first pair…</div>
<div class="pair">
  <figure><img id="left" alt="left glyph"><figcaption><kbd>←</kbd> or <kbd>1</kbd> left</figcaption></figure>
  <figure><img id="right" alt="right glyph"><figcaption><kbd>→</kbd> or <kbd>2</kbd> right</figcaption></figure>
</div>
<p id="status"><kbd>↓</kbd>, <kbd>space</kbd> or <kbd>0</kbd> skip · answered: <span id="count">0</span></p>
<p id="error"></p>
<script>
let pair = null, busy = false;
async function next() {
  const r = await fetch("/pair");
  const body = await r.json();
  if (!r.ok) { document.getElementById("error").textContent = body.error; return; }
  pair = body;
  document.getElementById("prompt").textContent = "“" + pair.prompt + "”";
  for (const side of ["left", "right"]) {
    const img = document.getElementById(side);
    img.src = pair[side]; img.classList.remove("chosen");
  }
  document.getElementById("count").textContent = pair.answered;
  busy = false;
}
async function answer(choice) {
  if (!pair || busy) return;
  busy = true;
  if (choice !== "skip") document.getElementById(choice).classList.add("chosen");
  const r = await fetch("/answer", {method: "POST", headers: {"Content-Type": "application/json"},
                                    body: JSON.stringify({id: pair.id, choice: choice})});
  const body = await r.json();
  if (!r.ok) { document.getElementById("error").textContent = body.error; busy = false; return; }
  document.getElementById("count").textContent = body.answered;
  next();
}
const keys = {ArrowLeft: "left", "1": "left", ArrowRight: "right", "2": "right", ArrowDown: "skip", " ": "skip", "0": "skip"};
document.addEventListener("keydown", e => { if (keys[e.key]) { e.preventDefault(); answer(keys[e.key]); } });
next();
</script></body></html>
""".replace("SHOWN", str(SHOWN_PX))


def make_handler(labeller: Labeller):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # no request log on the terminal
            pass

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: dict) -> None:
            self._send(status, json.dumps(data).encode(), "application/json")

        def do_GET(self):
            if self.path == "/":
                self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            elif self.path == "/pair":
                try:
                    self._json(200, labeller.next_pair())
                except GlyffuserError as err:
                    self._json(503, {"error": str(err)})
            else:
                self._json(404, {"error": f"no page {self.path}"})

        def do_POST(self):
            if self.path != "/answer":
                return self._json(404, {"error": f"no page {self.path}"})
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= MAX_BODY:
                    raise GlyffuserError(f"an answer is a JSON object of at most {MAX_BODY} bytes")
                body = json.loads(self.rfile.read(length))
                if not isinstance(body, dict) or not isinstance(body.get("id"), str):
                    raise GlyffuserError('an answer is {"id": "...", "choice": "left" | "right" | "skip"}')
                self._json(200, labeller.answer(body["id"], str(body.get("choice"))))
            except (GlyffuserError, ValueError) as err:
                self._json(400, {"error": str(err)})
            except Exception as err:  # the page shows it; the server keeps serving
                self._json(500, {"error": f"the answer was not recorded: {type(err).__name__}: {err}"})

    return Handler


def serve(labeller: Labeller, port: int) -> ThreadingHTTPServer:
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(labeller))
    except OSError as err:
        raise GlyffuserError(f"port {port} on 127.0.0.1 is not free ({(err.strerror or str(err)).lower()}): stop what "
                             "uses it, or pass --port 0 for any free port") from None
    server.daemon_threads = True
    return server


# `glyffuser label`
def add_arguments(p) -> None:
    inputs(p, "model", "definitions")
    p.add_argument("--feedback", type=Path, default=FEEDBACK, help="the feedback table answers go to (default: %(default)s)")
    p.add_argument("--labeller", default=None, help="your name, recorded with each answer (default: the user name)")
    p.add_argument("--port", type=int, default=7861, help="port on 127.0.0.1 (default: %(default)s; 0: a free one)")
    p.add_argument("--base", action="store_true", help="show the diffusion model's drafts, not upsampled")


def command(args) -> None:
    from glyffuser.diffusion.pipeline import choose_upsampler
    from glyffuser.params import load_params

    labeller = Labeller(load_params(args.params), args.model, args.definitions, args.feedback,
                        args.labeller or getpass.getuser(), choose_upsampler(args.model, None, args.base))
    server = serve(labeller, args.port)
    print(f"glyffuser label: http://127.0.0.1:{server.server_address[1]}  (answers go to {args.feedback}; "
          "Ctrl+C stops it)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        labeller.close()
        print(f"glyffuser label: {labeller.answered} answers recorded in {args.feedback}", flush=True)


def main(argv: list[str] | None = None) -> int:
    return run_command("label", __doc__.splitlines()[0], add_arguments, command, argv)
