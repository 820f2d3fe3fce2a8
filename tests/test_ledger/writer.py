"""A ledger writer process for the concurrency and crash tests.

    python tests/test_ledger/writer.py URL COUNT TAG

Appends COUNT entries one at a time (0 = forever) and prints ``<index> <payload>`` after
each append has returned, flushing, so a parent knows exactly which appends succeeded.
"""

from __future__ import annotations

import sys

from ledger import open_ledger


def main() -> None:
    url, count, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open_ledger(url) as log:
        n = 0
        while count == 0 or n < count:
            payload = f"{tag}:{n}"
            entry = log.append("test", subject={"name": tag}, payload_digest=payload, actor=tag)
            sys.stdout.write(f"{entry.index} {payload}\n")
            sys.stdout.flush()
            n += 1


if __name__ == "__main__":
    main()
