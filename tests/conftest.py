"""Make tests/problems.py importable as ``problems`` from every test module."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
