"""``ledger export-tiles`` on a large log: time and peak memory at two sizes, side by side.

    $ .venv/bin/python bench/ledger_tiles.py                      # 1,000,000 entries
    $ .venv/bin/python bench/ledger_tiles.py --entries 100000     # quick look

Builds the ledger in bulk (as bench/ledger_gate.py does), signs a checkpoint of the whole
log and one of its first tenth, then exports each in a fresh process (so its peak RSS is its
own: VmHWM, read by the exporting process itself): the tenth, the whole log, and the whole log again (an
incremental export with nothing new: every tile read back and compared). Streaming export
keeps memory flat, so the RSS ratio whole / tenth should stay near 1 while time grows ~10x.
Finally the export is audited with ``verify_tiles``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ledger_gate import build

from ledger import NoteSigner, open_ledger
from ledger.note import Checkpoint, sign_note
from ledger.tiles import verify_tiles

EXPORT = """
import sys, time
from pathlib import Path
from ledger import NoteSigner, open_ledger
from ledger.tiles import export_tiles
url, key, note, out = sys.argv[1:5]
signer = NoteSigner.from_key_string(Path(key).read_text())
wall, cpu = time.perf_counter(), time.process_time()
with open_ledger(url, create=False) as log:
    report = export_tiles(log, Path(out), signer, checkpoint_note=Path(note).read_text())
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
# VmHWM: this process's peak RSS (per address space, so it starts afresh at exec)
peak = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]
print(wall, cpu, int(peak) / 1024, report.size, report.written_count, report.unchanged)
"""


def export(url: str, key: Path, note: Path, out: Path) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MiB, what it wrote) of one export, in a fresh process."""
    printed = subprocess.run(
        [sys.executable, "-c", EXPORT, url, str(key), str(note), str(out)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    wall, cpu, rss = (float(x) for x in printed[:3])
    return wall, cpu, rss, "size {} written {} unchanged {}".format(*printed[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="Where the files go.")
    args = parser.parse_args()
    print(f"# export-tiles benchmark, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        url = f"sqlite:///{work / 'ledger.db'}"
        seconds = build(url, args.entries, "bench")
        print(f"build {args.entries:,} entries (bulk insert): {seconds:.1f} s")
        signer = NoteSigner.generate("bench.example/gate")
        key = work / "note.key"
        key.write_text(signer.to_key_string())
        tenth = args.entries // 10
        notes = {}
        with open_ledger(url) as log:
            for size in (tenth, args.entries):
                note = sign_note(Checkpoint(log.origin, size, log.root(size)).to_text(), [signer])
                notes[size] = work / f"cp-{size}"
                notes[size].write_text(note)
        runs = [
            (f"export {tenth:,} entries (new tree)", tenth, work / "small"),
            (f"export {args.entries:,} entries (new tree)", args.entries, work / "large"),
            (f"re-export {args.entries:,} entries (nothing new)", args.entries, work / "large"),
        ]
        results = []
        for label, size, out in runs:
            wall, cpu, rss, printed = export(url, key, notes[size], out)
            results.append((wall, cpu, rss))
            print(f"{label:<44} {wall:8.2f} s wall {cpu:8.2f} s CPU {rss:8.1f} MiB peak RSS"
                  f"  ({printed})")  # fmt: skip
        (_, small_cpu, small_rss), (_, large_cpu, large_rss) = results[:2]
        print(f"ratios whole/tenth: CPU {large_cpu / small_cpu:.1f}x, peak RSS"
              f" {large_rss / small_rss:.2f}x")  # fmt: skip
        started = time.process_time()
        report = verify_tiles(work / "large", [signer.verifier()])
        print(f"verify_tiles of the export: ok={report.ok}, {report.tiles_checked} tiles,"
              f" {time.process_time() - started:.1f} s CPU")  # fmt: skip
        print(f"# load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
