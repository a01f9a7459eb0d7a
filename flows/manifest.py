"""Batch manifests: a JSON or CSV list of edits, validated as a whole before any GPU work.

A row names an input `image` and a target `text`, optionally an `id`, a `model`, and any
parameter of an edit as a column: top-level fields (`resolution_fit`, `device`, ...) by name
and stage parameters with a dot (`optimize.steps`, `finetune.lora`, `generate.etas`). In CSV,
an empty cell (in JSON, a null) means "use the default" and list cells (etas, seeds) are
separated by spaces, commas or semicolons. JSON is a list of row objects, or
`{"edits": [...]}`, and may also nest the stage parameters (`{"generate": {"etas": [0.5]}}`).

Relative image paths are resolved against the manifest's own folder, so a manifest dropped
next to its images in a bucket works as is. Every problem in every row is reported at once,
each with its row number (1 = the first edit; in CSV, line = row + 1). Bad rows are skipped
and reported; the good ones still run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
from dataclasses import dataclass
from typing import Any, get_origin
from urllib.parse import urlparse

from pydantic import BaseModel

from imagic.config import EditSpec, parse_params
from imagic.errors import ImagicError, InvalidParamsError
from imagic.images import read_image
from imagic.stages.optimize import read_input_image_bytes
from imagic.storage import read_uri_bytes

MAX_ROWS = 10_000
REQUIRED_COLUMNS = ("image", "text")


class ManifestError(InvalidParamsError):
    """The batch manifest is missing, unreadable, or has rows that cannot become edits."""


@dataclass(frozen=True)
class ManifestRow:
    """One validated edit of a batch."""

    row: int
    id: str
    spec: EditSpec


def allowed_columns() -> list[str]:
    """Every column a row may have: id, the EditSpec's fields, and `stage.param` for stages."""
    columns = ["id"]
    for name, field in EditSpec.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            columns += [f"{name}.{param}" for param in annotation.model_fields]
        else:
            columns.append(name)
    return columns


def load_manifest(manifest_uri: str, *, default_model: str | None = None) -> CheckedManifest:
    """Read, parse and validate every row (images included) of the manifest at `manifest_uri`."""
    try:
        data = read_uri_bytes(manifest_uri)
    except ImagicError as error:
        raise ManifestError(
            f"manifest_uri = {manifest_uri!r}: cannot read the manifest ({error}). Upload it "
            "first, or fix the URI."
        ) from error
    rows = parse_rows(manifest_uri, data)
    return validate_rows(rows, base_uri=parent_uri(manifest_uri), default_model=default_model)


def parse_rows(manifest_uri: str, data: bytes) -> list[dict[str, Any]]:
    """Raw rows of a JSON or CSV manifest (by extension; else whichever parses)."""
    name = urlparse(manifest_uri).path.lower()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(
            f"manifest_uri = {manifest_uri!r}: not UTF-8 text (byte {error.start}); a manifest "
            "is a JSON or CSV file."
        ) from None
    if not text.strip():
        raise ManifestError(
            f"manifest_uri = {manifest_uri!r}: the manifest is empty; add at least one edit "
            "(columns image,text)."
        )
    if name.endswith(".json") or (not name.endswith(".csv") and text.lstrip()[:1] in "[{"):
        rows = _json_rows(manifest_uri, text)
    elif name.endswith(".csv") or "," in text.splitlines()[0]:
        rows = _csv_rows(manifest_uri, text)
    else:
        raise ManifestError(
            f"manifest_uri = {manifest_uri!r}: neither JSON nor CSV; give a .json file (a list "
            "of edits) or a .csv file with a header line such as image,text."
        )
    if not rows:
        raise ManifestError(
            f"manifest_uri = {manifest_uri!r}: the manifest has no edits; add at least one row."
        )
    if len(rows) > MAX_ROWS:
        raise ManifestError(
            f"manifest_uri = {manifest_uri!r}: {len(rows)} edits is more than {MAX_ROWS}; split "
            "it into several manifests."
        )
    return rows


def _json_rows(manifest_uri: str, text: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ManifestError(
            f"manifest_uri = {manifest_uri!r}: not valid JSON ({error.msg} at line "
            f"{error.lineno}, column {error.colno}); fix the JSON."
        ) from None
    if isinstance(data, dict) and set(data) == {"edits"}:
        data = data["edits"]
    if not isinstance(data, list):
        raise ManifestError(
            f"manifest_uri = {manifest_uri!r}: JSON must be a list of edits or "
            '{"edits": [...]}; got a ' + type(data).__name__ + "."
        )
    return data


def _csv_rows(manifest_uri: str, text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [column.strip() for column in reader.fieldnames or []]
    if not header or any(not column for column in header):
        raise ManifestError(
            f"manifest_uri = {manifest_uri!r}: the CSV header {header!r} has empty column "
            "names; the first line names the columns, e.g. image,text."
        )
    rows = []
    for record in reader:
        if None in record:  # more cells than header columns
            rows.append({"__extra_cells__": record[None]})
            continue
        rows.append(
            {
                column.strip(): value.strip()
                for column, value in record.items()
                if value is not None and value.strip() != ""
            }
        )
    return rows


@dataclass(frozen=True)
class CheckedManifest:
    """The rows that became edits, and a message for every row that did not."""

    edits: list[ManifestRow]
    problems: dict[int, str]

    def report(self) -> str:
        """Every problem, one line per row, for logs and errors."""
        return f"the batch manifest has {len(self.problems)} bad row(s):\n" + "\n".join(
            f"  row {number}: {problem}" for number, problem in sorted(self.problems.items())
        )


def validate_rows(
    rows: list[Any], *, base_uri: str, default_model: str | None = None
) -> CheckedManifest:
    """Every row as an EditSpec, or a problem message naming what to fix in that row.

    Bad rows do not stop the good ones (a nightly batch should not lose 99 edits to one typo);
    a manifest where no row is usable raises ManifestError with every problem at once.
    """
    allowed = set(allowed_columns())
    problems: dict[int, str] = {}
    edits: list[ManifestRow] = []
    seen: dict[str, int] = {}
    ids: dict[str, int] = {}
    for number, raw in enumerate(rows, start=1):
        try:
            edit = _validate_row(number, raw, allowed, base_uri, default_model)
        except ImagicError as error:
            problems[number] = str(error)
            continue
        fingerprint = edit_id(edit.spec)
        if fingerprint in seen:
            problems[number] = (
                f"duplicates row {seen[fingerprint]} (same image, text and parameters); "
                "remove one of them."
            )
        elif edit.id in ids:
            problems[number] = (
                f"id = {edit.id!r} is already used by row {ids[edit.id]}; ids must be unique."
            )
        else:
            seen[fingerprint] = number
            ids[edit.id] = number
            edits.append(edit)
    checked = CheckedManifest(edits, problems)
    if not edits:
        raise ManifestError(f"{checked.report()}\nNo row is usable; nothing was run.")
    return checked


def _validate_row(
    number: int, raw: Any, allowed: set[str], base_uri: str, default_model: str | None
) -> ManifestRow:
    if not isinstance(raw, dict):
        raise ManifestError(f"expected an object with image and text, got {raw!r}")
    if "__extra_cells__" in raw:
        raise ManifestError(
            f"more cells than header columns ({raw['__extra_cells__']!r}); quote a cell that "
            'holds commas ("0.5,0.7"), or add the missing column to the header'
        )
    flat = _flatten(raw)
    unknown = sorted(set(flat) - allowed)
    if unknown:
        raise ManifestError(
            f"unknown column(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    missing = [column for column in REQUIRED_COLUMNS if column not in flat]
    if "model" not in flat and default_model is None:
        missing.append("model")
    if missing:
        raise ManifestError(
            f"missing {', '.join(missing)}; every row needs an image and a text"
            + ("" if default_model else ", and a model (or pass the flow's `model` parameter)")
        )
    row_id = str(flat.pop("id", default_row_id(number)))
    flat["image"] = resolve_image_uri(str(flat["image"]), base_uri)
    flat.setdefault("model", default_model)
    spec = parse_params(EditSpec, _nest(flat))
    image = read_input_image_bytes(spec.image)
    read_image(image, max_megapixels=spec.max_megapixels, name=spec.image)
    return ManifestRow(row=number, id=row_id, spec=spec)


def _flatten(raw: dict[str, Any]) -> dict[str, Any]:
    """`{"generate": {"etas": [...]}}` and `{"generate.etas": "..."}` alike -> dotted keys.

    A JSON null means "use the default", like an empty CSV cell (pandas writes NaN as null).
    """
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update(
                {f"{key}.{inner}": item for inner, item in value.items() if item is not None}
            )
        elif value is not None:
            flat[str(key)] = value
    return flat


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys back into the EditSpec's shape; list cells of CSV split into lists."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        section, _, param = key.partition(".")
        if param:
            field = EditSpec.model_fields[section].annotation.model_fields[param]  # type: ignore[union-attr]
            if get_origin(field.annotation) is list and isinstance(value, str):
                value = value.replace(",", " ").replace(";", " ").split()
            nested.setdefault(section, {})[param] = value
        else:
            nested[key] = value
    return nested


def resolve_image_uri(image: str, base_uri: str) -> str:
    """A relative image path is relative to the manifest's folder; anything else is kept."""
    if urlparse(image).scheme or image.startswith(("/", "~")):
        return image
    scheme, separator, rest = base_uri.partition("://")
    if separator:  # s3:// keys are not normalized by S3 ('./a.png'), and refuse '.' and '..'
        netloc, _, path = rest.partition("/")
        return f"{scheme}://{netloc}{posixpath.normpath(posixpath.join('/' + path, image))}"
    return posixpath.join(base_uri, image) if base_uri else image


def parent_uri(uri: str) -> str:
    """The folder of a manifest: `s3://b/x/m.csv` -> `s3://b/x`, `/data/m.csv` -> `/data`."""
    return posixpath.dirname(uri.rstrip("/"))


def default_row_id(number: int) -> str:
    """The id of a row that names none (distinct from plain-number ids users may give)."""
    return f"row-{number}"


def edit_id(spec: EditSpec) -> str:
    """A stable identity of an edit's inputs, for duplicates and for skipping finished edits."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
