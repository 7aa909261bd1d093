"""Small ledgers with known figures for the compatibility, cleanup and post-migration reports.

Operations come from ``report_factories.operation``, comparisons from the real comparison
engine, and everything is stored through the real ``LedgerWriter``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from report_factories import T0, Ledger, operation, write

from ledger.comparison import compare_operations, load_rules


def compatibility_ledger(path: Path) -> tuple[Path, Ledger]:
    """``get_user`` over 13 pairs with a rename, a removal, a type change and error names.

    - pairs 0-9: V1 ``{user_name, age, legacy}``, V2 ``{username, age}``; ``age`` is a
      string in V2 for pairs 7, 8, 9 (30 % of V2 answers);
    - pairs 10, 11: V1 fails with ``db_gone`` (no rule maps it), V2 with ``connection_error``;
    - pair 12: V1 fails with ``weird_fail`` (unmapped), V2 answers.
    """
    rules = load_rules()
    ledger = Ledger()
    for i in range(13):
        at = T0 + timedelta(seconds=i)
        cid = f"c{i:02d}"
        v1_result = {"user_name": f"u{i}", "age": i, "legacy": True}
        v2_result = {"username": f"u{i}", "age": str(i) if 7 <= i <= 9 else i}
        v1_error = v2_error = None
        if i in (10, 11):
            v1_error = {"type": "db_gone", "message": "gone"}
            v2_error = {"type": "connection_error", "message": "refused"}
        if i == 12:
            v1_error = {"type": "weird_fail", "message": "?"}
        v1 = operation(cid, "v1", at, op="get_user", result=v1_result, error=v1_error)
        v2 = operation(cid, "v2", at, op="get_user", result=v2_result, error=v2_error)
        ledger.operations += [v1, v2]
        ledger.comparisons.append(compare_operations(v1, v2, rules, at=at + timedelta(seconds=1)))
    return write(path, ledger), ledger
