"""Scoring Spark DataFrames through pixguard with ``pyspark.ml.functions.predict_batch_udf``.

Each executor's Python worker keeps one :class:`PixguardClient` (its connections stay open) and
sends every batch of rows as one ``/v1/score`` request. Transactions are rebuilt from the
DataFrame's columns — nested structs (``payer.ispb`` inside ``payer``) or flat dotted names — as
the JSON /v1 takes, so pixguard validates and pre-processes them exactly as for any other client.
"""
from __future__ import annotations

import inspect
import math
import re
from datetime import datetime, timezone
from typing import Optional

import numpy as np
from pyspark.ml.functions import predict_batch_udf
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    CharType,
    DataType,
    DoubleType,
    FloatType,
    IntegralType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
    VarcharType,
)

from .client import PixguardClient

# The transaction's leaves: dotted path, kind, required. The order and names are pixguard's
# (src/transaction/arrow/mod.rs); `dict` leaves are required together.
LEAVES = [
    ("end_to_end_id", "text", True),
    ("accepted_at", "time", True),
    ("amount_cents", "int", True),
    ("initiation_form", "text", True),
    ("purpose", "text", True),
    ("payer.ispb", "text", True),
    ("payer.account_type", "text", True),
    ("payer.person_type", "text", True),
    ("payer.account_opened_at", "time", True),
    ("payer.device.registered", "bool", True),
    ("payer.device.first_seen_at", "time", False),
    ("payee.ispb", "text", True),
    ("payee.account_type", "text", True),
    ("payee.person_type", "text", True),
    ("payee.key_type", "text", False),
    ("payee.key_created_at", "time", False),
    ("payee.account_opened_at", "time", False),
    ("payee.dict_stats.settlements_90d", "int", False),
    ("payee.dict_stats.fraud_markers_30d", "int", False),
    ("payee.dict_stats.infractions_open", "int", False),
    ("payee.dict_stats.mule_marker", "bool", False),
    ("history.payee_first_time", "bool", True),
    ("history.payer_tx_1h", "int", True),
    ("history.payer_amount_24h_cents", "int", True),
    ("history.amount_zscore_90d", "float", False),
]

# What the UDF answers per row; `error` is null when the row was scored.
SCORE_TYPE = StructType(
    [
        StructField("score", DoubleType()),
        StructField("decision", StringType()),
        StructField("reasons", ArrayType(StringType())),
        StructField("model_version", StringType()),
        StructField("error", StringType()),
    ]
)


# What a leaf of each kind takes, in pixguard batch's words (src/transaction/arrow/cells.rs): a
# DataFrame is read as `pixguard batch` reads the same Parquet, so both refuse the same rows.
EXPECTED = {
    "text": "text",
    "time": "a timestamp or RFC 3339 text",
    "int": "an integer (or its text)",
    "bool": "a boolean (or true/false text)",
    "float": "a number (or its text)",
}

_INTEGER = re.compile(r"[+-]?[0-9]+")


class Refused(ValueError):
    """A row that is not a transaction: the leaf to blame (dotted path) and why, as
    ``pixguard batch`` words it in its rejects file."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _is_text(t: DataType) -> bool:
    return isinstance(t, (StringType, VarcharType, CharType))


def _accepts(kind: str, t: DataType) -> bool:
    """Whether a column of type ``t`` can hold leaves of ``kind`` (pixguard batch's rule)."""
    if _is_text(t):
        return True
    if kind == "time":
        return isinstance(t, (TimestampType, TimestampNTZType))
    if kind == "int":
        return isinstance(t, IntegralType)
    if kind == "bool":
        return isinstance(t, BooleanType)
    if kind == "float":
        return isinstance(t, (IntegralType, FloatType, DoubleType))
    return False


def _leaf_type(schema: StructType, path: str) -> Optional[DataType]:
    """The type of ``path`` in ``schema``: a top-level column of that name, or nested fields."""
    if path in schema.names:
        return schema[path].dataType
    head, _, rest = path.partition(".")
    if not rest or head not in schema.names:
        return None
    inner = schema[head].dataType
    return _leaf_type(inner, rest) if isinstance(inner, StructType) else None


def leaf_columns(df: DataFrame) -> list[Column]:
    """One column per leaf, in LEAVES order; timestamps as epoch microseconds (so no session time
    zone can shift them), absent optional leaves as nulls. A missing required leaf, or a column
    whose type cannot hold its leaf (a double amount, a date, a numeric ISPB), is a ValueError
    naming it, before any row is sent: ``pixguard batch`` refuses the same file."""
    missing = []
    wrong = []
    columns = []
    for path, kind, required in LEAVES:
        t = _leaf_type(df.schema, path)
        if t is None:
            if required:
                missing.append(path)
            columns.append(F.lit(None).cast("string").alias(path))
            continue
        if not _accepts(kind, t):
            wrong.append(f"column {path} is {t.simpleString()}, expected {EXPECTED[kind]}")
        c = F.col(f"`{path}`") if path in df.columns else F.col(path)
        if kind == "time" and isinstance(t, (TimestampType, TimestampNTZType)):
            c = F.unix_micros(c.cast(TimestampType()))
        if kind == "float" and isinstance(t, (FloatType, DoubleType)):
            # A null reaches the Python worker as NaN, so a NaN cell would pass for an absent
            # leaf; as infinity it is refused as pixguard batch refuses it (not finite).
            c = F.when(F.isnan(c), F.lit(float("inf"))).otherwise(c)
        columns.append(c.alias(path))
    problems = ([f"missing required column(s): {', '.join(missing)}"] if missing else []) + wrong
    if problems:
        raise ValueError("; ".join(problems))
    return columns


def _absent(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is np.nan


def _not_an_integer(v: str) -> str:
    """batch's reason for a text cell that is not an integer, with its hint for a whole number
    written with a point (how pandas writes an integer column with missing values)."""
    try:
        f = float(v.strip()) if v.isascii() and "_" not in v else None
    except ValueError:
        f = None
    if f is not None and "." in v and math.isfinite(f) and f.is_integer():
        return (f"`{v}` is not an integer (a float column: pandas writes integers with missing values "
                "as floats; cast the column to Int64 before writing)")
    return f"`{v}` is not an integer"


def _value(path: str, kind: str, v):
    """A cell as /v1 takes the leaf; text in a typed leaf is read as pixguard batch reads it."""
    text = isinstance(v, str)
    if kind == "int":
        if not text:
            return int(v)
        n = int(v) if _INTEGER.fullmatch(v.strip()) else None
        if n is None or not -(2**63) <= n < 2**63:
            raise Refused(path, _not_an_integer(v))
        return n
    if kind == "float":
        try:
            # Python's float() also reads "1_0" and non-ASCII digits; Rust's parse, batch's, does not.
            if text and (not v.isascii() or "_" in v):
                raise ValueError(v)
            f = float(v.strip()) if text else float(v)
        except ValueError:
            raise Refused(path, f"`{v}` is not a number") from None
        if not math.isfinite(f):
            # JSON has no NaN or infinity: refused here with /v1's own words.
            raise Refused(path, "must be a finite number")
        return f
    if kind == "bool":
        if not text:
            return bool(v)
        # In any case, as Spark (`true`), pandas (`True`) and Excel (`TRUE`) write them.
        word = v.strip()
        if word.isascii() and word.lower() in ("true", "false"):
            return word.lower() == "true"
        raise Refused(path, f"must be {EXPECTED[kind]}")
    if kind == "time" and not text:
        micros = int(v)
        t = datetime.fromtimestamp(micros // 1_000_000, tz=timezone.utc).replace(microsecond=micros % 1_000_000)
        return t.isoformat().replace("+00:00", "Z")
    return str(v)


def rows(columns: tuple) -> list:
    """Per row of one batch of leaf columns (numpy arrays in LEAVES order): the /v1 transaction,
    or :class:`Refused` for a cell that cannot be one (``"abc"`` for an amount, ``"False"`` for a
    boolean, an infinite z-score) — answered without a round trip, never sent as something else."""
    n = len(columns[0])
    out: list = []
    for i in range(n):
        tx: dict = {}
        try:
            for (path, kind, _), column in zip(LEAVES, columns):
                v = column[i]
                if _absent(v):
                    continue
                node = tx
                *parents, name = path.split(".")
                for p in parents:
                    node = node.setdefault(p, {})
                node[name] = _value(path, kind, v)
        except Refused as r:
            out.append(r)
            continue
        out.append(tx)
    return out


def transactions(columns: tuple) -> list[dict]:
    """The /v1 transactions held by one batch of leaf columns; a row that cannot be one raises
    :class:`Refused` (``rows`` answers it in place instead)."""
    out = rows(columns)
    for r in out:
        if isinstance(r, Refused):
            raise r
    return out


def make_predict_fn(url: str, explain: bool = False, timeout: float = 60.0, retries: int = 8):
    """predict_batch_udf's factory: one client per Python worker, one request per batch."""

    def make():
        client = PixguardClient(url, timeout=timeout, retries=retries)

        def predict(*columns):
            batch = rows(columns)
            valid = [r for r in batch if not isinstance(r, Refused)]
            scored = iter(client.score_tolerant(valid, explain=explain))
            answers = [
                {"error": r.reason, "field": r.field} if isinstance(r, Refused) else next(scored)
                for r in batch
            ]
            out = []
            for a in answers:
                if "error" in a:
                    field = a.get("field") or ""
                    out.append(
                        {
                            "score": float("nan"),
                            "decision": "",
                            "reasons": np.array([], dtype=object),
                            "model_version": "",
                            "error": f"{field}: {a['error']}" if field else a["error"],
                        }
                    )
                    continue
                model = a.get("model", {})
                out.append(
                    {
                        "score": float(a["score"]),
                        "decision": a["decision"],
                        "reasons": np.array([r["code"] for r in a.get("reasons", [])], dtype=object),
                        "model_version": f"{model.get('name', '')}:{model.get('version', '')}",
                        "error": "",
                    }
                )
            return out

        # predict_batch_udf counts the function's parameters to decide how to pass the columns:
        # one parameter per leaf, so each arrives as its own array.
        predict.__signature__ = inspect.Signature(
            [inspect.Parameter(f"leaf{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(LEAVES))]
        )
        return predict

    return make


def score_udf(url: str, batch_size: int = 1000, explain: bool = False, timeout: float = 60.0):
    """The pandas UDF that scores LEAVES-ordered columns through the pixguard at ``url``."""
    return predict_batch_udf(
        make_predict_fn(url, explain=explain, timeout=timeout),
        return_type=SCORE_TYPE,
        batch_size=batch_size,
    )


def with_scores(
    df: DataFrame,
    url: str,
    column: str = "pixguard",
    batch_size: int = 1000,
    explain: bool = False,
) -> DataFrame:
    """``df`` with a struct column ``column`` (score, decision, reasons, model_version, error).
    Rows pixguard refused have a null score and decision and their field and reason in error."""
    raw = f"__{column}_raw"
    # The UDF's answer lands in a column first: every field below reads that column, so the
    # batch is sent once (a projection with the UDF inlined per field would send it five times).
    df = df.withColumn(raw, score_udf(url, batch_size=batch_size, explain=explain)(*leaf_columns(df)))
    scored = F.col(raw)
    clean = F.struct(
        F.when(~F.isnan(scored["score"]), scored["score"]).alias("score"),
        F.when(scored["decision"] != "", scored["decision"]).alias("decision"),
        scored["reasons"].alias("reasons"),
        F.when(scored["model_version"] != "", scored["model_version"]).alias("model_version"),
        F.when(scored["error"] != "", scored["error"]).alias("error"),
    )
    return df.withColumn(column, clean).drop(raw)


def score_columns(column: str = "pixguard") -> list[Column]:
    """end_to_end_id and the fields of ``with_scores``' struct column, as top-level columns."""
    fields = ["score", "decision", "reasons", "model_version", "error"]
    return [F.col("end_to_end_id")] + [F.col(f"{column}.{f}").alias(f) for f in fields]


def ship(spark) -> None:
    """Makes this package importable on the executors (``addPyFile`` of a zip of it), for
    clusters where it is not pip-installed on every node."""
    import os
    import tempfile
    import zipfile

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(tempfile.mkdtemp(prefix="pixguard-client-"), "pixguard_client.zip")
    with zipfile.ZipFile(path, "w") as z:
        for name in sorted(os.listdir(here)):
            if name.endswith(".py"):
                z.write(os.path.join(here, name), f"pixguard_client/{name}")
    spark.sparkContext.addPyFile(path)
