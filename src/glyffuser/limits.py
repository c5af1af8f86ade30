"""Bounds on the numbers and prompts a user types, defined once: the CLI, the pipeline API
(`GlyffuserPipeline.__call__`) and the playground all call `check_request` and `clean_prompt`.

- seeds: 0 <= seed and seed + n - 1 <= MAX_SEED (2^32 - 1, numpy's and torch's common range; a seed
  near 2^64 overflowed torch's generator);
- -n: at most MAX_PER_PROMPT samples per prompt and MAX_GLYPHS glyphs per call, because a call holds
  all its images in memory (100,000 glyphs took over 3 GB) and a grid row is n cells wide;
- work: at most MAX_GLYPH_STEPS glyphs × steps per call (the largest call at the default 20 steps), so
  that no single request (a served one above all) can hold the machine for an hour;
- steps: a whole number from 1 (here) to the model's training timesteps (`process.check_sampling`);
- guidance: a finite number from 0 to MAX_GUIDANCE (`params.check_guidance`, shared by params.yaml, the
  CLI, the pipeline and the playground): far past it every glyph is black;
- a prompt must hold a visible character (whitespace, control and zero-width characters alone ask for
  nothing) and at most MAX_PROMPT_CHARS characters (definitions are short; the encoder reads at most
  embed.max_length tokens of it anyway).
"""

from __future__ import annotations

import unicodedata

from glyffuser.errors import GlyffuserError

MAX_SEED = 2**32 - 1
MAX_PER_PROMPT = 256
MAX_GLYPHS = 4096
MAX_GLYPH_STEPS = MAX_GLYPHS * 20
MAX_PROMPT_CHARS = 200


def clean_prompt(prompt: object) -> str:
    """The prompt without surrounding whitespace; refuses non-text and prompts with no visible character."""
    if not isinstance(prompt, str):
        raise GlyffuserError(f"a prompt must be text, got {type(prompt).__name__}")
    prompt = prompt.strip()
    if len(prompt) > MAX_PROMPT_CHARS:
        raise GlyffuserError(f"the prompt has {len(prompt):,} characters; keep it to {MAX_PROMPT_CHARS} "
                             "(definitions are short)")
    # Cc control, Cf format (zero-width space/joiners, BOM, direction marks), Z* separators, Cn/Co/Cs
    if not any(unicodedata.category(c)[0] not in "CZ" for c in prompt):
        raise GlyffuserError("an empty prompt asks for nothing (it holds no visible character): "
                             "for unconditional samples give any prompt with guidance 0")
    return prompt


def check_request(prompts: int, n: int, seed: int, steps: int | None = None) -> None:
    """Refuse counts, seeds and work (with `steps`) outside the documented bounds, in one sentence, before any work."""
    for name, value in (("the number of samples per prompt (-n)", n), ("the seed", seed), ("steps", steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise GlyffuserError(f"{name} must be a whole number, got {value!r}")
    if steps is not None and steps < 1:  # negative steps would be negative work (a served request's budget)
        raise GlyffuserError(f"steps must be at least 1, got {steps}")
    if not 1 <= n <= MAX_PER_PROMPT:
        raise GlyffuserError(f"the number of samples per prompt (-n) must be 1..{MAX_PER_PROMPT}, got {n}")
    if prompts * n > MAX_GLYPHS:
        raise GlyffuserError(f"{prompts} prompts × {n} samples = {prompts * n:,} glyphs; one call draws at most "
                             f"{MAX_GLYPHS:,} (split the prompts file)")
    if not 0 <= seed <= MAX_SEED - (n - 1):
        last = "" if n == 1 else f" (the last seed, seed + n - 1, is {seed + n - 1:,})"
        raise GlyffuserError(f"the seed must be 0..{MAX_SEED:,} with seed + n - 1 <= {MAX_SEED:,}, got {seed:,}{last}")
    if steps is not None and prompts * n * steps > MAX_GLYPH_STEPS:
        raise GlyffuserError(f"{prompts * n:,} glyphs × {steps} steps = {prompts * n * steps:,} glyph-steps; one call "
                             f"draws at most {MAX_GLYPH_STEPS:,} (fewer glyphs or fewer steps)")

