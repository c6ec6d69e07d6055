"""Run the chaos suite at full size (see tests/chaos/full.py): ``python scripts/chaos.py [R2 R3 ...]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from chaos.full import main  # noqa: E402

raise SystemExit(main())
