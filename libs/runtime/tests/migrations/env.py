import importlib.util
import pathlib

from postroom_runtime.migrations import run_migrations

_spec = importlib.util.spec_from_file_location(
    "runtime_test_models", pathlib.Path(__file__).parents[1] / "models.py"
)
_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_models)
run_migrations(_models.metadata)
