"""`gswarm signals check`, and a worker command refusing a bad rules file, without a broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GSWARM = Path(sys.executable).parent / "gswarm"


def gswarm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GSWARM), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, check=False)


def test_check_accepts_the_default_rules() -> None:
    done = gswarm("signals", "check", str(Path(__file__).parents[1] / "signals" / "rules.toml"))
    assert done.returncode == 0, done.stderr
    assert "6 rules ok" in done.stdout


def test_check_refuses_a_bad_file_in_one_line_with_file_line_and_reason(tmp_path: Path
                                                                         ) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text('[[rule]]\nid = "jump"\nkind = "move"\ndelta = 10\nwithin_s = 60\n')
    done = gswarm("signals", "check", str(bad))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == f"gswarm: error: {bad}:4: rule 'jump': delta must be in (0, 1]\n"
    missing = gswarm("signals", "check", str(tmp_path / "none.toml"))
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"gswarm: error: {tmp_path / 'none.toml'}: cannot read")


def test_a_worker_command_refuses_a_bad_rules_file_before_anything_starts(tmp_path: Path
                                                                          ) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text('[[rule]]\nid = "x"\nkind = "nope"\n')
    # no broker at this address: the rules are checked first
    done = gswarm("worker", env={"GSWARM_SIGNALS_RULES": str(bad),
                                 "GSWARM_BROKER": "127.0.0.1:1", "GSWARM_KAFKA_TIMEOUT_S": "2"})
    assert done.returncode == 1
    assert done.stderr.startswith(f"gswarm: error: {bad}:3: rule 'x': kind must be one of")
