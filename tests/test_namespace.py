"""One installed namespace: a user's own modules named errors, evaluation, data, ... neither shadow ours nor
are shadowed by them, and a checkout runs with PYTHONPATH=. and no install."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.test_scripts import ENTRY_POINTS_IN_FOLDERS, TINY_TRAINING, installed_here  # noqa: F401 (a fixture)

PARADIGM_SCRIPTS = ["run_single_task.py", "run_weighted_joint.py", "run_weighted_normalized_joint.py",
                    "run_weighted_pretraining.py"]
# Our generic names: every module in tawt/ and the folders the package reaches.
GENERIC_NAMES = sorted({name[:-3] for name in os.listdir(os.path.join(ROOT, "tawt"))
                        if name.endswith(".py") and name != "__init__.py"} | {"data", "testing", "scripts", "benchmarks"})
USER_MODULES = ("errors", "evaluation", "distributed")
USER_PACKAGES = {"data": "conll_io", "testing": "significance_testing", "scripts": "experiment_grid"}
# Set for the scripts: a user module that one of them imports then stops it.
STRICT = "TAWT_NAMESPACE_TEST_STRICT"


def broken_module(name):
    return (f"import os\nWHO = 'user'\nif os.environ.get({STRICT!r}):\n"
            f"    raise RuntimeError(\"the user's {name} was imported by the project's code\")\n")


@pytest.fixture(scope="module")
def user_project(tmp_path_factory):
    """A user's project directory holding modules and packages with our generic names."""
    project = tmp_path_factory.mktemp("user_project")
    for name in USER_MODULES:
        (project / f"{name}.py").write_text(broken_module(name))
    for package, module in USER_PACKAGES.items():
        (project / package).mkdir()
        (project / package / "__init__.py").write_text(broken_module(package))
        (project / package / f"{module}.py").write_text(broken_module(f"{package}.{module}"))
    return project


def in_user_project(project, arguments, strict=True, timeout=300):
    """Run python with `arguments` from the user's project, which is on PYTHONPATH ahead of the install (as a
    project of one's own is); the project's modules break any code of ours that imports them."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    environment.update({"PYTHONPATH": str(project), "OMP_NUM_THREADS": "1"})
    if strict:
        environment[STRICT] = "1"
    return subprocess.run([sys.executable, *arguments], cwd=project, capture_output=True, text=True,
                          timeout=timeout, env=environment)


@pytest.mark.parametrize("script", PARADIGM_SCRIPTS + ENTRY_POINTS_IN_FOLDERS)
def test_every_script_answers_help_beside_a_users_modules(installed_here, user_project, script):
    completed = in_user_project(user_project, [os.path.join(ROOT, script), "--help"])
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "usage:" in completed.stdout


def test_a_tiny_run_beside_a_users_modules(installed_here, user_project, tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "single"
    completed = in_user_project(user_project, [
        os.path.join(ROOT, "run_single_task.py"), "--task", "pos", "--data_dir", tiny_data_dir,
        "--model_name_or_path", tiny_model_dir, "--output_dir", str(output), *TINY_TRAINING])
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(output / "all_results.json") as handle:
        assert "pos_test" in json.load(handle)


def test_the_users_own_modules_are_the_ones_they_import(user_project):
    names = list(USER_MODULES) + list(USER_PACKAGES)
    completed = in_user_project(user_project, ["-c", f"import importlib; print([importlib.import_module(name).WHO "
                                                     f"for name in {names!r}])"], strict=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == repr(["user"] * len(names))


def test_no_generic_name_of_ours_is_importable_from_elsewhere(installed_here, tmp_path):
    """From a directory of no project, through the install alone: `errors`, `data`, ... are not ours."""
    code = ("import importlib.util, json\n"
            f"specs = {{name: importlib.util.find_spec(name) for name in {GENERIC_NAMES!r}}}\n"
            "print(json.dumps({name: spec and spec.origin for name, spec in specs.items()}))")
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    completed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                               env=environment)
    assert completed.returncode == 0, completed.stderr[-2000:]
    origins = json.loads(completed.stdout)
    assert "errors" in origins and "cross_task_training" in origins
    # None, or a package of the same name that someone else installed: never a file of this checkout.
    ours = {name: origin for name, origin in origins.items() if origin and origin.startswith(ROOT)}
    assert ours == {}
    completed = subprocess.run([sys.executable, "-c", "from tawt import TAWT, TAWTTrainer; print(TAWT.__module__, "
                                "TAWTTrainer.__module__)"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                               env=environment)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == ["tawt.weighting", "tawt.hf_trainer"]


# Python started in the checkout with PYTHONPATH=. and the editable install's finder taken out of the import
# system: the modules can only come from the checkout, as on a machine where nothing was installed.
WITHOUT_THE_INSTALL = """
import importlib.util, os, runpy, sys
removed = [finder for finder in sys.meta_path if "editable" in getattr(finder, "__module__", "")]
sys.meta_path[:] = [finder for finder in sys.meta_path if finder not in removed]
sys.path_hooks[:] = [hook for hook in sys.path_hooks if "editable" not in getattr(hook, "__module__", "")]
sys.path_importer_cache.clear()
checkout = os.getcwd()
for name in ("tawt", "utils_cross_task", "run_single_task"):
    assert importlib.util.find_spec(name).origin.startswith(checkout), name
import tawt.testing.collect_results, tawt.data.process_data
sys.argv = ["run_single_task.py"] + sys.argv[1:]
runpy.run_path("run_single_task.py", run_name="__main__")
print("removed install finders:", len(removed))
"""


def test_a_checkout_runs_with_pythonpath_and_no_install(installed_here, tiny_data_dir, tiny_model_dir, tmp_path):
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    environment.update({"PYTHONPATH": ".", "OMP_NUM_THREADS": "1"})
    output = tmp_path / "single"
    completed = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_INSTALL, "--task", "pos", "--data_dir", tiny_data_dir,
         "--model_name_or_path", tiny_model_dir, "--output_dir", str(output), *TINY_TRAINING],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]
    # The install was there to take out (installed_here): what ran came through PYTHONPATH alone.
    assert "removed install finders: 1" in completed.stdout
    assert (output / "all_results.json").is_file()
