"""The formula's version is written in FORMULA and pyproject.toml: they agree, and
CHANGELOG.md has a section for it."""

import re

import support
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None


def _pyproject_version():
    text = (support.REPO / "pyproject.toml").read_text()
    if tomllib is not None:
        return tomllib.loads(text)["project"]["version"]
    return re.search(r'^version = "([^"]+)"$', text, re.M).group(1)


def test_formula_and_pyproject_versions_agree():
    formula = yaml.safe_load((support.REPO / "FORMULA").read_text())
    assert str(formula["version"]) == _pyproject_version()


def test_changelog_has_a_section_for_the_version():
    headings = re.findall(r"^## (\S+)", (support.REPO / "CHANGELOG.md").read_text(), re.M)
    assert headings and headings[0] == _pyproject_version(), headings
