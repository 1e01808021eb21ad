"""tools/install.py: pip's settings handed to uv, checked against hand-written flag lists, and a real install."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("install_tool", REPO / "tools" / "install.py")
install_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install_tool)

# What `pip config list` printed on the CI machine, plus an [install] section and a PIP_* line.
PIP_CONFIG_LIST = """\
:env:.find-links='/opt/env-wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels'
global.index-url='https://global.example/simple'
install.index-url='https://install.example/simple'
"""


def test_config_list_is_read_with_install_over_global_and_env_lines_skipped():
    config = install_tool.parse_pip_config_list(PIP_CONFIG_LIST)
    assert config == {
        "cert": "/etc/ssl/certs/ca-certificates.crt",
        "constraint": "/etc/xdg/pip/constraints.txt",
        "extra-index-url": "file:///opt/pypi/simple file:///opt/pypi-more/simple",
        "find-links": "/opt/wheels",
        "index-url": "https://install.example/simple",
    }


def test_environment_overrides_config_and_lists_become_one_flag_each():
    config = install_tool.parse_pip_config_list(PIP_CONFIG_LIST)
    environ = {"PIP_FIND_LINKS": "/opt/env-wheels /opt/more-wheels", "PIP_CONSTRAINT": "/c.txt"}
    flags = install_tool.uv_flags(install_tool.pip_settings(environ, config))
    assert flags == [
        "--index-strategy", "unsafe-best-match",
        "--index-url", "https://install.example/simple",
        "--extra-index-url", "file:///opt/pypi/simple",
        "--extra-index-url", "file:///opt/pypi-more/simple",
        "--find-links", "/opt/env-wheels",
        "--find-links", "/opt/more-wheels",
        "--constraint", "/c.txt",
    ]


def test_no_settings_gives_only_the_index_strategy():
    assert install_tool.uv_flags(install_tool.pip_settings({}, {})) == ["--index-strategy", "unsafe-best-match"]


def _make_package(root: Path) -> Path:
    package = root / "tinypkg"
    (package / "tinypkg").mkdir(parents=True)
    (package / "tinypkg" / "__init__.py").write_text("ANSWER = 42\n")
    (package / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tinypkg"\nversion = "1.0"\n'
    )
    return package


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_installs_a_local_package_into_another_environment(tmp_path, installer):
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=installer == "pip").create(target)
    python = str(target / "bin" / "python")
    package = _make_package(tmp_path)
    extra = ["--pip-only"] if installer == "pip" else []
    # The uv path runs uv from this environment (`sys.executable -m uv`) against the target's interpreter.
    runner = sys.executable if installer == "uv" else python
    command = [runner, str(REPO / "tools" / "install.py"), "--python", python, *extra, str(package)]
    subprocess.run(command, check=True, timeout=300)
    out = subprocess.run([python, "-c", "import tinypkg; print(tinypkg.ANSWER)"], capture_output=True, text=True)
    assert out.stdout.strip() == "42"
