"""Execute tutorial notebooks in place and store outputs fit for the repository.

Run:  python tutorials/execute.py tutorials/*.ipynb   (what ``make notebooks`` does)

Two things in raw outputs do not belong in a repository:

* progress bars: tqdm redraws a bar with carriage returns, and every redraw arrives as its own
  stream output (hundreds per notebook). Streams are replayed here as a terminal would show
  them, so only each bar's final state remains (and nothing of a bar that cleared itself);
* machine paths: a warning names the file that raised it, a traceback its frames. Paths under
  the Python installation, the repository and the home directory are written relative to them.

Everything else (text, plots, warnings, errors) is kept as the kernel produced it; the kernel's
per-cell timestamps are dropped.
"""

from __future__ import annotations

import argparse
import os
import re
import site
import sys
import sysconfig
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPOSITORY = Path(__file__).resolve().parent.parent


def terminal_text(text: str) -> str:
    """``text`` as a terminal leaves it: a carriage return moves back to the line's start, and
    what follows overwrites; lines left blank by overwriting (a cleared bar) are dropped."""
    lines = []
    for raw in text.split("\n"):
        line: list[str] = []
        cursor = 0
        for char in raw:
            if char == "\r":
                cursor = 0
                continue
            if cursor < len(line):
                line[cursor] = char
            else:
                line.append(char)
            cursor += 1
        shown = "".join(line).rstrip()
        if shown or "\r" not in raw:
            lines.append(shown)
    return "\n".join(lines)


def _path_replacements() -> list[tuple[str, str]]:
    """(absolute prefix, what to show instead), longest first so the most specific one wins."""
    prefixes = {sysconfig.get_paths()["purelib"]: "<site-packages>", sys.prefix: "<python>"}
    prefixes.update({path: "<site-packages>" for path in site.getsitepackages()})
    prefixes.update({str(REPOSITORY): "<repository>", os.path.expanduser("~"): "~"})
    return sorted(((p, shown) for p, shown in prefixes.items() if len(p) > 1), key=lambda kv: -len(kv[0]))


_KERNEL_CELL = re.compile(r"/tmp/ipykernel_\d+/\d+\.py")  # the file a cell runs as


def without_paths(text: str, replacements: list[tuple[str, str]]) -> str:
    for prefix, shown in replacements:
        text = text.replace(prefix, shown)
    return _KERNEL_CELL.sub("<cell>", text)


def clean_outputs(cell: nbformat.NotebookNode, replacements: list[tuple[str, str]]) -> None:
    """Merge consecutive stream outputs of one stream, replay them, and remove paths."""
    outputs: list[nbformat.NotebookNode] = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            previous = outputs[-1] if outputs else None
            if previous is not None and previous.output_type == "stream" and previous.name == output.name:
                previous.text += output.text
                continue
        outputs.append(output)
    kept = []
    for output in outputs:
        if output.output_type == "stream":
            output.text = without_paths(terminal_text(output.text), replacements)
            if not output.text.strip():
                continue
            output.text = output.text.rstrip("\n") + "\n"
        elif output.output_type == "error":
            output.traceback = [without_paths(line, replacements) for line in output.traceback]
        elif "text/plain" in output.get("data", {}):
            output.data["text/plain"] = without_paths(output.data["text/plain"], replacements)
        kept.append(output)
    cell.outputs = kept


def execute(path: Path, timeout: int) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    tidy(notebook)
    nbformat.write(notebook, path)


def tidy(notebook: nbformat.NotebookNode) -> None:
    """Clean every code cell's outputs and drop the kernel's timestamps (noise in a diff)."""
    replacements = _path_replacements()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.metadata.pop("execution", None)
            clean_outputs(cell, replacements)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        print(f"executing {path}", flush=True)
        execute(path, args.timeout)


if __name__ == "__main__":
    main()
