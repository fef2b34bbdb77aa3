"""The demo's state file (OUT/state.json): which stages are done, with what inputs, in how long.

A stage is done when the state file says so with the same fingerprint (a hash of everything its
result depends on) and its outputs are still there. A stage whose inputs changed is redone. The
file is replaced atomically, so an interruption never leaves it half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import time


def fingerprint(value) -> str:
    """A short, stable hash of a JSON-able value (dict keys sorted): what names a cached base model
    and tells whether a stage's inputs changed."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


class StopAfterStage(Exception):
    """Raised after the stage named by DIFFLORA_DEMO_STOP_AFTER finished (tests interrupt runs with it)."""


STOP_ENV = "DIFFLORA_DEMO_STOP_AFTER"


class DemoState:
    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, "state.json")
        self.data = {"stages": {}}
        if os.path.isfile(self.path):
            with open(self.path) as f:
                self.data = json.load(f)

    @property
    def stages(self) -> dict:
        return self.data["stages"]

    def is_done(self, stage: str, fingerprint: str) -> bool:
        entry = self.stages.get(stage)
        return bool(entry and entry.get("done") and entry.get("fingerprint") == fingerprint)

    def changed(self, stage: str, fingerprint: str) -> bool:
        """The stage ran (or started) before with other inputs."""
        entry = self.stages.get(stage)
        return bool(entry and entry.get("fingerprint") != fingerprint)

    def start(self, stage: str, fingerprint: str) -> None:
        self.stages[stage] = {"done": False, "fingerprint": fingerprint, "started": _now()}
        self.save()

    def finish(self, stage: str, fingerprint: str, seconds: float, **extra) -> None:
        self.stages[stage] = {"done": True, "fingerprint": fingerprint, "seconds": round(seconds, 1),
                              "finished": _now(), **extra}
        self.save()
        if os.environ.get(STOP_ENV) == stage:
            raise StopAfterStage(stage)

    def seconds(self, stage: str) -> float | None:
        return self.stages.get(stage, {}).get("seconds")

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
