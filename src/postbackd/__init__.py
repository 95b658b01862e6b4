"""postbackd: event claim requests to X and re-engagement attribution, as a daemon."""

from __future__ import annotations

__version__ = "0.1.0"
