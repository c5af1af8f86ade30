"""`glyffuser <command>`: the one entry point of the pipeline; DVC stages call it (see dvc.yaml).

Each pipeline command reads params.yaml (or --params), writes its outputs atomically and prints a
short JSON summary. Failures caused by input print one line `glyffuser: error: ...` and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from glyffuser.errors import GlyffuserError
from glyffuser.params import DEFAULT_PARAMS, load_params


def _cmd_sources(args: argparse.Namespace) -> dict:
    from dataclasses import asdict

    from glyffuser.sources import collect_sources

    return asdict(collect_sources(load_params(args.params).sources, args.out))


def _cmd_render(args: argparse.Namespace) -> dict:
    from glyffuser.render import RenderOutputs, run_render

    return run_render(load_params(args.params), args.sources, RenderOutputs.under(args.out))


def _cmd_embed(args: argparse.Namespace) -> dict:
    from glyffuser.embed import run_embed

    return run_embed(load_params(args.params).embed, args.definitions, args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glyffuser", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="parameters file (default: %(default)s)")
        p.set_defaults(func=func)
        return p

    p = command("sources", _cmd_sources, "copy the font and Unihan files into the repository")
    p.add_argument("--out", type=Path, default=Path("data/sources"))

    p = command("render", _cmd_render, "render glyphs and build the definitions and glyphs tables")
    p.add_argument("--sources", type=Path, default=Path("data/sources"))
    p.add_argument("--out", type=Path, default=Path("data/render"))

    p = command("embed", _cmd_embed, "encode every definition with the text encoder into Parquet")
    p.add_argument("--definitions", type=Path, default=Path("data/render/definitions.parquet"))
    p.add_argument("--out", type=Path, default=Path("data/embed/embeddings.parquet"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = args.func(args)
    except GlyffuserError as err:
        print(f"glyffuser: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("glyffuser: interrupted", file=sys.stderr)
        return 130
    if summary is not None:
        print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
