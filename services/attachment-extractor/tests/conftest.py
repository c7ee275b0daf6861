import sys
from pathlib import Path

# importlib mode: make the shared sample builders importable as `extractor_samples`
sys.path.insert(0, str(Path(__file__).parent))
