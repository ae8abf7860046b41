"""Numerical references for the octave tests, written plainly (no fused or odd-size handling):

- `SeedOctNetMini`: seed 004's OctNetMini (stride 1, even sizes).
- `RefOctResNet`: the Oct-ResNet of the PyTorch reference (d-li14/octconv.pytorch), its key layout
  (`layerX.N.convK.conv.conv_h2h.weight`, `convK.bn_h.*`, `layerX.0.downsample.0.*`) and its forward semantics:
  stride 2 average-pools the bands before the convs (also in the single-band last stage), L->H reads the
  unpooled low band at stride 2 and is upsampled x2 at stride 1.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _pool(x):
    return F.avg_pool2d(x, 2, 2)


def _up(x):
    return F.interpolate(x, scale_factor=2, mode='nearest')


class SeedOctaveConv2d(nn.Module):
    def __init__(self, cin, cout, alpha_in=0.5, alpha_out=0.5):
        super().__init__()
        cin_l, cout_l = int(round(cin * alpha_in)), int(round(cout * alpha_out))
        cin_h, cout_h = cin - cin_l, cout - cout_l
        conv = lambda i, o: nn.Conv2d(i, o, 3, padding=1, bias=False) if i > 0 and o > 0 else None
        self.hh, self.hl, self.ll, self.lh = conv(cin_h, cout_h), conv(cin_h, cout_l), conv(cin_l, cout_l), conv(cin_l, cout_h)

    def forward(self, x_h, x_l):
        y_h = self.hh(x_h) + _up(self.lh(x_l))
        y_l = self.ll(x_l) + self.hl(_pool(x_h))
        return y_h, y_l


class SeedOctaveConvBlock(nn.Module):
    def __init__(self, cin, cout, alpha):
        super().__init__()
        self.oct = SeedOctaveConv2d(cin, cout, alpha, alpha)
        self.bn_h, self.bn_l = nn.BatchNorm2d(cout - int(round(cout * alpha))), nn.BatchNorm2d(int(round(cout * alpha)))

    def forward(self, x_h, x_l):
        y_h, y_l = self.oct(x_h, x_l)
        return F.relu(self.bn_h(y_h)), F.relu(self.bn_l(y_l))


class SeedOctNetMini(nn.Module):
    def __init__(self, in_channels=3, num_classes=10, alpha=0.5):
        super().__init__()
        self.alpha = alpha
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.b1, self.b2 = SeedOctaveConvBlock(64, 128, alpha), SeedOctaveConvBlock(128, 128, alpha)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.stem(x)
        c_h = x.shape[1] - int(round(x.shape[1] * self.alpha))
        x_h, x_l = self.b2(*self.b1(x[:, :c_h], _pool(x[:, c_h:])))
        x = torch.cat([x_h, _up(x_l)], dim=1)
        return self.fc(x.mean((2, 3)))

    def to_package_state_dict(self):
        """This model's weights under octnet_mini's keys."""
        names = {'hh': 'h2h', 'hl': 'h2l', 'll': 'l2l', 'lh': 'l2h'}
        out = {}
        for k, v in self.state_dict().items():
            k = k.replace('stem.0.', 'stem.0.conv.').replace('stem.1.', 'stem.0.bn.')
            k = k.replace('b1.', 'stages.0.0.').replace('b2.', 'stages.1.0.')
            for a, b in names.items():
                k = k.replace(f'oct.{a}.', f'conv.conv_{b}.')
            out[k] = v
        return out


class RefOctaveConv(nn.Module):
    def __init__(self, cin, cout, k, alpha_in, alpha_out, stride=1, groups=1):
        super().__init__()
        self.stride, self.alpha_out = stride, alpha_out
        cin_l, cout_l = int(alpha_in * cin), int(alpha_out * cout)
        cin_h, cout_h = cin - cin_l, cout - cout_l
        conv = lambda i, o, g: nn.Conv2d(i, o, k, 1, k // 2, groups=g, bias=False) if i and o else None
        self.conv_l2l = conv(cin_l, cout_l, math.ceil(alpha_in * groups))
        self.conv_l2h = conv(cin_l, cout_h, groups)
        self.conv_h2l = conv(cin_h, cout_l, groups)
        self.conv_h2h = conv(cin_h, cout_h, math.ceil(groups - alpha_in * groups))

    def forward(self, x):
        x_h, x_l = x
        if self.stride == 2:
            x_h = _pool(x_h)
        y_h = self.conv_h2h(x_h) if self.conv_h2h is not None else 0
        y_l = self.conv_h2l(_pool(x_h)) if self.conv_h2l is not None else None
        if x_l is not None:
            if self.conv_l2h is not None:
                t = self.conv_l2h(x_l)
                y_h = y_h + (_up(t) if self.stride == 1 else t)
            if self.conv_l2l is not None:
                y_l = y_l + self.conv_l2l(_pool(x_l) if self.stride == 2 else x_l)
        return y_h, y_l


class RefConvBN(nn.Module):
    def __init__(self, cin, cout, k, alpha_in, alpha_out, stride=1, groups=1, act=True):
        super().__init__()
        self.conv = RefOctaveConv(cin, cout, k, alpha_in, alpha_out, stride, groups)
        self.bn_h = nn.BatchNorm2d(cout - int(alpha_out * cout))
        self.bn_l = nn.BatchNorm2d(int(alpha_out * cout)) if alpha_out > 0 else None
        self.act = act

    def forward(self, x):
        y_h, y_l = self.conv(x)
        y_h = self.bn_h(y_h)
        y_l = self.bn_l(y_l) if y_l is not None else None
        if self.act:
            y_h, y_l = F.relu(y_h), (F.relu(y_l) if y_l is not None else None)
        return y_h, y_l


class RefBottleneck(nn.Module):
    def __init__(self, cin, planes, stride, alpha_in, alpha_out, downsample, groups=1, base_width=64):
        super().__init__()
        width = int(planes * base_width / 64) * groups
        self.conv1 = RefConvBN(cin, width, 1, alpha_in, alpha_out)
        self.conv2 = RefConvBN(width, width, 3, alpha_out, alpha_out, stride, groups)
        self.conv3 = RefConvBN(width, planes * 4, 1, alpha_out, alpha_out, act=False)
        self.downsample = nn.Sequential(RefConvBN(cin, planes * 4, 1, alpha_in, alpha_out, stride, act=False)) \
            if downsample else None

    def forward(self, x):
        id_h, id_l = self.downsample(x) if self.downsample is not None else x
        y_h, y_l = self.conv3(self.conv2(self.conv1(x)))
        y_h = F.relu(y_h + id_h)
        y_l = F.relu(y_l + id_l) if y_l is not None else None
        return y_h, y_l


class RefOctResNet(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), alpha=0.5, num_classes=1000, groups=1, base_width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (depth, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            last = i == 3
            blocks = []
            for j in range(depth):
                a_in = (0. if i == 0 else alpha) if j == 0 else (0. if last else alpha)
                a_out = 0. if last else alpha
                blocks.append(RefBottleneck(cin, planes, 2 if (j == 0 and i > 0) else 1, a_in, a_out, j == 0,
                                            groups, base_width))
                cin = planes * 4
            setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = (x, None)
        for i in range(1, 5):
            x = getattr(self, f'layer{i}')(x)
        return self.fc(x[0].mean((2, 3)))
