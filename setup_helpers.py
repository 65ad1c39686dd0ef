"""Build decisions of ``setup.py``, importable without building anything (tests import it).

* Whether the CUDA kernels are compiled (:func:`want_cuda`): ``FORCE_CUDA=0`` (or
  ``DCN_DET_CPU_ONLY=1``) builds the CPU kernels only, ``FORCE_CUDA=1`` compiles the CUDA
  kernels even when torch cannot see a GPU or nvcc is not where torch looks; unset = CUDA when
  torch is a CUDA build and a CUDA toolkit (``CUDA_HOME``) is found.
* For which GPU architectures (:func:`arch_list_for_build`): ``TORCH_CUDA_ARCH_LIST`` when set;
  else torch's own choice, the visible GPUs; with no GPU visible (a build container, a login
  node) torch's choice fails with an ``IndexError``, so :data:`DEFAULT_ARCHES` is used instead,
  filtered to what the nvcc version compiles.
* The installed commands (:data:`CONSOLE_SCRIPTS`).
"""
import os
import re
import subprocess
from typing import Mapping, Optional, Sequence, Tuple

# The installed commands: name -> "module:function". Each function is the ``run`` of a module
# in dcn_det/tools/, which tools/X.py also runs.
CONSOLE_SCRIPTS = {
    "dcn-train": "dcn_det.tools.train:run",
    "dcn-test": "dcn_det.tools.test:run",
    "dcn-export": "dcn_det.tools.export:run",
    "dcn-infer": "dcn_det.tools.infer:run",
    "dcn-make-synthetic": "dcn_det.tools.make_synthetic:run",
    "dcn-check-dataset": "dcn_det.tools.check_dataset:run",
    "dcn-convert-weights": "dcn_det.tools.convert_weights:run",
    "dcn-ablate": "dcn_det.tools.ablate:run",
    "dcn-visualize-offsets": "dcn_det.tools.visualize_offsets:run",
    "dcn-analyze-offsets": "dcn_det.tools.analyze_offsets:run",
}

# Volta to Hopper: the data-centre and desktop GPUs of the last generations; PTX of the newest
# one lets the driver JIT-compile for later GPUs.
DEFAULT_ARCHES: Tuple[str, ...] = ("7.0", "7.5", "8.0", "8.6", "8.9", "9.0")

# arch -> (first nvcc release that compiles it, first release that no longer does).
_ARCH_NVCC_RANGE = {
    "7.0": ((9, 0), (13, 0)),  # CUDA 13 dropped Maxwell, Pascal and Volta
    "7.5": ((10, 0), None),
    "8.0": ((11, 0), None),
    "8.6": ((11, 1), None),
    "8.9": ((11, 8), None),
    "9.0": ((11, 8), None),
}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def env_flag(env: Mapping[str, str], name: str) -> Optional[bool]:
    """``env[name]`` as a boolean, or None when unset or empty.

    Raises:
        ValueError: the value is not one of 1/0, true/false, yes/no, on/off (the message
            names the variable and its value).
    """
    value = env.get(name, "").strip().lower()
    if not value:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"environment variable {name}={env[name]!r}: expected 1 or 0 "
                     "(or true/false, yes/no, on/off)")


def want_cuda(env: Mapping[str, str], torch_cuda: Optional[str],
              cuda_home: Optional[str]) -> bool:
    """True when the CUDA kernels are to be compiled.

    Args:
        env: the environment (``os.environ``).
        torch_cuda: ``torch.version.cuda`` (None for a CPU build of torch).
        cuda_home: ``torch.utils.cpp_extension.CUDA_HOME`` (None when no toolkit was found).

    Raises:
        ValueError: a flag has an unknown value, or ``FORCE_CUDA=1`` together with
            ``DCN_DET_CPU_ONLY=1``.
    """
    force = env_flag(env, "FORCE_CUDA")
    cpu_only = env_flag(env, "DCN_DET_CPU_ONLY")
    if cpu_only and force:
        raise ValueError("FORCE_CUDA=1 and DCN_DET_CPU_ONLY=1 contradict each other: "
                         "unset one of them")
    if cpu_only or force is False:
        return False
    if force:
        return True
    return torch_cuda is not None and cuda_home is not None


def parse_nvcc_version(text: str) -> Optional[Tuple[int, int]]:
    """``(major, minor)`` from the output of ``nvcc --version`` ("... release 13.0, V13.0.88")."""
    m = re.search(r"release (\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def nvcc_version(cuda_home: Optional[str]) -> Optional[Tuple[int, int]]:
    """The version of ``CUDA_HOME/bin/nvcc``, or None when it cannot be run."""
    if not cuda_home:
        return None
    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvcc_version(out)


def default_arch_list(nvcc: Optional[Tuple[int, int]],
                      arches: Sequence[str] = DEFAULT_ARCHES) -> str:
    """``TORCH_CUDA_ARCH_LIST`` for a build without a visible GPU: ``arches`` that ``nvcc``
    compiles, ``;``-separated, the last one with ``+PTX``. An unknown nvcc version keeps all.

    Raises:
        ValueError: nvcc compiles none of ``arches`` (the message names the version).
    """
    kept = []
    for arch in arches:
        first, gone = _ARCH_NVCC_RANGE.get(arch, (None, None))
        if nvcc is not None and ((first and nvcc < first) or (gone and nvcc >= gone)):
            continue
        kept.append(arch)
    if not kept:
        raise ValueError(f"nvcc {nvcc[0]}.{nvcc[1]} compiles none of the architectures "
                         f"{';'.join(arches)}: set TORCH_CUDA_ARCH_LIST")
    return ";".join(kept[:-1] + [kept[-1] + "+PTX"])


def arch_list_for_build(env: Mapping[str, str], gpu_count: int,
                        nvcc: Optional[Tuple[int, int]]) -> Optional[str]:
    """The ``TORCH_CUDA_ARCH_LIST`` to set for a CUDA build, or None to leave torch's choice.

    Args:
        env: the environment (``os.environ``).
        gpu_count: ``torch.cuda.device_count()``.
        nvcc: the nvcc version (:func:`nvcc_version`).

    Raises:
        ValueError: ``TORCH_CUDA_ARCH_LIST=native`` with no GPU visible.
    """
    given = env.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if gpu_count > 0:
        return None
    if given == "native":
        raise ValueError("TORCH_CUDA_ARCH_LIST=native but no GPU is visible: name the "
                         "architectures (e.g. TORCH_CUDA_ARCH_LIST=9.0) or build on a GPU machine")
    if given:
        return None
    return default_arch_list(nvcc)
