"""Memory-lean loading of saved model folders: build on the meta device, read each tensor once, in the target dtype.

Why (issue 9, measured on the 2-core CPU machine): loading the SD 2.1-size HonestFace by building it with random
weights, reading `frozen.safetensors` whole and casting afterwards held three copies of the UNet at the peak (random
init, the fp32 file, the cast) and spent seconds on a random initialisation that is overwritten at once. Here:

- `empty_weights()` builds modules whose weights all come from a file on the meta device (accelerate's
  `init_empty_weights`, buffers stay real), so nothing is allocated or initialised before the file is read;
- `read_safetensors(path, dtype)` reads a safetensors file tensor by tensor, casting floating tensors to `dtype`
  as it goes. safetensors maps the file into memory and the mapped pages count in the process's resident memory
  while the file is open, so the file is re-opened every `chunk_bytes` of reading: the peak is the loaded (cast)
  state plus about one chunk, not plus the whole file (measured: a 2 GiB fp32 file read as bf16 peaked at 3.5 GiB
  RSS with one open, 1.75 GiB re-opening; the 6.5 GB SD 2.1-size HonestFace file left 0.5 GiB more resident than
  its 3.1 GiB of bf16 tensors with 64 MiB chunks, 0.16 GiB with 16 MiB (2.3 s), none re-opening per tensor (7 s));
  a tensor already in `dtype` is copied out of the mapping: safetensors hands out views of the mapped file, which
  kept the whole file mapped and its pages resident next to the model (measured 2026-12-07: the 1.9 GB bf16 OSDFace
  folder peaked at 4.5 GiB with views, 3.4 GiB with copies, through one 512 px restoration);
- `load_into(module, state, ..., assign=True)` adopts the read tensors as the module's parameters (no copy);
- `release_free_memory()` hands the heap the reading freed back to the system (glibc `malloc_trim`): without it the
  process kept ~0.7 GiB of freed read buffers resident after loading the SD 2.1-size model.
- `reuse_large_allocations()` (after loading, on a CPU) lets the heap keep large freed buffers for the next call
  instead of mapping them fresh each time (see its docstring for what it gains and costs).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@contextlib.contextmanager
def empty_weights(enabled: bool = True) -> Iterator[None]:
    """Inside: parameters of newly built modules live on the meta device (no memory, no initialisation)."""
    if not enabled:
        yield
        return
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        yield


def stream_safetensors(path: str | os.PathLike, prefix: str = "", chunk_bytes: int = 16 << 20
                       ) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) for the tensors of a safetensors file whose name starts with `prefix`, in file order, the file
    re-opened every `chunk_bytes` read. The tensors are views of the mapped file: use each (copy or cast it) and
    drop it, so that each chunk's mapping is released once its tensors are gone (see the module docstring)."""
    from safetensors import safe_open

    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    with safe_open(path, framework="pt") as f:
        keys = [k for k in f.keys() if k.startswith(prefix)]  # noqa: SIM118 (safe_open is not iterable)
    start = 0
    while start < len(keys):
        read = 0
        with safe_open(path, framework="pt") as f:
            while start < len(keys) and (read == 0 or read < chunk_bytes):
                key = keys[start]
                t = f.get_tensor(key)
                read += t.numel() * t.element_size()
                start += 1
                yield key, t
                del t


def read_safetensors(path: str | os.PathLike, dtype: torch.dtype | None = None, prefix: str = "",
                     chunk_bytes: int = 16 << 20, channels_last: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file whose name starts with `prefix` (kept in the key), floating ones cast to
    `dtype` (None: as stored), each in its own memory; the file is re-opened every `chunk_bytes` read (see the
    module docstring). `channels_last`: 4-D floating tensors (convolution weights) come out channels-last, in the
    same copy (`module.to(memory_format=torch.channels_last)` afterwards would copy them again)."""
    out: dict[str, torch.Tensor] = {}
    for key, t in stream_safetensors(path, prefix, chunk_bytes):
        fmt = torch.channels_last if channels_last and t.ndim == 4 and t.is_floating_point() else torch.contiguous_format
        if dtype is not None and t.dtype in FLOAT_DTYPES and t.dtype != dtype:
            out[key] = t.to(dtype, memory_format=fmt)
        else:  # a view of the mapped file: copy it, or the mapping stays resident (see the docstring)
            out[key] = t.clone(memory_format=fmt)
    return out


def load_into(module: nn.Module, state: dict[str, torch.Tensor], what: str, source: str | os.PathLike,
              allow_missing: tuple[str, ...] = (), assign: bool = False) -> None:
    """`module.load_state_dict(state)` with a one-line error naming `what` and `source` for any missing (outside
    `allow_missing`) or unexpected key; `assign=True` adopts the tensors (needed for modules built on meta)."""
    result = module.load_state_dict(state, strict=False, assign=assign)
    missing = [k for k in result.missing_keys if not k.startswith(allow_missing)]
    if missing or result.unexpected_keys:
        bad = (missing or result.unexpected_keys)[0]
        raise ValueError(f"{source}: saved weights of {what} do not match the model ({bad!r})")


def check_materialised(module: nn.Module, what: str) -> None:
    """Raise if any parameter or buffer of `module` is still on the meta device (a weight the file lacked)."""
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if t.is_meta:
            raise ValueError(f"{what}: {name!r} was not loaded (still on the meta device)")


def release_free_memory() -> None:
    """Return freed heap memory to the operating system (glibc's `malloc_trim(0)`; nothing elsewhere)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return
    trim(0)


def reuse_large_allocations(max_bytes: int = 1 << 30) -> bool:
    """Serve allocations up to `max_bytes` from the heap, so that freed activation buffers are reused instead of
    being mapped fresh (and page-faulted in again) on every call; glibc's `mallopt` (M_MMAP_THRESHOLD and
    M_TRIM_THRESHOLD), for the whole process. Returns False where it does not apply (not glibc).

    Why (issue 17, measured 2026-12-07 on the 2-core Xeon VM, SD 2.1-size OSDFace in bf16 at 512 px): glibc maps
    every allocation of 32 MiB or more on its own and unmaps it when freed, so each such activation (a 64 x 512 x
    512 bf16 map is 32 MiB) is page-faulted in anew. Set after loading, in four paired runs the VAE decoder took
    0.53-0.74x the time and the VRE and VAE encoder gained too, for 0.07-0.33 GiB more peak RSS (freed buffers stay
    with the process). Call it after loading the weights (loading's own buffers are still given back)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc malloc.h
    # served from the heap, and a freed top of the heap under max_bytes kept rather than trimmed
    return bool(mallopt(m_mmap_threshold, int(max_bytes))) and bool(mallopt(m_trim_threshold, int(max_bytes)))
