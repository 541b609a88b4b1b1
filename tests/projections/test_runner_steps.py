"""The runner's commit path is numbered in its docstring and marked ``# Step N.`` in the code:
both must name the same steps, so a reader can follow one into the other."""

from __future__ import annotations

import inspect
import re

import projections.runner as runner


def test_every_documented_step_is_marked_in_the_code_and_no_other() -> None:
    source = inspect.getsource(runner)
    doc = runner.__doc__ or ""
    documented = [int(n) for n in re.findall(r"^(\d+)\. ", doc, re.MULTILINE)]
    marked = {int(n) for n in re.findall(r"# Step (\d+)[. ]", source)}
    assert documented == list(range(1, len(documented) + 1)), documented
    assert marked == set(documented), (sorted(marked), documented)
