"""Compiles engram-cuda/kernels/*.cu (with their shared headers common.cuh and grid.cuh) to PTX with NVRTC (no GPU and no CUDA install needed).

hopper.cu is compiled once per wgmma projection (HOPPER_FAMILY, see its end) into
hopper_<name>.ptx, so that a backend has the driver compile only the kernels it uses; every
other source into one module of its own name.

Uses the pinned NVRTC of the PyPI wheel nvidia-cuda-nvrtc-cu12 and the headers of
nvidia-cuda-runtime-cu12 (both 12.2.140: PTX ISA 8.2, loadable by drivers from 535 on).

  python3 tools/gen_ptx.py --nvrtc-root DIR [--check]

DIR holds the unpacked wheels (DIR/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 and
DIR/nvidia/cuda_runtime/include). With --check the generated PTX is compared with the committed
file instead of written, and the exit status says whether they agree.
"""
import argparse
import ctypes
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = ROOT / "engram-cuda" / "kernels"
# Every module targets compute_90 (loadable on sm_90 and later) except hopper.cu, whose wgmma
# instructions exist only on sm_90a.
ARCH = {"hopper.cu": "compute_90a"}
DEFAULT_ARCH = "compute_90"
COMMON = ["--std=c++17", "--fmad=true"]
# hopper.cu's modules: the projection's ENGRAM_CUDA_PROJ name (file hopper_<name with _>.ptx) and
# its HOPPER_FAMILY, in hopper.cu's order.
HOPPER_FAMILIES = ["wgmma", "wgmma-wide", "wgmma-tma", "wgmma-wide-tma", "wgmma-ws", "wgmma-ws-tma"]


def modules(cu: pathlib.Path) -> list:
    """(output file, extra options) for each module compiled from cu."""
    if cu.name != "hopper.cu":
        return [(cu.with_suffix(".ptx"), [])]
    return [
        (cu.with_name(f"hopper_{name.replace('-', '_')}.ptx"), [f"-DHOPPER_FAMILY={i + 1}"])
        for i, name in enumerate(HOPPER_FAMILIES)
    ]


def options(cu: pathlib.Path) -> list:
    return ["--gpu-architecture=" + ARCH.get(cu.name, DEFAULT_ARCH)] + COMMON


def compile_ptx(nvrtc, source: str, name: str, opts: list) -> str:
    prog = ctypes.c_void_p()
    check(nvrtc, nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None))
    opts = [o.encode() for o in opts]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    status = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if status != 0:
        sys.exit(f"NVRTC failed on {name}:\n{log.value.decode()}")
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    check(nvrtc, nvrtc.nvrtcGetPTX(prog, ptx))
    return ptx.value.decode()


def check(nvrtc, code):
    if code != 0:
        nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
        sys.exit("NVRTC error: " + nvrtc.nvrtcGetErrorString(code).decode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nvrtc-root", required=True)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    root = pathlib.Path(args.nvrtc_root)
    nvrtc = ctypes.CDLL(str(next((root / "nvidia" / "cuda_nvrtc" / "lib").glob("libnvrtc.so*"))))
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    include = str(root / "nvidia" / "cuda_runtime" / "include")
    ok = True
    expected = set()
    for cu in sorted(KERNELS.glob("*.cu")):
        for out, extra in modules(cu):
            expected.add(out)
            opts = options(cu) + extra
            header = f"// Generated from {cu.name} by tools/gen_ptx.py with NVRTC {major.value}.{minor.value}, options: {' '.join(opts)}\n"
            # The shared headers (common.cuh, grid.cuh) are found beside the sources.
            ptx = header + compile_ptx(nvrtc, cu.read_text(), cu.name, opts + ["-I" + include, "-I" + str(KERNELS)])
            if args.check:
                same = out.exists() and out.read_text() == ptx
                print(f"{out.relative_to(ROOT)}: {'matches its source' if same else 'DIFFERS from what its source compiles to'}")
                ok &= same
            else:
                out.write_text(ptx)
                print(f"wrote {out.relative_to(ROOT)} ({len(ptx)} bytes)")
    # A PTX file no source makes any more (a renamed module) would still be assembled and its
    # kernels expected to be launched.
    for stale in sorted(set(KERNELS.glob("*.ptx")) - expected):
        print(f"{stale.relative_to(ROOT)}: made by no source")
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
