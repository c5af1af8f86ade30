from pathlib import Path

import pytest

from glyffuser.errors import GlyffuserError
from glyffuser.params import load_params, parse_params, parse_range, with_overrides
from glyffuser.profiles import override_value, read_profile, with_profile, write_profile_params

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_and_profiles_validate():
    params = load_params(REPO / "params.yaml")
    assert params.render.image_size == 128
    assert params.render.codepoint_ranges() == [(0x3400, 0x4DBF), (0x4E00, 0x9FFF)]
    profiles = sorted(p.stem for p in (REPO / "profiles").glob("*.yaml"))
    assert profiles == ["gpu", "smoke"]
    for name in profiles:
        merged = with_profile(name, REPO / "params.yaml", REPO)  # unknown keys or bad values fail here
        assert merged != params


@pytest.mark.parametrize("name", ["smoke", "gpu"])
def test_profiles_hold_only_differences_and_dvc_applies_them_as_written(name, tmp_path):
    """The -S overrides `glyffuser profile` hands to `dvc exp run`, parsed by DVC's own code, give exactly
    the validated merge; every key the profile sets differs from the default (no stale copies)."""
    default = load_params(REPO / "params.yaml").model_dump()
    overrides = read_profile(name, REPO)
    for key, value in overrides.items():
        group, *rest = key.split(".")
        node = default[group]
        for part in rest:
            node = node[part]
        assert node != value, f"profiles/{name}.yaml repeats the default of {key}"
    written = write_profile_params(name, tmp_path / "params.yaml", REPO / "params.yaml", REPO)
    assert load_params(written) == with_profile(name, REPO / "params.yaml", REPO)
    assert "# " in written.read_text()  # params.yaml's documentation survives


def test_profile_with_an_unknown_key_is_one_clear_error(tmp_path):
    (tmp_path / "typo.yaml").write_text("train:\n  epoch: 3\n")
    with pytest.raises(GlyffuserError, match="profile .*typo.yaml: unknown parameter 'train.epoch'"):
        with_profile(str(tmp_path / "typo.yaml"), REPO / "params.yaml", REPO)
    assert override_value(["a kind of fish", 'say "x"', 1.5, None, True]) == \
        '["a kind of fish","say \\"x\\"",1.5,null,true]'


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("render.image_size", -1, "render.image_size"),
        ("render.margin", 0.7, "render.margin"),
        ("render.ranges", ["U+9FFF-U+4E00"], "empty"),
        ("render.ranges", ["4E00..9FFF"], "not a range"),
        ("render.ranges", [], "at least one range"),
        ("render.split.test", 0.96, "train split"),
        ("embed.max_length", 0, "embed.max_length"),
        ("base.seed", -1, "base.seed: Input should be greater than or equal to 0"),
        ("base.seed", 2**32, "base.seed: Input should be less than 4294967296"),
        ("sample.guidance", float("nan"), "sample.guidance: guidance must be a number from 0 to 100, got nan"),
        ("train.eval_guidance", float("inf"), "train.eval_guidance: guidance must be a number from 0 to 100, got inf"),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    base = load_params(REPO / "params.yaml")
    data = base.model_dump()
    with pytest.raises(GlyffuserError, match=message):
        with_overrides(base, {key: value})
    assert data == base.model_dump()  # the original is untouched


def test_unknown_and_missing_keys(tmp_path):
    data = load_params(REPO / "params.yaml").model_dump()
    data["render"]["imagesize"] = 64
    with pytest.raises(GlyffuserError, match="render.imagesize"):
        parse_params(data)
    del data["render"]["imagesize"]
    del data["embed"]["encoder"]
    with pytest.raises(GlyffuserError, match="embed.encoder: Field required"):
        parse_params(data)


def test_unreadable_files(tmp_path):
    with pytest.raises(GlyffuserError, match="cannot read parameters file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("render: [unclosed\n")
    with pytest.raises(GlyffuserError, match="not valid YAML"):
        load_params(bad)


def test_parse_range():
    assert parse_range("U+3400-U+4DBF") == (0x3400, 0x4DBF)
    assert parse_range("U+20000-U+2A6DF") == (0x20000, 0x2A6DF)


@pytest.mark.parametrize("key", ["nosuch.seed", "render.nosuch.validation", "base.seed.deeper"])
def test_unknown_override_key_is_one_clear_error(key):
    with pytest.raises(GlyffuserError, match=f"unknown parameter '{key}'"):
        with_overrides(load_params(REPO / "params.yaml"), {key: 1})


def test_largest_seed_trains_its_generators():
    from glyffuser.diffusion.training import epoch_permutation as _epoch_permutation
    from glyffuser.diffusion.training import step_generator as _step_generator

    seed = 2**32 - 1  # derived seeds overflow 64 bits unless folded
    assert _step_generator(seed, 3, 10**6).initial_seed() < 2**63
    assert len(_epoch_permutation(seed, 99, 10)) == 10
    assert _step_generator(0, 0, 7).initial_seed() == 7  # small seeds are unchanged by the folding


def test_the_cascade_is_checked_before_any_stage_runs():
    """Issue 40: the upsampler stage runs after training, so renders too small for it, or a jitter tile that does not
    divide the drafts, used to fail only after the whole training (or with a tensor-size traceback)."""
    gpu = with_profile("gpu", REPO / "params.yaml", REPO)
    assert gpu.render.image_size >= 2 * gpu.train.resolution and gpu.train.resolution % gpu.upsampler.block == 0
    with pytest.raises(GlyffuserError, match=r"render.image_size is 128, but the upsampler stage learns 128 -> 256 px"):
        with_overrides(gpu, {"render.image_size": 128})  # the GPU profile as it shipped before
    for overrides in ({"upsampler.block": 3}, {"train.resolution": 32, "upsampler.block": 64}):
        with pytest.raises(GlyffuserError, match="upsampler.block .* must divide train.resolution"):
            with_overrides(load_params(REPO / "params.yaml"), overrides)


@pytest.mark.parametrize("key", ["train.epochs", "train.weight_decay", "upsampler.degradation",
                                 "umap.min_dist", "train.min_snr_gamma"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_no_number_in_params_is_infinite_or_nan(key, value, tmp_path):
    """`train.epochs: .inf` passed `gt=0` and failed 28 s later with an OverflowError traceback."""
    import re

    text = (REPO / "params.yaml").read_text()
    group, leaf = key.split(".")
    start = text.index(f"\n{group}:\n")
    yaml_value = ".inf" if value == float("inf") else ".nan"
    (tmp_path / "params.yaml").write_text(text[:start] + re.sub(rf"(\n  {leaf}: )\S+", rf"\g<1>{yaml_value}",
                                                                 text[start:], count=1))
    with pytest.raises(GlyffuserError, match=f"{key}: Input should be a finite number"):
        load_params(tmp_path / "params.yaml")
