"""Median milliseconds per call of one model file in its runtime, in a fresh process.

    python benchmarks/time_runtime_file.py model.onnx --batch-size 8 --threads 2     # onnxruntime
    python benchmarks/time_runtime_file.py openvino_model.xml                         # OpenVINO, float32

Imports only the runtime and numpy. benchmarks/runtimes.py runs one of these per model and runtime in turn, so
that no other session's threads compete with the one being timed.
"""
import argparse
import statistics
import time

import numpy as np


def runner(path: str, threads: int):
    if path.endswith('.onnx'):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        name = session.get_inputs()[0].name
        shape = session.get_inputs()[0].shape
        return lambda x: session.run(None, {name: x}), shape
    import openvino as ov
    compiled = ov.Core().compile_model(path, 'CPU', {
        'INFERENCE_PRECISION_HINT': 'f32', 'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_NUM_THREADS': threads})
    request = compiled.create_infer_request()
    shape = [d.get_length() if d.is_static else 'dynamic' for d in compiled.input(0).get_partial_shape()]
    return lambda x: request.infer({0: x}), shape


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('path', help='an .onnx file (onnxruntime) or an OpenVINO .xml file')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--calls', type=int, default=10, help='timed calls (after 3 warm-up calls)')
    args = parser.parse_args(argv)
    run, shape = runner(args.path, args.threads)
    x = np.random.default_rng(0).standard_normal((args.batch_size, *shape[1:]), dtype=np.float32)
    for _ in range(3):
        run(x)
    times = []
    for _ in range(args.calls):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    print(f'{statistics.median(times) * 1e3:.3f}')


if __name__ == '__main__':
    main()
