"""A small serial device: prints a reading line every ``--every`` seconds on a port (a pty end).

Line n is ``humidity=<40 + n % 10> temperature=21.5 status=ok`` (``status`` is not a declared
value and must be ignored); every fourth line is ``ERR no reading`` (must be counted, not stored).
"""

from __future__ import annotations

import argparse
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("port")
parser.add_argument("--every", type=float, default=0.2)
args = parser.parse_args()
fd = os.open(args.port, os.O_WRONLY | os.O_NOCTTY)
n = 0
while True:
    line = "ERR no reading" if n % 4 == 3 else f"humidity={40 + n % 10} temperature=21.5 status=ok"
    os.write(fd, (line + "\r\n").encode())
    n += 1
    time.sleep(args.every)
