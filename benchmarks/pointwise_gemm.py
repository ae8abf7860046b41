"""1x1 convolutions as GEMMs (`PointwiseConv2d`, part of `prepare_for_inference`) vs the plain `nn.Conv2d` of the
model as it comes, on the CPU, in one run.

    python benchmarks/pointwise_gemm.py                          # three families, batch 1 and 8, 2 threads
    python benchmarks/pointwise_gemm.py --models oct_resnet50 --batch-sizes 1

Both variants hold the same weights and run channels_last (the GEMM path needs it; NCHW input goes to the conv
anyway). They are called in turn each round; the table gives the median over rounds and the ratio GEMM / conv.
"""
import argparse
import copy

import timm
import torch

import timm_groupoct  # noqa: F401  (registers the models)
from timm_groupoct.layers import use_pointwise_gemm
from octconv_speed import time_round_robin  # benchmarks/ is on sys.path when a script here runs

DEFAULT_MODELS = ['oct_resnet50', 'resnext50_32x4d_gn', 'groupnet_base']


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=DEFAULT_MODELS)
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--rounds', type=int, default=8, help='timed calls per variant (median reported)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f'torch {torch.__version__}, timm {timm.__version__}, {args.threads} threads, '
          f'{args.img_size}x{args.img_size}, channels_last, median of {args.rounds} interleaved rounds, eval')
    header = f'{"model":<22} {"batch":>5} {"conv ms":>9} {"GEMM ms":>9} {"GEMM/conv":>10}'
    print(f'{header}\n{"-" * len(header)}')
    for name in args.models:
        conv = timm.create_model(name).eval()
        variants = {'conv': conv, 'gemm': use_pointwise_gemm(copy.deepcopy(conv))}
        variants = {k: m.to(memory_format=torch.channels_last) for k, m in variants.items()}
        for batch_size in args.batch_sizes:
            x = torch.randn(batch_size, 3, args.img_size, args.img_size)
            with torch.inference_mode():
                torch.testing.assert_close(variants['gemm'](x), variants['conv'](x), rtol=1e-4, atol=1e-4)
                median = time_round_robin({k: (lambda m=m: m(x)) for k, m in variants.items()}, args.rounds)
            conv, gemm_ms = median['conv'] * 1e3, median['gemm'] * 1e3
            print(f'{name:<22} {batch_size:>5} {conv:>9.1f} {gemm_ms:>9.1f} {gemm_ms / conv:>10.3f}')


if __name__ == '__main__':
    main()
