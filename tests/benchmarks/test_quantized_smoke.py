"""benchmarks/quantized.py end to end at the tiny shape (--quick): a row per base, figures that make
sense (no timing assertions: the figures on a shared machine mean nothing)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quantized.py"


@pytest.mark.slow
def test_quick_benchmark_run(tmp_path):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "q.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--bases", "float32", "nf4", "int8",
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["base"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"float32", "nf4", "int8"}
    assert rows["nf4"]["weights_mib"] < rows["int8"]["weights_mib"] < rows["float32"]["weights_mib"]
    assert all(r["peak_mib"] > 0 and r["step_ms"] > 0 and r["trainable"] == rows["float32"]["trainable"]
               for r in rows.values())
