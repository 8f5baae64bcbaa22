"""The package must import, and list backends, with no heavy runtime loaded."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "tensorflow", "onnxruntime", "ctranslate2", "ai_edge_litert", "transformers")


def test_import_orchestrator_and_backends_is_light():
    code = ("import sys, backends, orchestrator, backends.registry, orchestrator.suites, backends.families;"
            "backends.registry.available_backends();"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
