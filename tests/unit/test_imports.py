import subprocess
import sys

HEAVY = ["ray", "torch", "transformers", "vllm", "deepspeed"]


def test_core_imports_no_heavy_library():
    code = (
        "import sys, moaa_ray.core, moaa_ray.core.moa, moaa_ray.core.judging, moaa_ray.core.ranking, "
        "moaa_ray.core.criteria, moaa_ray.core.winrates, moaa_ray.config, moaa_ray.records\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_loads_no_heavy_library():
    code = (
        "import sys\nfrom moaa_ray.cli import build_parser\nbuild_parser().format_help()\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
