"""Load benchmarks of postbackd: `python -m benchmarks.run` (see README.md here)."""

from __future__ import annotations
