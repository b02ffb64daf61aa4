"""MkDocs hook: publish benchmarks/results/results.png with the site.

The chart stays where the benchmark suite writes it; the site picks it up at
build time instead of keeping a second copy under docs/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files


def on_files(files: Files, config: Any) -> Files:
    results = Path(config.config_file_path).parent / "benchmarks" / "results"
    if (results / "results.png").exists():
        files.append(File("results.png", str(results), config.site_dir, config.use_directory_urls))
    return files
