"""The notebooks in notebooks/ are committed without outputs and run top to bottom.

Each notebook checks its own results with `assert` cells (a fill-in from the vocabulary,
accuracy above chance, compiled beam search equal to the host loop, ...). A failing cell
makes nbclient raise `CellExecutionError` with the cell's source and traceback.
"""

import json
import os
import sys
import time

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
EXPECTED = [
    "01_quickstart.ipynb",
    "02_finetune_sentence_pair_classifier.ipynb",
    "03_unilm_seq2seq_beam_search.ipynb",
    "04_attention_variants.ipynb",
]
NOTEBOOKS = sorted(name for name in os.listdir(NOTEBOOK_DIR) if name.endswith(".ipynb"))


def stripping_problems(notebook, name):
    """Every leftover of a run in `notebook` (raw JSON dict), as 'name: cell k ...' strings."""
    problems = []
    if "widgets" in notebook.get("metadata", {}):
        problems.append(f"{name}: notebook metadata has 'widgets'")
    for k, cell in enumerate(notebook["cells"]):
        first_line = "".join(cell["source"]).split("\n")[0][:60]
        where = f"{name}: cell {k} ({first_line!r})"
        if "execution" in cell.get("metadata", {}):
            problems.append(f"{where} has execution timing metadata")
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"{where} has {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"{where} has execution_count {cell['execution_count']}")
    return problems


def test_the_four_notebooks_exist():
    assert NOTEBOOKS == EXPECTED


def test_stripping_check_sees_outputs_and_counts():
    """The check below is only worth something if it catches an executed cell."""
    cell = {"cell_type": "code", "source": "x = 1", "metadata": {}}
    executed = {"output_type": "execute_result", "data": {"text/plain": "1"}, "metadata": {}}
    notebook = {"metadata": {"widgets": {}}, "cells": [dict(cell, outputs=[executed])]}
    notebook["cells"].append(dict(cell, outputs=[], execution_count=3))
    problems = stripping_problems(notebook, "x.ipynb")
    assert len(problems) == 3
    assert "cell 0 ('x = 1') has 1 output(s)" in problems[1]
    assert "cell 1 ('x = 1') has execution_count 3" in problems[2]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_stripped_and_valid(name):
    path = os.path.join(NOTEBOOK_DIR, name)
    with open(path, encoding="utf-8") as file:
        notebook = json.load(file)
    problems = stripping_problems(notebook, name)
    assert not problems, "clear the outputs before committing:\n" + "\n".join(problems)
    nbformat.validate(nbformat.reads(json.dumps(notebook), as_version=4))
    assert any(cell["cell_type"] == "markdown" for cell in notebook["cells"])


def use_this_python_as_kernel(tmp_path, monkeypatch):
    """Make kernel 'python3' start sys.executable, whatever kernelspecs the machine has.

    A 'python3' kernelspec in the user's or the system's Jupyter path could point at
    another interpreter. JUPYTER_PATH comes first in the search, so a spec written
    there by ipykernel (argv[0] = sys.executable) wins.
    """
    jupyter_path = tmp_path / "jupyter"
    write_kernel_spec(jupyter_path / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] == sys.executable, spec.argv


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    use_this_python_as_kernel(tmp_path, monkeypatch)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)  # the default: TensorFlow
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    workdir = tmp_path / "cwd"  # the kernel's working directory: nothing lands in the repo
    workdir.mkdir()
    notebook = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
    before = sorted(os.listdir(NOTEBOOK_DIR))
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the failing cell
    print(f"{name} ran in {time.perf_counter() - start:.1f} s")
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)
    errors = [o for cell in code_cells for o in cell.outputs if o.output_type == "error"]
    assert not errors
    assert sorted(os.listdir(NOTEBOOK_DIR)) == before
