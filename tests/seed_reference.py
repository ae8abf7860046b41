"""Seed 000's GroupNet as the notebook writes it, kept only as a numerical reference for the tests."""
import torch
import torch.nn as nn


class ConvBNAct(nn.Module):
    def __init__(self, cin, cout, k=3, s=1, p=1, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SeedGroupedBottleneck(nn.Module):
    def __init__(self, cin, cout, groups=4, stride=1, bottleneck_ratio=0.5):
        super().__init__()
        c_mid = max(1, int(round(cout * bottleneck_ratio)))
        self.reduce = ConvBNAct(cin, c_mid, k=1, s=1, p=0)
        for g in range(groups, 0, -1):  # the seed's silent auto-adjust
            if c_mid % g == 0:
                groups = g
                break
        self.groups = groups
        self.gconv = ConvBNAct(c_mid, c_mid, k=3, s=stride, p=1, groups=groups)
        self.expand_conv = nn.Conv2d(c_mid, cout, kernel_size=1, bias=False)
        self.expand_bn = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.skip = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = self.skip(x)
        out = self.expand_bn(self.expand_conv(self.gconv(self.reduce(x))))
        return self.act(out + identity)


def make_stage(cin, cout, num_blocks, groups, first_stride=2, bottleneck_ratio=0.5):
    blocks = [SeedGroupedBottleneck(cin, cout, groups, first_stride, bottleneck_ratio)]
    blocks += [SeedGroupedBottleneck(cout, cout, groups, 1, bottleneck_ratio) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class SeedGroupNet(nn.Module):
    def __init__(self, in_channels=3, num_classes=10, groups=8, stage_blocks=(2, 2, 2), bottleneck_ratio=0.5):
        super().__init__()
        self.stem = nn.Sequential(ConvBNAct(in_channels, 64), ConvBNAct(64, 64))
        self.stage1 = make_stage(64, 128, stage_blocks[0], groups, 2, bottleneck_ratio)
        self.stage2 = make_stage(128, 256, stage_blocks[1], groups, 2, bottleneck_ratio)
        self.stage3 = make_stage(256, 512, stage_blocks[2], groups, 2, bottleneck_ratio)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def load_in_order(dst: nn.Module, src: nn.Module) -> None:
    """Copy `src`'s state into `dst` entry by entry (both list the same tensors in the same order)."""
    src_items, dst_keys = list(src.state_dict().items()), list(dst.state_dict().keys())
    assert len(src_items) == len(dst_keys)
    state = {}
    for k, (sk, v) in zip(dst_keys, src_items):
        assert dst.state_dict()[k].shape == v.shape, (k, sk)
        state[k] = v
    dst.load_state_dict(state)
