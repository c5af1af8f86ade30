"""Bounds on the numbers and prompts a user types, defined once: the CLI, the pipeline API
(`GlyffuserPipeline.__call__`) and the playground all call `check_request` and `clean_prompt`.

- seeds: 0 <= seed and seed + n - 1 <= MAX_SEED (2^32 - 1, numpy's and torch's common range; a seed
  near 2^64 overflowed torch's generator);
- -n: at most MAX_PER_PROMPT samples per prompt and MAX_GLYPHS glyphs per call, because a call holds
  all its images in memory (100,000 glyphs took over 3 GB) and a grid row is n cells wide;
- steps: 1 .. the model's training timesteps (checked against the model in `process.check_sampling`);
- guidance: a finite number >= 0 (`params.check_guidance`, shared by params.yaml, the CLI, the pipeline
  and the playground);
- a prompt must hold a visible character: whitespace, control and zero-width characters alone ask for
  nothing.
"""

from __future__ import annotations

import unicodedata

from glyffuser.errors import GlyffuserError

MAX_SEED = 2**32 - 1
MAX_PER_PROMPT = 256
MAX_GLYPHS = 4096


def clean_prompt(prompt: object) -> str:
    """The prompt without surrounding whitespace; refuses non-text and prompts with no visible character."""
    if not isinstance(prompt, str):
        raise GlyffuserError(f"a prompt must be text, got {type(prompt).__name__}")
    prompt = prompt.strip()
    # Cc control, Cf format (zero-width space/joiners, BOM, direction marks), Z* separators, Cn/Co/Cs
    if not any(unicodedata.category(c)[0] not in "CZ" for c in prompt):
        raise GlyffuserError("an empty prompt asks for nothing (it holds no visible character): "
                             "for unconditional samples give any prompt with guidance 0")
    return prompt


def check_request(prompts: int, n: int, seed: int) -> None:
    """Refuse counts and seeds outside the documented bounds, in one sentence, before any work."""
    for name, value in (("the number of samples per prompt (-n)", n), ("the seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise GlyffuserError(f"{name} must be a whole number, got {value!r}")
    if not 1 <= n <= MAX_PER_PROMPT:
        raise GlyffuserError(f"the number of samples per prompt (-n) must be 1..{MAX_PER_PROMPT}, got {n}")
    if prompts * n > MAX_GLYPHS:
        raise GlyffuserError(f"{prompts} prompts × {n} samples = {prompts * n:,} glyphs; one call draws at most "
                             f"{MAX_GLYPHS:,} (split the prompts file)")
    if not 0 <= seed <= MAX_SEED - (n - 1):
        raise GlyffuserError(f"the seed must be 0..{MAX_SEED:,} with seed + n - 1 <= {MAX_SEED:,}, got {seed:,}")

