"""What the Python module adds per frame to an in-process C++ stream: the numpy -> engine copy of a pushed frame and
the engine -> numpy copy of a popped one (taken when the output is already waiting), as bench/capi_overhead.c
measures for the C API underneath.

    PYTHONPATH=build/python python3 bench/python_overhead.py MODEL TAESD [SIZE] [FRAMES]
"""

import statistics
import sys
import time

import numpy as np

import streamgen


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} MODEL TAESD [SIZE] [FRAMES]")
    model, taesd = sys.argv[1], sys.argv[2]
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    frames = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    streamgen.set_log_level("warn")
    pipeline = streamgen.Pipeline(model, taesd=taesd)
    image = (np.arange(size * size * 3, dtype=np.uint32) * 7 % 256).astype(np.uint8).reshape(size, size, 3)
    push_ms, pop_ms = [], []
    with streamgen.Stream(pipeline, width=size, height=size, prompt="an oil painting") as stream:
        start = time.perf_counter()
        for i in range(frames):
            t = time.perf_counter()
            stream.push(image)
            push_ms.append((time.perf_counter() - t) * 1e3)
            while stream.stats()["frames_out"] < i + 1:  # wait without taking the output
                time.sleep(0.0002)
            t = time.perf_counter()
            out = stream.pop(timeout=1)
            pop_ms.append((time.perf_counter() - t) * 1e3)
            assert out is not None
        total = (time.perf_counter() - start) * 1e3
    push, pop = statistics.median(push_ms), statistics.median(pop_ms)
    print(f"Python module per frame at {size}x{size} over {frames} frames (medians): push {push:.3f} ms, pop {pop:.3f} ms; "
          f"added per frame {push + pop:.3f} ms; stream {total / frames:.1f} ms per frame end to end")


if __name__ == "__main__":
    main()
