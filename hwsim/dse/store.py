"""The results database of a study: embedded SQLite (stdlib ``sqlite3``), WAL mode.

Tables:

- ``meta``: key/value facts of the study (name, description, the study file's text, expected
  design points, whether the runner finished, timestamps).
- ``accuracy``: one row per accuracy point (key = :attr:`AccuracyPoint.key`): its configuration,
  status (``ok``/``failed``), accuracy metrics, the quantized model's linear records and config
  (so new hardware points are costed later without any model work), timings, warnings,
  fall-backs, versions, and the error with its traceback for a failed point.
- ``design``: one row per design point (key = :attr:`DesignPoint.key`): the hardware
  configuration and cost metrics of an accuracy point on one accelerator.

An accuracy point and all its design rows are written in **one transaction**, so a study killed
at any moment leaves each point either complete or absent. :func:`load` joins the tables into one
flat DataFrame (one row per design point, the columns listed in docs/dse.md).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .points import AccuracyPoint, HardwarePoint

__all__ = ["ResultStore", "load", "study_info", "STATUSES"]

STATUSES = ("ok", "failed")
#: seconds a writer waits for a lock held by another process before giving up
BUSY_TIMEOUT_S = 60.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accuracy (
    accuracy_key TEXT PRIMARY KEY,
    config_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    metrics_json TEXT NOT NULL,
    records_json TEXT NOT NULL,
    model_config_json TEXT NOT NULL,
    timings_json TEXT NOT NULL,
    warnings_json TEXT NOT NULL,
    versions_json TEXT NOT NULL,
    error TEXT NOT NULL,
    traceback TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    wall_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS design (
    design_key TEXT PRIMARY KEY,
    accuracy_key TEXT NOT NULL REFERENCES accuracy(accuracy_key),
    hardware_key TEXT NOT NULL,
    hardware_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    metrics_json TEXT NOT NULL,
    error TEXT NOT NULL,
    finished_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS design_by_accuracy ON design(accuracy_key);
"""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys): equal content gives byte-identical text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, allow_nan=True)


class ResultStore:
    """A study's SQLite database. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise FileNotFoundError(f"results database {str(self.path)!r} does not exist")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a finished point survives power loss
        self._db.executescript(SCHEMA)

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): all or nothing."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def integrity_check(self) -> str:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    # ------------------------------------------------------------------ meta
    def set_meta(self, **values: Any) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                           [(k, _dumps(v)) for k, v in values.items()] + [("updated_at", _dumps(_now()))])

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    # ------------------------------------------------------------------ queries
    def accuracy_status(self) -> dict[str, str]:
        """accuracy_key -> 'ok' | 'failed' for every stored accuracy point."""
        return dict(self._db.execute("SELECT accuracy_key, status FROM accuracy"))

    def design_keys(self) -> set[str]:
        return {k for (k,) in self._db.execute("SELECT design_key FROM design")}

    def accuracy_row(self, key: str) -> dict[str, Any] | None:
        cur = self._db.execute("SELECT * FROM accuracy WHERE accuracy_key = ?", (key,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cur.description], row))

    def counts(self) -> dict[str, int]:
        q = self._db.execute
        return {"accuracy_ok": q("SELECT count(*) FROM accuracy WHERE status='ok'").fetchone()[0],
                "accuracy_failed": q("SELECT count(*) FROM accuracy WHERE status='failed'").fetchone()[0],
                "design": q("SELECT count(*) FROM design").fetchone()[0]}

    # ------------------------------------------------------------------ writes
    def write_point(self, point: AccuracyPoint, result: Mapping[str, Any],
                    designs: Iterable[tuple[str, HardwarePoint, Mapping[str, Any]]]) -> None:
        """Store one finished accuracy point and its design rows in one transaction.

        result: ``status``, ``metrics``, ``records``, ``model_config``, ``timings``, ``warnings``,
        ``versions``, ``error``, ``traceback``, ``wall_s``. designs: (design_key, hardware point,
        cost result with ``status``, ``metrics``, ``error``) for each hardware point.
        """
        if result["status"] not in STATUSES:
            raise ValueError(f"status={result['status']!r}; valid: {STATUSES}")
        now = _now()
        with self.transaction() as db:
            db.execute("DELETE FROM design WHERE accuracy_key = ?", (point.key,))
            db.execute(
                "INSERT OR REPLACE INTO accuracy VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (point.key, _dumps(point.to_dict()), result["status"], _dumps(result.get("metrics", {})),
                 _dumps(result.get("records", [])), _dumps(result.get("model_config", {})),
                 _dumps(result.get("timings", {})), _dumps(result.get("warnings", [])),
                 _dumps(result.get("versions", {})), result.get("error", ""), result.get("traceback", ""), now,
                 float(result.get("wall_s", 0.0))))
            self._insert_designs(db, point.key, designs, now)

    def add_designs(self, accuracy_key: str, designs: Iterable[tuple[str, HardwarePoint, Mapping[str, Any]]]) -> None:
        """Design rows of an already stored accuracy point (new hardware points), one transaction."""
        with self.transaction() as db:
            self._insert_designs(db, accuracy_key, designs, _now())

    @staticmethod
    def _insert_designs(db, accuracy_key, designs, now) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO design VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(key, accuracy_key, hw.key, _dumps(hw.to_dict()), c["status"], _dumps(c.get("metrics", {})),
              c.get("error", ""), now) for key, hw, c in designs])

    def forget_failed(self) -> list[str]:
        """Delete failed accuracy points (and their design rows) so they run again; returns their keys."""
        with self.transaction() as db:
            keys = [k for (k,) in db.execute("SELECT accuracy_key FROM accuracy WHERE status='failed'")]
            db.executemany("DELETE FROM design WHERE accuracy_key = ?", [(k,) for k in keys])
            db.executemany("DELETE FROM accuracy WHERE accuracy_key = ?", [(k,) for k in keys])
        return keys

    # ------------------------------------------------------------------ export
    def frame(self):
        """pandas DataFrame: one row per design point, flat columns (see :func:`load`)."""
        import pandas as pd

        cur = self._db.execute(
            "SELECT d.design_key, d.accuracy_key, d.hardware_key, d.hardware_json, d.status, d.metrics_json, "
            "d.error, a.config_json, a.status, a.metrics_json, a.timings_json, a.warnings_json, a.versions_json, "
            "a.error, a.finished_at, a.wall_s FROM design d JOIN accuracy a USING (accuracy_key) "
            "ORDER BY a.rowid, d.rowid")
        rows = []
        for (dkey, akey, hkey, hw_json, d_status, d_metrics, d_error, a_config, a_status, a_metrics, timings,
             warns, versions, a_error, finished_at, wall_s) in cur:
            acc = AccuracyPoint.from_dict(json.loads(a_config))
            hw = HardwarePoint.from_dict(json.loads(hw_json))
            am, dm = json.loads(a_metrics), json.loads(d_metrics)
            failed = a_status == "failed" or d_status == "failed"
            row = {"design_key": dkey, "accuracy_key": akey, "hardware_key": hkey,
                   "status": "failed" if failed else "ok", "error": a_error or d_error,
                   "label": f"{acc.label} @ {hw.label}", "acc_label": acc.label, "hw_label": hw.label,
                   "setting": am.get("setting", ""),
                   **{k: v for k, v in acc.to_dict().items() if k not in ("w", "x")},
                   "stages": am.get("stages", ""), "w_fmt": am.get("w_fmt", acc.w), "x_fmt": am.get("x_fmt", acc.x),
                   **hw.to_dict()}
            row["rank"] = am.get("rank", acc.rank)
            row["lowrank_fmt"] = am.get("lowrank_fmt", acc.lowrank_fmt)
            row.update({k: v for k, v in am.items() if k not in row and not isinstance(v, (dict, list))})
            row.update({k: v for k, v in dm.items() if not isinstance(v, (dict, list))})
            row["warnings"] = _dumps(json.loads(warns) + list(dm.get("cost_warnings", [])))
            row.update(timings=timings, versions=versions, finished_at=finished_at, wall_s=wall_s,
                       config_json=_dumps({"accuracy": acc.to_dict(), "hardware": hw.to_dict()}))
            rows.append(row)
        return pd.DataFrame(rows)


def load(db: str | Path):
    """One row per design point of the study database ``db`` (a pandas DataFrame, flat columns)."""
    with ResultStore(db, create=False) as store:
        return store.frame()


def study_info(db: str | Path) -> dict[str, Any]:
    """What a report says about the study's state: name, description, expected_design_points,
    finished, failed_points, updated_at, study_toml."""
    with ResultStore(db, create=False) as store:
        meta = store.meta()
        counts = store.counts()
        failed = store._db.execute(
            "SELECT count(*) FROM design d JOIN accuracy a USING (accuracy_key) "
            "WHERE a.status='failed' OR d.status='failed'").fetchone()[0]
    return {"name": meta.get("name", Path(db).stem), "description": meta.get("description", ""),
            "expected_design_points": int(meta.get("expected_design_points", counts["design"])),
            "finished": bool(meta.get("finished", False)), "failed_points": int(failed),
            "updated_at": meta.get("updated_at", ""), "study_toml": meta.get("study_toml", ""),
            "stored_design_points": counts["design"]}
