"""SCALE-Sim inputs for a model's conv (and linear) layers: a topology CSV whose shapes SCALE-Sim turns into
PyTorch's real output sizes, a layout CSV it needs to start, and one table linking every row to the
activation maps it reads and writes (with their bytes in every format), to correct SCALE-Sim's DRAM words."""

from __future__ import annotations

import csv
import io
import math
import operator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from ..analysis.measure import TrafficReport
from ..core import FORMATS
from ..nn import ZebraLayer, eval_mode, is_prepared, plain_model, prepared_module
from ..nn.activations import ACTIVATION_FUNCTIONS, ACTIVATION_METHODS, ACTIVATION_MODULES

HEADER = ["Layer name", "IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels", "Num Filter",
          "Strides"]
# SCALE-Sim 3.0.0's own layout header (scalesim/layout_utils.py, write_layout_file).
LAYOUT_HEADER = ["Layer name", "IFMAP Height Intraline Factor", "IFMAP Width Intraline Factor",
                 "Filter Height Intraline Factor", "Filter Width Intraline Factor", "Channel Intraline Factor",
                 "Num Filter Intraline Factor", "IFMAP Height Intraline Order", "IFMAP Width Intraline Order",
                 "Channel Intraline Order", "IFMAP Height Interline Order", "IFMAP Width Interline Order",
                 "Channel Interline Order", "Num Filter Intraline Order", "Channel Intraline Order",
                 "Filter Height Intraline Order", "Filter Width Intraline Order", "Num Filter Interline Order",
                 "Channel Interline Order", "Filter Height Interline Order", "Filter Width Interline Order"]
LAYOUT_ORDERS = [1, 2, 0, 4, 5, 3, 3, 0, 1, 2, 7, 4, 5, 6]  # the orders of SCALE-Sim's example layouts
MAPS_HEADER = (["layer", "scalesim_name", "reads", "writes", "ifmap_words", "padding_words", "input_words",
                "ofmap_words"] + [f"reads_bytes_{fmt}" for fmt in FORMATS] + [f"writes_bytes_{fmt}" for fmt in FORMATS])
DEPTHWISE_TAG = "_DP"  # SCALE-Sim splits a row per channel when its name contains "DP"


@dataclass(frozen=True)
class ConvLayer:
    """One conv or linear call: its SCALE-Sim row, its real input and output, and the maps it reads and writes.

    SCALE-Sim has no padding and computes the output size as ``ceil((H - R + S) / S)``, so the IFMAP is the
    input extent the conv really reads, ``(out - 1) * S + R`` (padding it reads included, rows it skips not).
    """

    name: str
    ifmap_height: int
    ifmap_width: int
    filter_height: int
    filter_width: int
    channels: int  # input channels per group; all of them for a depthwise (DP) row
    filters: int  # output channels; per channel for a depthwise (DP) row
    stride: int
    input_shape: tuple[int, ...] = ()  # C, H, W of the real input map (no padding)
    output_shape: tuple[int, ...] = ()  # C, H, W of the output map
    padding: tuple[int, int] = (0, 0)  # top and left padding inside the IFMAP
    depthwise: bool = False
    reads: str = "none"  # activation site of the map it reads, "input" (the network's) or "none"
    writes: str = "none"  # activation site of the map it writes (after BN, residual sum, activation) or "none"
    fused_reads: tuple[str, ...] = ()  # sites its fused operations read: a residual sum's other operand, or the
    # map a pooling op in front of it reduces (an accelerator reads them while it runs this row)

    @property
    def scalesim_name(self) -> str:
        """The row's name: ``DP``-tagged for a depthwise conv, with no ``DP`` otherwise."""
        return self.name + DEPTHWISE_TAG if self.depthwise else self.name.replace("DP", "dp")

    def _reach(self, axis: int) -> tuple[int, int]:
        """(IFMAP positions some window covers, of which input data, not padding) along height 0 or width 1."""
        size = (self.filter_height, self.filter_width)[axis]
        covered = {i * self.stride + k for i in range(self.output_shape[1 + axis]) for k in range(size)}
        start = self.padding[axis]
        return len(covered), sum(start <= p < start + self.input_shape[1 + axis] for p in covered)

    @property
    def ifmap_words(self) -> int:
        """Words of the IFMAP that SCALE-Sim reads, over every channel of a DP row (a 1x1 stride-2 conv
        skips every other row and column)."""
        return self._reach(0)[0] * self._reach(1)[0] * self.channels

    @property
    def padding_words(self) -> int:
        """Words of ``ifmap_words`` that are padding, not data in DRAM."""
        return self.ifmap_words - self._reach(0)[1] * self._reach(1)[1] * self.channels

    @property
    def input_words(self) -> int:
        """Words of the real input map (every channel, no padding)."""
        return math.prod(self.input_shape)

    @property
    def ofmap_words(self) -> int:
        """Words of the output map (what SCALE-Sim writes)."""
        return math.prod(self.output_shape)

    def row(self) -> list:
        """The topology CSV row."""
        return [self.scalesim_name, self.ifmap_height, self.ifmap_width, self.filter_height, self.filter_width,
                self.channels, self.filters, self.stride]


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    """Top and left zero padding of ``conv`` (``same`` puts the odd one at the bottom/right, as PyTorch does)."""
    if conv.padding == "valid":
        return 0, 0
    if conv.padding == "same":
        return tuple((d * (k - 1)) // 2 for d, k in zip(conv.dilation, conv.kernel_size))
    return conv.padding[0], conv.padding[1]


def _conv_row(name: str, conv: nn.Conv2d, x: torch.Tensor, y: torch.Tensor) -> ConvLayer:
    """The row of one call of ``conv`` on ``x`` giving ``y`` (its vertical stride for both directions)."""
    (rows, cols), (fh, fw), stride = y.shape[-2:], conv.kernel_size, conv.stride[0]
    depthwise = conv.groups == conv.in_channels > 1
    channels = conv.in_channels if depthwise else conv.in_channels // conv.groups
    filters = conv.out_channels // conv.groups if depthwise else conv.out_channels
    return ConvLayer(name, (rows - 1) * stride + fh, (cols - 1) * stride + fw, fh, fw, channels, filters, stride,
                     tuple(x.shape[1:]), tuple(y.shape[1:]), _padding(conv), depthwise)


def _linear_row(name: str, linear: nn.Linear) -> ConvLayer:
    """A linear layer as a 1x1 convolution on a 1x1 map."""
    return ConvLayer(name, 1, 1, 1, 1, linear.in_features, linear.out_features, 1, (linear.in_features, 1, 1),
                     (linear.out_features, 1, 1))


class _Runner(fx.Interpreter):
    """Runs a prepared model node by node, remembering the node being run (the forward hooks look at it)."""

    def __init__(self, model: fx.GraphModule) -> None:
        super().__init__(model)
        self.node: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.node = n
        return super().run_node(n)


_SAME_DATA_MODULES = (nn.Identity, nn.Dropout, nn.Flatten)
_SAME_DATA_FUNCTIONS = {torch.flatten, torch.reshape}
_SAME_DATA_METHODS = {"flatten", "view", "reshape", "contiguous"}
_POOLING_MODULES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool2d)
_POOLING_FUNCTIONS = {F.adaptive_avg_pool2d, F.avg_pool2d, F.adaptive_max_pool2d, F.max_pool2d, torch.mean}
_POOLING_METHODS = {"mean"}
_FUSED_MODULES = (nn.modules.batchnorm._BatchNorm, nn.Identity, nn.Dropout, *ACTIVATION_MODULES)
_FUSED_FUNCTIONS = {operator.add, operator.iadd, torch.add, *ACTIVATION_FUNCTIONS}
_FUSED_METHODS = {"add", "add_", *ACTIVATION_METHODS}


def _is_call(node: fx.Node, modules: dict[str, nn.Module], classes: tuple, functions: set, methods: set) -> bool:
    """True when ``node`` calls a module of ``classes``, one of ``functions`` or a method named in ``methods``."""
    if node.op == "call_module":
        return isinstance(modules[node.target], classes)
    return (node.op == "call_function" and node.target in functions) or (node.op == "call_method"
                                                                          and node.target in methods)


def _site(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The activation site whose ZebraLayer ``node`` calls, else None."""
    module = modules.get(node.target) if node.op == "call_module" else None
    return module.site if isinstance(module, ZebraLayer) else None


def _read_site(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """The site whose map ``node`` holds, looking back through reshapes and no-ops only."""
    while True:
        if node.op == "placeholder":
            return "input"
        if site := _site(node, modules):
            return site
        if not _is_call(node, modules, _SAME_DATA_MODULES, _SAME_DATA_FUNCTIONS, _SAME_DATA_METHODS):
            return "none"
        node = node.args[0]


def _written_site(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """The site of the map ``node``'s output becomes through a fusable chain (BN, residual sum, activation)."""
    while len(node.users) == 1:
        node = next(iter(node.users))
        if site := _site(node, modules):
            return site
        if not _is_call(node, modules, _FUSED_MODULES, _FUSED_FUNCTIONS, _FUSED_METHODS):
            return "none"
    return "none"


def _pooled_site(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """The site whose map ``node`` holds after pooling and reshapes (``none`` if no pooling op is on the way)."""
    pooled = False
    while not _site(node, modules) and node.op != "placeholder":
        pooling = _is_call(node, modules, _POOLING_MODULES, _POOLING_FUNCTIONS, _POOLING_METHODS)
        if not (pooling or _is_call(node, modules, _SAME_DATA_MODULES, _SAME_DATA_FUNCTIONS, _SAME_DATA_METHODS)):
            return "none"
        pooled, node = pooled or pooling, node.args[0]
    return _site(node, modules) or "none" if pooled else "none"


def _fused_reads(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, ...]:
    """Sites read by the operations fused with ``node``: the pooled map in front of it, and the other operand
    of every residual sum in its fusable output chain."""
    sites = [_pooled_site(node.args[0], modules)]
    while len(node.users) == 1 and not _site(node, modules):
        user = next(iter(node.users))
        if not _is_call(user, modules, _FUSED_MODULES, _FUSED_FUNCTIONS, _FUSED_METHODS):
            break
        sites += [_read_site(arg, modules) for arg in user.args if isinstance(arg, fx.Node) and arg is not node]
        node = user
    return tuple(site for site in sites if site not in ("none", "input"))


def _links(runner: _Runner | None, module: nn.Module) -> dict[str, Any]:
    """The maps the traced call of ``module`` now running reads and writes (none inside a leaf module)."""
    node = runner.node if runner else None
    if node is None or node.op != "call_module" or runner.submodules.get(node.target) is not module:
        return {}
    modules = runner.submodules
    return {"reads": _read_site(node.args[0], modules), "writes": _written_site(node, modules),
            "fused_reads": _fused_reads(node, modules)}


@torch.no_grad()
def conv_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[ConvLayer]:
    """Every Conv2d and Linear called in one forward pass of ``example_inputs``, in call order.

    On a prepared model, each row is linked (through the traced graph) to the maps it reads and writes.
    """
    plain = plain_model(model)
    names = {module: name for name, module in plain.named_modules()}
    runner = _Runner(prepared_module(model, "conv_layers")) if is_prepared(model) else None
    rows: list[ConvLayer] = []

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        row = (_conv_row(names[module], module, inputs[0], output) if isinstance(module, nn.Conv2d)
               else _linear_row(names[module], module))
        rows.append(replace(row, **_links(runner, module)))

    handles = [m.register_forward_hook(record) for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with eval_mode(model):
            (runner.run if runner else model)(example_inputs[:1])
    finally:
        for handle in handles:
            handle.remove()
    return rows


def _csv(header: list[str], rows: list[list], terminator: str = "\r\n") -> str:
    """CSV text of a header and rows."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=terminator)
    writer.writerows([header, *rows])
    return out.getvalue()


def topology_csv(layers: list[ConvLayer]) -> str:
    """The layers as SCALE-Sim's topology CSV (each line ends with a comma, as its own files do)."""
    return _csv(HEADER, [layer.row() for layer in layers], ",\n")


def layout_csv(layers: list[ConvLayer]) -> str:
    """A SCALE-Sim layout CSV for the topology (SCALE-Sim 3.0.0 stops without one; it only uses it when the
    config turns a custom layout on): unit factors, and a DP row's channel count where SCALE-Sim splits it."""
    rows = [[layer.scalesim_name, 1, 1, 1, 1, layer.channels if layer.depthwise else 1, 1, *LAYOUT_ORDERS]
            for layer in layers]
    return _csv(LAYOUT_HEADER, rows, ",\n")


def conv_maps_csv(layers: list[ConvLayer], report: TrafficReport) -> str:
    """One row per topology row: the maps it reads and writes, their bytes in every format as ``report``
    counts them (empty for the input or a map not measured), and SCALE-Sim's IFMAP words against the real ones."""
    sites = {layer.name: layer.bytes for layer in report.layers}
    rows = []
    for layer in layers:
        reads, writes = sites.get(layer.reads, {}), sites.get(layer.writes, {})
        rows.append([layer.name, layer.scalesim_name, layer.reads, layer.writes, layer.ifmap_words,
                     layer.padding_words, layer.input_words, layer.ofmap_words]
                    + [reads.get(fmt, "") for fmt in FORMATS] + [writes.get(fmt, "") for fmt in FORMATS])
    return _csv(MAPS_HEADER, rows)
