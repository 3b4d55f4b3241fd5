"""The served-versions panel: what GET /v1/models lists, joined with the RL loop's per-round rewards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# "reward": mean reward of the round's training rollouts; "held-out score": its greedy accuracy on the gate's
# held-out questions (never trained on), with a 95% interval and the number of questions scored.
HEADERS = ["model", "promoted", "round", "reward", "held-out score"]


def read_metrics(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """version -> its round row from the loop's metrics.jsonl ({} when the file is absent or has no rounds yet)."""
    if not path:
        return {}
    path = Path(path)
    if not path.is_file():
        return {}
    rows: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # the loop may be appending this very line right now
        if isinstance(row, dict) and row.get("version"):
            rows[row["version"]] = row
    return rows


def _version_of(model_id: str) -> str | None:
    # Loaded versions are served as "<alias>@vNNNN".
    return model_id.split("@", 1)[1] if "@" in model_id else None


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def held_out(row: dict[str, Any]) -> str:
    """The version's gate score as "0.512 ± 0.116 (71 q)" (normal approximation), or just the score."""
    score, n = row.get("gate_candidate"), row.get("gate_questions")
    if not isinstance(score, (int, float)) or isinstance(score, bool):
        return ""
    if not isinstance(n, (int, float)) or n <= 0:
        return _fmt(score)
    half = 1.96 * (max(score * (1 - score), 0.0) / n) ** 0.5
    return f"{score:.3f} ± {half:.3f} ({int(n)} q)"


def version_rows(models: list[dict[str, Any]], metrics: dict[str, dict[str, Any]],
                 promoted: str | None = None) -> list[list[str]]:
    """One table row per served model id (what clients pass as `model`): promoted?, and its RL rewards when known."""
    if promoted is None:  # without the admin key, the alias card's root names the promoted version
        alias = next((m for m in models if m.get("root") and m.get("root") != m.get("id") and m.get("parent")), None)
        promoted = _version_of(alias["root"]) if alias else None
    rows = []
    for card in models:
        version = _version_of(card["id"])
        row = metrics.get(version or "", {})
        is_alias = card.get("root") not in (None, card["id"])
        if is_alias:
            label = f"→ {_version_of(card['root']) or 'base'}"
        else:
            label = "yes" if version and version == promoted else ""
        name = card["id"] if version or is_alias else f"{card['id']} (base)"
        rows.append([name, label,
                     str(row["round"]) if "round" in row else "", _fmt(row.get("reward_mean")),
                     held_out(row)])
    return rows
