"""The README runs: every fenced python and bash block, in order, as a user would type them.

The blocks become one Python script run by a fresh interpreter in a
temporary directory whose ``~/.terra`` is a new store; bash blocks run from
that script at their place (with a ``terra`` command on PATH, as
``pip install`` would provide), so later blocks see what earlier ones
stored. The bundled iris file is copied to ``data/iris.csv``, where the
example reads it. ``text`` blocks are not code. Skipped, by these explicit
rules only, and listed in the test output:

* ``pip install ...``: installs packages (the test runs the checkout itself);
* ``terra ui``: starts a server that runs until stopped (tests/test_ui.py
  and tests/test_ui_browser.py drive it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from terra import demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_RULES = [
    (re.compile(r"^pip install\b"), "installs packages"),
    (re.compile(r"^terra ui\b"), "starts a server that runs until stopped"),
]
_FENCE = re.compile(r"^```(\w*)\s*\n(.*?)^```\s*$", re.S | re.M)


def readme_blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, line number, code) of every fenced block."""
    return [(m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2)) for m in _FENCE.finditer(text)]


def bash_commands(code: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The commands of a bash block to run, and the (command, reason) pairs skipped by a rule."""
    run, skipped = [], []
    for line in code.splitlines():
        line = line.split("  #")[0].strip() if "  #" in line else line.strip()
        if not line or line.startswith("#"):
            continue
        for part in (p.strip() for p in re.split(r"&&|;", line)):
            reason = next((why for rule, why in SKIP_RULES if rule.search(part)), None)
            if reason:
                skipped.append((part, reason))
            elif part:
                run.append(part)
    return run, skipped


def test_every_readme_block_runs(tmp_path, python):
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        blocks = readme_blocks(f.read())
    langs = {lang for lang, _, _ in blocks}
    assert langs <= {"python", "bash", "text"}, f"blocks of unknown language in README.md: {langs}"
    assert sum(lang == "python" for lang, _, _ in blocks) >= 2 and sum(lang == "bash" for lang, _, _ in blocks) >= 3

    work, home, bindir = tmp_path / "work", tmp_path / "home", tmp_path / "bin"
    for d in (work / "data", home, bindir):
        d.mkdir(parents=True)
    shutil.copy(demo.IRIS_CSV, work / "data" / "iris.csv")
    shim = bindir / "terra"
    shim.write_text(f'#!/bin/sh\nexec "{python}" -m terra "$@"\n')
    shim.chmod(0o755)

    script = ["import subprocess, sys", "def _bash(cmd, line):",
              "    print(f'$ {cmd}', flush=True)",
              "    r = subprocess.run(['bash', '-e', '-c', cmd])",
              "    if r.returncode:",
              "        sys.exit(f'README.md line {line}: `{cmd}` exited with {r.returncode}')"]
    ran, skipped = 0, []
    for lang, line, code in blocks:
        script.append(f"# -- README.md line {line} ({lang})")
        if lang == "python":
            script.append(f"print('>>> README.md line {line}', flush=True)")
            script.append(code)
            ran += 1
        elif lang == "bash":
            commands, skips = bash_commands(code)
            skipped += [(line, c, why) for c, why in skips]
            script += [f"_bash({c!r}, {line})" for c in commands]
            ran += 1
    path = work / "readme_blocks.py"
    path.write_text("\n".join(script) + "\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRA_")}
    env.update(HOME=str(home), PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
               MPLBACKEND="Agg")
    r = subprocess.run([python, str(path)], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    for line, cmd, why in skipped:
        print(f"README.md line {line}: skipped `{cmd}` ({why})")
    assert r.returncode == 0, f"README block failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr
    # The demo and the examples really ran against the temporary home's store.
    assert (home / ".terra").is_dir()
    assert "pass 2:" in r.stdout and "(all from the cache)" in r.stdout
    why = r.stdout.split("$ terra why split_data\n", 1)[1]
    assert why.startswith("run ") and "(split_data)" in why.splitlines()[0]
    assert ran == len([b for b in blocks if b[0] != "text"])
    assert {why for _, _, why in skipped} <= {why for _, why in SKIP_RULES}
    assert any(c.startswith("terra ui") for _, c, _ in skipped)  # shown in the README, skipped by its rule


def test_skip_rules_are_narrow():
    run, skipped = bash_commands("pip install . && python -m terra.demo\nterra ls  # list\nterra ui --port 0\n")
    assert run == ["python -m terra.demo", "terra ls"]
    assert [c for c, _ in skipped] == ["pip install .", "terra ui --port 0"]
