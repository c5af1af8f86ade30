"""Parquet tables shared between stages, with the metadata that lets a stage refuse stale inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from glyffuser.errors import GlyffuserError

META_KEY = b"glyffuser"


def write_table(table: pa.Table, path: Path, meta: dict) -> None:
    """Write with our metadata under one key; the bytes depend only on content (no timestamps)."""
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[META_KEY] = json.dumps(meta, sort_keys=True).encode()
    pq.write_table(table.replace_schema_metadata(schema_meta), path, compression="zstd")


def read_table(path: Path, columns: list[str] | None = None, required: tuple[str, ...] = ()) -> tuple[pa.Table, dict]:
    """The table (only `columns`, if given) and its glyffuser metadata; `columns` and `required` must exist."""
    try:
        schema = pq.read_schema(path)
        missing = [c for c in [*(columns or []), *required] if c not in schema.names]
        if missing:
            raise GlyffuserError(f"{path} has no column {missing[0]!r} (it has {', '.join(schema.names)}): "
                                 "re-run the stage that writes it (dvc repro)")
        table = pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise GlyffuserError(f"{path} is missing: run the stage that writes it first (dvc repro)") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise GlyffuserError(f"{path} is not a readable Parquet table ({err})") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise GlyffuserError(f"{path} was not written by glyffuser (no '{META_KEY.decode()}' metadata)")
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise GlyffuserError(f"{path}: its '{META_KEY.decode()}' metadata is not a JSON object: re-run the stage that "
                             "writes it (dvc repro)")
    return table, meta
