"""Write one benchmark's figures into ``docs/benchmarks.md``.

Each benchmark script owns one section of the file, delimited by HTML comment markers, and
replaces only that section, so scripts can be rerun in any order. Every section records the exact
command that produced it and the machine it ran on.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Figures written by the scripts in `benchmarks/`; each section names the command that produced it.\n"
    "Rerun a script to refresh its section. Timings are medians unless a section says otherwise.\n"
)


#: CPU flags that make bf16 matmuls native (AVX512-BF16, AMX); without them bf16 autocast is emulated and slow.
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def machine_summary() -> str:
    """A one-line description of the machine: CPU model and its bf16 instructions, cores, torch version, threads."""
    import torch

    cpu = platform.processor() or platform.machine()
    isa = ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        for line in lines:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
        # the instructions that decide whether bf16 autocast is fast on this CPU (machines of one name differ)
        isa = " (" + ", ".join(f"{f}: {'yes' if f in flags else 'no'}" for f in _BF16_FLAGS) + ")"
    except OSError:
        pass
    return (
        f"{cpu}{isa}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}"
    )


def write_section(name: str, body: str, *, command: str | None = None, doc: Path = DOC) -> None:
    """Replace (or append) the section ``name`` of ``docs/benchmarks.md`` with ``body``.

    ``command`` defaults to the command line that is running now.
    """
    command = command or "python " + " ".join(sys.argv)
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    block = (
        f"{start}\n## {name}\n\nCommand: `{command}`  \nMachine: {machine_summary()}\n\n{body.strip()}\n{end}"
    )
    text = doc.read_text() if doc.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
