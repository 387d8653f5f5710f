"""The compiled kernels (``csrc/``): one extension, built on first use once per machine type, and loaded.

- the decode step (``decode_step.cpp``): a decode step of the tiny models is a few small matmuls and ~200 small
  tensor operations between them, each costing more than its arithmetic (issued from C++ instead of Python they
  cost nearly as much: measured 1.1-1.25x faster, so it is the operations that must go, not the interpreter).
  The C++ step does the rest as loops over the rows, its matmuls through ``packed_gemm.cpp`` (a small-row matmul
  against weights laid out once per sampling call, which the prefill uses too) or ATen's mm.
  ``s2lpo.rollout.decode.FastDecoder`` uses it for fp32 decode steps on the CPU.
- the training ops (``train_ops.cpp``, ``train_attention.cpp``): RMSNorm, SiLU·up and a layer's attention block,
  forward and backward, for ``s2lpo.rollout.train_kernel``'s autograd functions (fp32 training passes on the CPU).

All loops run on torch's intra-op threads (torch's own OpenMP runtime, so no second thread pool spins beside it).
It is built with ``torch.utils.cpp_extension`` (ninja and the machine's C++ compiler, ~80 s on 2 cores) for this
CPU (``-march=native``) under ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), in a folder whose
name digests the sources, the flags, the CPU's instruction sets, the Python version and the torch install: a home
directory shared by nodes of different CPUs, or by several venvs, keeps a build for each. ``s2lpo build-kernel``
(run by ``make setup``) builds it ahead of time. Where it cannot be built (no compiler), :func:`kernels` returns
None and says why once (a warning): sampling and training take the Python operations, same results, slower.
``S2LPO_KERNELS=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from filelock import FileLock

log = logging.getLogger(__name__)

CSRC = Path(__file__).parent / "csrc"
SOURCES = tuple(sorted(CSRC.glob("*.cpp")))  # one extension: bindings.cpp defines its module
CFLAGS = ("-O3", "-march=native", "-fopenmp")
LDFLAGS = ("-fopenmp",)  # resolves to torch's own libgomp.so.1, loaded already: one OpenMP runtime in the process


@dataclass(frozen=True)
class Build:
    module: ModuleType | None
    directory: Path
    error: str = ""  # why there is no module (the compiler's output, where it ran)

    def reason(self) -> str:
        """The error's last line and the build folder."""
        last = self.error.strip().splitlines()[-1] if self.error.strip() else "unknown"
        return f"{last} (build folder {self.directory})"


def cpu_features() -> str:
    """The CPU's instruction-set flags (``/proc/cpuinfo``), sorted, space-separated."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    return platform.processor() or platform.machine()


def build_name() -> str:
    import torch

    # torch's headers are included from (and its libraries linked from) the venv: a build per torch install,
    # or two venvs would rebuild one folder in turn, under a library another process has loaded
    sources = [p.read_text() for p in sorted(CSRC.glob("*.[ch]*"))]  # the headers too
    key = "\n".join([*sources, " ".join(CFLAGS + LDFLAGS), cpu_features(), platform.machine(), sys.version,
                     torch.__version__, str(Path(torch.__file__).resolve().parent)])
    return f"s2lpo_kernels_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def extensions_root() -> Path:
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())


@contextlib.contextmanager
def _ninja_on_path():
    """torch runs ``ninja`` from PATH; the ``ninja`` package's binary lies beside the venv's Python, which a
    caller need not have on PATH."""
    old = os.environ.get("PATH", "")
    try:
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, old])
    except ImportError:
        pass
    try:
        yield
    finally:
        os.environ["PATH"] = old


def build(root: Path | None = None) -> Build:
    """Build (or find built) and load the kernels under ``root`` (default :func:`extensions_root`)."""
    from torch.utils.cpp_extension import load

    name = build_name()
    root = root or extensions_root()
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    # torch's own build lock is a file that a killed build leaves behind, and every later load waits on it for
    # good; ours is released by the OS with the process, and while we hold it no other s2lpo process builds here
    with FileLock(str(root / f".{name}.lock")):
        (directory / "lock").unlink(missing_ok=True)
        try:
            with _ninja_on_path():
                # (copies: load appends torch's own link flags to the list it is given)
                module = load(name, [str(p) for p in SOURCES], extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
                              build_directory=str(directory), verbose=False)
        except (RuntimeError, OSError, ImportError, subprocess.CalledProcessError) as e:
            return Build(None, directory, f"{type(e).__name__}: {str(e).strip()}")
    return Build(module, directory)


@functools.cache
def kernels() -> ModuleType | None:
    """The compiled kernels of this process (the decode step and the training ops; built on the first call), or
    None where they are off or cannot be built (a warning says why, once)."""
    if os.environ.get("S2LPO_KERNELS", "1").lower() in ("0", "false", "off", "no"):
        return None
    if platform.system() != "Linux":
        log.warning("the compiled kernels are built on Linux only: sampling and training take the Python operations")
        return None
    b = build()
    if b.module is None:
        log.warning("the compiled kernels could not be built (%s): sampling and training take the Python "
                    "operations, the same results, slower; `s2lpo build-kernel` shows the compiler's output",
                    b.reason())
    return b.module
