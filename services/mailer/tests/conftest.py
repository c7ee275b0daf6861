import sys
from pathlib import Path

# importlib mode: make the shared helpers importable as `mailer_samples` and `smtp_sink`
sys.path.insert(0, str(Path(__file__).parent))
