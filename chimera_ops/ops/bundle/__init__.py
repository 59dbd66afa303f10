"""`chimera-ops collect-logs`: a redacted support bundle, streamed; and `chimera-ops logs`.

`collect.py` is the procedure (docs/support-bundle.md): collectors (`collectors.py`,
`services.py`, `store_parts.py`), each in its own thread with its own timeout; log files across
rotations within `--since` and a per-file cap (`sources.py`, `logparts.py`); redaction of every
byte by one `redact.Redactor`, exact across read boundaries (`scrub.py`); a streamed archive
(`writer.py`); `report.md` (`report.py`); `selftest.py` proves the redaction on canaries;
`tail.py` reads a component's log for `chimera-ops logs`. No click or rich here.
"""

from __future__ import annotations

from chimera_ops.ops.bundle.collect import (
    BundleError,
    BundleRequest,
    BundleResult,
    bundle_name,
    check_out_dir,
    collect_bundle,
)

__all__ = [
    "BundleError",
    "BundleRequest",
    "BundleResult",
    "bundle_name",
    "check_out_dir",
    "collect_bundle",
]
