"""Sample K answers per prompt from the policy, rank them with the judge ensemble, write DPO pairs.

Run as:
    python jobs/preferences.py --config configs/demo.yaml [--run-dir DIR] [key=value ...]
    ray job submit --working-dir . -- python jobs/preferences.py --config configs/demo.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir

from moaa_ray.cli import main  # noqa: E402
from moaa_ray.stages.layout import PREFERENCES  # noqa: E402

if __name__ == "__main__":
    sys.exit(main([PREFERENCES, *sys.argv[1:]]))
