"""Profiles: named variants of params.yaml that hold only what differs from it (profiles/NAME.yaml).

params.yaml stays the one documented default; a profile is applied the way DVC applies any variant, as
an experiment: `glyffuser profile smoke` runs `dvc exp run -n smoke -S render.image_size=64 -S ...`, so the
run shows up in `dvc exp show` beside the default and no tracked file is edited by hand. A profile cannot
drift from the default: a key it does not set is the default's, and a key the default lacks is an error.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import yaml

from glyffuser.command import run_command
from glyffuser.errors import GlyffuserError
from glyffuser.params import DEFAULT_PARAMS, Params, load_params, with_overrides

PROFILES_DIR = Path("profiles")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# a DVC experiment name (a git ref part): no leading '-' (dvc would read it as an option), no '/', spaces, ...
_EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def profile_path(name: str, root: Path = Path(".")) -> Path:
    """profiles/NAME.yaml under `root`, or NAME itself when it is a path to a .yaml file."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else root / PROFILES_DIR / f"{name}.yaml"
    if not _EXPERIMENT_NAME.match(path.stem) or path.stem.endswith((".", ".lock")):
        raise GlyffuserError(f"profile {name!r}: {path.stem!r} cannot name a DVC experiment (letters, digits, '.', "
                             "'_' and '-', starting with a letter or digit)")
    if not path.is_file():
        known = sorted(p.stem for p in (root / PROFILES_DIR).glob("*.yaml"))
        raise GlyffuserError(f"no profile {name!r} ({path} does not exist); known profiles: {', '.join(known) or 'none'}")
    return path


def _flatten(node: dict, prefix: str, path: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in node.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise GlyffuserError(f"{path}: {prefix}{key!r} is not a parameter name (a profile sets named keys only)")
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}.", path))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_profile(name: str, root: Path = Path(".")) -> dict[str, object]:
    """The profile's keys, dotted ({"train.epochs": 4, ...}), in file order."""
    path = profile_path(name, root)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise GlyffuserError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict) or not data:
        raise GlyffuserError(f"{path}: expected a mapping of parameter groups with the keys that differ from params.yaml")
    return _flatten(data, "", path)


def with_profile(name: str, params: str | Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Params:
    """params.yaml with the profile's keys applied, validated (unknown keys and bad values fail here)."""
    overrides = read_profile(name, root)
    try:
        return with_overrides(load_params(params), overrides)
    except GlyffuserError as err:
        raise GlyffuserError(f"profile {name}: {str(err).removeprefix('<overrides>: ')}") from None


def override_value(value: object) -> str:
    """A YAML value in the override grammar `dvc exp run -S` parses (Hydra's): strings quoted, lists in brackets.
    In a quoted string Hydra reads a backslash as an escape only before a quote (or before the closing quote),
    so only those are doubled: C:\\path stays C:\\path. `${...}` would be interpolated: refused."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if "${" in value:
            raise GlyffuserError(f"a profile value may not hold '${{' (dvc exp run would interpolate it), got {value!r}")
        escaped = re.sub(r'(\\*)("|$)', lambda m: m[1] * 2 + ('\\"' if m[2] else ""), value)
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    raise GlyffuserError(f"a profile value must be a number, text, true/false, null or a list, got {value!r}")


def check_round_trip(overrides: dict[str, object], params: str | Path = DEFAULT_PARAMS) -> None:
    """Each -S value as DVC's own parser writes it into params.yaml equals the validated value, or one error line."""
    import tempfile

    from dvc.utils.hydra import apply_overrides

    args = [f"{k}={override_value(v)}" for k, v in overrides.items()]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "params.yaml"
        copy.write_text(Path(params).read_text(encoding="utf-8"), encoding="utf-8")
        try:
            apply_overrides(copy, args)
        except Exception as err:  # Hydra's grammar errors, whatever their type
            raise GlyffuserError(f"dvc exp run -S cannot take these values: {str(err).splitlines()[0]}") from None
        written = yaml.safe_load(copy.read_text(encoding="utf-8"))
    for key, value in overrides.items():
        node = written
        for part in key.split("."):
            node = node[part]
        if node != value or type(node) is not type(value) and not isinstance(value, (int, float)):
            raise GlyffuserError(f"{key}: dvc exp run -S would write {node!r} for the validated value {value!r}")


def exp_run_command(name: str, params: str | Path = DEFAULT_PARAMS, root: Path = Path("."),
                    extra: list[str] | None = None) -> list[str]:
    """`dvc exp run -n NAME -S key=value ...` for the profile, after validating the merged params."""
    with_profile(name, params, root)
    values = read_profile(name, root)
    check_round_trip(values, params)
    overrides = [arg for key, value in values.items() for arg in ("-S", f"{key}={override_value(value)}")]
    return ["dvc", "exp", "run", "-n", Path(name).stem, *overrides, *(extra or [])]


def write_profile_params(name: str, out: Path, params: str | Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Path:
    """A copy of params.yaml at `out` with the profile applied by DVC's own -S code (comments kept), exactly
    what `dvc exp run` writes into the workspace; for throwaway copies such as the tests' repositories."""
    from dvc.utils.hydra import apply_overrides

    command = exp_run_command(name, params, root)
    out = Path(out)
    out.write_text(Path(params).read_text(encoding="utf-8"), encoding="utf-8")
    apply_overrides(out, [command[i + 1] for i, arg in enumerate(command) if arg == "-S"])
    return out


def run_profile(name: str, params: str | Path = DEFAULT_PARAMS, extra: list[str] | None = None,
                print_only: bool = False) -> dict | None:
    command = exp_run_command(name, params, extra=extra)
    if print_only:
        print(shlex.join(command))
        return None
    print(f"glyffuser: {shlex.join(command)}", flush=True)
    result = subprocess.run(command)
    if result.returncode != 0:
        raise GlyffuserError(f"dvc exp run for profile {name} failed (exit {result.returncode}); see above")
    return {"profile": name, "overrides": len(command[5:]) // 2}


# `glyffuser profile NAME`
def add_arguments(p) -> None:
    import argparse

    p.add_argument("name", help="smoke, gpu, or a path to a .yaml file of overrides")
    p.add_argument("--print", action="store_true", help="print the dvc exp run command instead of running it")
    p.add_argument("dvc_args", nargs=argparse.REMAINDER, help="more `dvc exp run` arguments, after -- (e.g. -- -f --temp)")


def command(args) -> dict | None:
    # argparse hands everything after NAME over as is: --print there is ours, the rest after -- is dvc's
    ours, dvc_args = args.dvc_args, []
    if "--" in ours:
        ours, dvc_args = ours[: ours.index("--")], ours[ours.index("--") + 1:]
    if unknown := [a for a in ours if a != "--print"]:
        raise GlyffuserError(f"unknown arguments {' '.join(unknown)}: put dvc exp run's own after --")
    return run_profile(args.name, args.params, dvc_args, print_only=args.print or "--print" in ours)


def main(argv: list[str] | None = None) -> int:
    return run_command("profile", "run a profile (profiles/NAME.yaml: the keys that differ from params.yaml) as a DVC "
                       "experiment: dvc exp run -n NAME -S key=value ...", add_arguments, command, argv)
