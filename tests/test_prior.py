"""The text->radical prior (issue 42): a head on the pooled text embedding, cross-fitted, logit-adjusted; the embed
stage encodes each definition after its guess, the model folder carries the head, and the pipeline guesses typed
prompts the same way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glyffuser.artifacts.embeddings import load_embeddings
from glyffuser.artifacts.tables import read_table
from glyffuser.diffusion.prior import PRIOR_FILE, cross_fit, fit_prior, from_meta, hint, pooled_rows
from glyffuser.errors import GlyffuserError
from glyffuser.params import with_overrides


def clusters(counts: dict[int, int], dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Noisy Gaussian clusters, one per radical, `counts[r]` points each."""
    gen = torch.Generator().manual_seed(seed)
    centres = {r: torch.randn(dim, generator=gen) for r in counts}
    x = torch.cat([centres[r] + 1.2 * torch.randn(n, dim, generator=gen) for r, n in counts.items()])
    y = np.concatenate([[r] * n for r, n in counts.items()])
    return x, y


def test_cross_fitting_never_lets_a_definition_see_its_own_label():
    """A radical with one training definition cannot be guessed for it out of fold, while the head fit on all does."""
    x, y = clusters({1: 40, 2: 40, 3: 40})
    x = torch.cat([x, 8 * torch.ones(1, 16)])  # one far-off definition of radical 9, its only one
    y = np.concatenate([y, [9]])
    assert fit_prior(x, y, tau=0).predict(x[-1:])[0] == 9
    out_of_fold = cross_fit(x, y, folds=4, tau=0)
    assert out_of_fold[-1] != 9
    assert (out_of_fold[:-1] == y[:-1]).mean() > 0.8  # the clusters themselves are read out of fold


def test_logit_adjustment_names_the_rare_radical_more_often():
    x, y = clusters({1: 400, 2: 12}, seed=1)
    test_x, test_y = clusters({1: 400, 2: 400}, seed=2)
    recall = {tau: (fit_prior(x, y, tau).predict(test_x)[test_y == 2] == 2).mean() for tau in (0.0, 1.0)}
    assert recall[1.0] > recall[0.0] + 0.1


def test_embed_encodes_each_definition_after_its_guess(params, rendered, tmp_path):
    from glyffuser.stages.embed import radical_names, run_embed

    out, _ = rendered
    path = tmp_path / "prior.parquet"
    # every definition after its cross-fitted guess (share 0): the trust lever, the default's share 1, is checked below
    summary = run_embed(with_overrides(params, {"embed.radical_prior": True, "embed.prior_true_share": 0.0}).embed,
                        out.definitions, path)
    table, meta = read_table(path)
    defs, _ = read_table(out.definitions)
    texts, split = defs.column("definition").to_pylist(), np.array(defs.column("split").to_pylist())
    names = radical_names(defs.column("codepoint").to_pylist(), texts)
    hinted = table.column("text").to_pylist()[1:]
    guesses = table.column("guessed_radical").to_pylist()[1:]
    assert hinted == [hint(names[g]) + t for g, t in zip(guesses, texts)]
    radicals = np.array(defs.column("radical").to_pylist())
    # the small set is fish, bird and water characters: the guesses read them far above chance
    assert 0.5 < summary["prior_accuracy_train"] and summary["prior_accuracy_train"] == pytest.approx(
        (np.array(guesses) == radicals)[split == "train"].mean())
    prior, stored_names = from_meta(meta["radical_prior"], str(path))
    assert stored_names[195] == "fish" and meta["radical_prior"]["tau"] == params.embed.prior_tau
    # held-out definitions get the stored head's guess, from their plain text's fp16 states as the pipeline pools them
    from glyffuser.diffusion.encoders import TextEncoder, resolve_encoder
    encoder = TextEncoder(resolve_encoder(params.embed.encoder), params.embed.max_length)
    held = [i for i in range(len(texts)) if split[i] != "train"]
    states, _ = encoder.encode([texts[i] for i in held])
    assert prior.predict(pooled_rows(states)).tolist() == [guesses[i] for i in held]
    assert load_embeddings(path).sense is not None
    with pytest.raises(GlyffuserError, match="turn one off"):
        run_embed(with_overrides(params, {"embed.radical_prior": True, "embed.radical_hint": True}).embed,
                  out.definitions, tmp_path / "both.parquet")
    # the trust lever: trained on the truth, sampled with the guess (held-out rows keep the stored head's guess)
    told = tmp_path / "told.parquet"
    run_embed(with_overrides(params, {"embed.radical_prior": True, "embed.prior_true_share": 1.0}).embed,
              out.definitions, told)
    truth = read_table(told)[0].column("guessed_radical").to_pylist()[1:]
    assert all(truth[i] == radicals[i] for i in range(len(texts)) if split[i] == "train")
    assert [truth[i] for i in held] == [guesses[i] for i in held]


def test_a_model_trained_on_guesses_carries_its_head_and_guesses_typed_prompts(params, rendered, tmp_path):
    """Train on the prior's embeddings: the model folder holds the head, the pipeline encodes a typed prompt after its
    guess (the same tokens as encoding "radical fish: a kind of fish" directly), and refuses a folder without it."""
    from glyffuser.diffusion.pipeline import GlyffuserPipeline
    from glyffuser.stages.embed import run_embed
    from glyffuser.stages.train import run_train
    from tests.conftest import TINY_TRAIN, train_paths

    out, _ = rendered
    p = with_overrides(params, {**TINY_TRAIN, "embed.radical_prior": True, "train.epochs": 1})
    emb = tmp_path / "prior.parquet"
    run_embed(p.embed, out.definitions, emb)
    paths = train_paths(tmp_path / "run", rendered, emb)
    run_train(p, paths, track=False)
    assert (paths.model / PRIOR_FILE).is_file()
    pipe = GlyffuserPipeline.from_pretrained(paths.model)
    (guess,) = pipe.guess_hints(["a kind of fish"])
    assert guess == "radical fish: "
    text, mask, _ = pipe.encode(["a kind of fish"])
    states, _ = pipe.encoder.encode(["radical fish: a kind of fish"])
    assert mask.sum() == len(states[0])
    np.testing.assert_allclose(text[0, : len(states[0])].float().numpy(), states[0], atol=2e-2)
    saved = tmp_path / "saved"
    pipe.save_pretrained(saved)
    assert GlyffuserPipeline.from_pretrained(saved).guess_hints(["a kind of fish"]) == [guess]
    (saved / PRIOR_FILE).unlink()
    with pytest.raises(GlyffuserError, match=PRIOR_FILE):
        GlyffuserPipeline.from_pretrained(saved)


def test_evaluate_reports_how_often_the_guess_is_right(evaluated, rendered, tmp_path):
    """With embeddings made by embed.radical_prior, evaluate reports the guess's accuracy on the held-out characters
    (prior_heldout, per third): the part of the tail the UNet is told."""
    from glyffuser.stages.embed import run_embed
    from glyffuser.stages.evaluate import ScorePaths, run_score

    p, paths, _, _ = evaluated
    out, _ = rendered
    emb = tmp_path / "prior.parquet"
    run_embed(with_overrides(p, {"embed.radical_prior": True}).embed, out.definitions, emb)
    metrics = run_score(p, ScorePaths(paths.drawn, paths.classifier, paths.definitions, paths.glyphs, emb,
                                      tmp_path / "eval"), track=False)
    table, _ = read_table(emb)
    guessed = dict(zip(table.column("codepoint").to_pylist(), table.column("guessed_radical").to_pylist()))
    samples, _ = read_table(tmp_path / "eval" / "samples.parquet")
    held = samples.to_pandas().query("kind == 'heldout'").drop_duplicates("target_codepoint")
    right = [guessed[c] == r for c, r in zip(held.target_codepoint, held.target_radical)]
    assert metrics["prior_heldout"] == pytest.approx(np.mean(right))
    assert {"prior_heldout_commonest", "prior_heldout_middle", "prior_heldout_rarest"} <= set(metrics)
