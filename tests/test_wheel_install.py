"""Issue 9, item 6: the built wheel, installed in a fresh venv, runs `smtpguard demo` outside the checkout.

The wheel is built from a copy of the checkout (no build/ left in the tree),
installed without its dependencies into a fresh venv (offline); those come
from this test's own environment through a .pth line, so what is imported
as `smtpguard` is the installed wheel and nothing else.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from .test_demo import demo_commands

ROOT = Path(__file__).resolve().parent.parent
SKIP = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*_cache", ".hypothesis", "*.db*", ".demo")


def run(*cmd: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def build_and_install(tmp: Path) -> Path:
    """A fresh venv holding only the wheel; returns its bin/ folder."""
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(*SKIP))
    run(sys.executable, "-m", "pip", "wheel", ".", "-w", tmp / "dist", "--no-deps", "-q", cwd=src)
    [wheel] = (tmp / "dist").glob("smtpguard-*.whl")
    fresh = tmp / "fresh"
    run(sys.executable, "-m", "venv", "--without-pip", fresh, cwd=tmp)
    python = fresh / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).strip())
    (site / "zz-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return fresh / "bin"


async def test_demo_from_the_installed_wheel_outside_the_checkout(tmp_path: Path) -> None:
    bin_ = await asyncio.to_thread(build_and_install, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = await asyncio.to_thread(
        run, bin_ / "python", "-c", "import smtpguard.demo as d; print(d.__file__); print(d.demo_list())", cwd=elsewhere
    )
    module, demo_list = where.split()
    assert module.startswith(str(tmp_path / "fresh")) and demo_list.startswith(str(tmp_path / "fresh"))
    assert (Path(demo_list).parent / "examples" / "team-server.toml").is_file()  # the examples travel too

    proc = await asyncio.create_subprocess_exec(
        bin_ / "smtpguard", "demo", "--folder", "demo", "--port", "0", cwd=elsewhere,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, commands = await demo_commands(proc, 60)
        assert commands[0].startswith(str(bin_ / "smtpguard")), commands
        sent = await asyncio.to_thread(
            subprocess.run, commands[0], shell=True, capture_output=True, text=True, cwd=elsewhere
        )
        assert sent.returncode == 0 and "250 2.0.0 Ok: stored as" in sent.stdout, sent
        assert len(list((elsewhere / "demo" / "mail").glob("*.eml"))) == 1
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
