"""Run one atheris (libFuzzer) harness: ``python fuzz/run.py TARGET [libFuzzer flags]``.

    $ make fuzz                                   # every target, FUZZ_SECONDS each
    $ .venv/bin/python fuzz/run.py pickle -max_total_time=600 fuzz/corpus/pickle

Targets are in :mod:`targets`; seeds for each are written to ``fuzz/corpus/<target>/`` on
the first run (real files made by modelguard itself), so the fuzzer starts from valid input.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

with atheris.instrument_imports(include=["modelguard", "ledger", "targets"]):
    import targets


def write_seeds(target: str, corpus: Path) -> None:
    """Valid inputs made with modelguard's own writers, so mutations start deep."""
    from seeds import SEEDS

    corpus.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(SEEDS.get(target, lambda: [])()):
        (corpus / f"seed-{i}").write_bytes(data)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        sys.exit(f"usage: run.py TARGET [libFuzzer flags]; targets: {sorted(targets.TARGETS)}")
    target = sys.argv.pop(1)
    corpus = HERE / "corpus" / target
    if not any(not a.startswith("-") for a in sys.argv[1:]):
        write_seeds(target, corpus)
        sys.argv.append(str(corpus))
    atheris.Setup(sys.argv, targets.TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
