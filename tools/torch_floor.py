"""Floors of an NVIDIA GPU, measured with PyTorch in the same run as our kernels: a cuBLAS GEMM of
the stacked Engram projection ([tokens, d_mem] x [d_mem, (M + 1) d]) and the device-to-device copy
bandwidth. Prints one JSON line per measurement.

  python3 tools/torch_floor.py [--tokens 512 16384] [--d-mem 1024] [--out-features 5120]
"""
import argparse
import json

import torch


def timed(fn, reps=20, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, nargs="+", default=[512, 16384])
    ap.add_argument("--d-mem", type=int, default=1024)
    ap.add_argument("--out-features", type=int, default=5120)
    args = ap.parse_args()
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    for dtype in (torch.float32, torch.bfloat16):
        for t in args.tokens:
            x = torch.randn(t, args.d_mem, device=dev, dtype=dtype)
            w = torch.randn(args.out_features, args.d_mem, device=dev, dtype=dtype)
            b = torch.randn(args.out_features, device=dev, dtype=dtype)
            s = timed(lambda: torch.nn.functional.linear(x, w, b))
            flops = 2 * t * args.d_mem * args.out_features
            print(json.dumps({"gpu": name, "what": "cublas_linear", "dtype": str(dtype), "tokens": t,
                              "seconds": s, "tflop_per_s": flops / s / 1e12}))
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    s = timed(lambda: dst.copy_(src))
    print(json.dumps({"gpu": name, "what": "d2d_copy", "bytes": n, "seconds": s,
                      "gb_per_s_read_plus_write": 2 * n / s / 1e9}))


if __name__ == "__main__":
    main()
