"""The C reference model (csrc/): decodes and encodes bit for bit like torchzebra.codec, refuses every hostile stream
with the status matching the Python decoder's error, and survives a sanitizer fuzz run. Compiled once per session
with the system's C compiler; skipped, with the reason, where there is none."""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from test_codec import SAMPLE, _with_a_marked_zero, reseal, with_fields

import torchzebra as tz
from torchzebra import codec
from torchzebra.codec.layout import BATCHED, FORMAT_CODES, HEADER, PER_CHANNEL, SIGNED
from torchzebra.core import FORMATS
from torchzebra.export import export_maps
from torchzebra.models import ResNet18

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"]
STATUS = {name: int(code) for name, code in
          re.findall(r"\b(ZS_OK|ZS_E_\w+) = (\d+)", (CSRC / "zebra_stream.h").read_text())}
CAPACITY = 4096  # values a hostile or fuzzed stream may describe (Python's max_elements, the C buffer's size)
FUZZ_SEED, FUZZ_COUNT = 40, 3000

PYTHON_ERRORS = {  # what torchzebra.codec.decode says -> the C model's status
    "the header alone is": "ZS_E_TRUNCATED_HEADER",
    "not a torchzebra codec stream": "ZS_E_MAGIC",
    r"version \d+ is not supported": "ZS_E_VERSION",
    "its header and tables need": "ZS_E_TRUNCATED_TABLES",
    "header corrupted": "ZS_E_HEADER_CRC",
    "invalid header fields": "ZS_E_FIELDS",
    "invalid shape": "ZS_E_SHAPE",
    r"header lists \d+ scales": "ZS_E_SCALE_COUNT",
    "truncated: .* the header describes": "ZS_E_TRUNCATED",
    "trailing bytes": "ZS_E_TRAILING",
    "invalid scale": "ZS_E_SCALE",
    "the map lengths add up to": "ZS_E_LENGTHS_SUM",
    "max_elements": "ZS_E_TOO_MANY_ELEMENTS",
    "payload corrupted": "ZS_E_PAYLOAD_CRC",
    "too short for its": "ZS_E_MAP_TOO_SHORT",
    "its bitmap describes": "ZS_E_MAP_LENGTH",
    "marked non-zero in the bitmap is zero": "ZS_E_MARKED_ZERO",
    "holds only zeros": "ZS_E_EMPTY_BLOCK",
    "levels outside": "ZS_E_LEVEL_RANGE",
    "non-finite": "ZS_E_NON_FINITE",
}


class Header(ctypes.Structure):
    """``zs_header`` of csrc/zebra_stream.h."""

    _fields_ = [("version", ctypes.c_uint8), ("format", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                ("flags", ctypes.c_uint8), ("n", ctypes.c_uint32), ("c", ctypes.c_uint32), ("h", ctypes.c_uint32),
                ("w", ctypes.c_uint32), ("block_size", ctypes.c_uint32), ("scales", ctypes.c_uint32),
                ("payload_bytes", ctypes.c_uint64), ("payload_crc", ctypes.c_uint32),
                ("header_crc", ctypes.c_uint32), ("header_bytes", ctypes.c_uint64)]


@dataclass(frozen=True)
class Model:
    """The compiled C model: the library through ctypes, and the command-line tool."""

    lib: ctypes.CDLL
    cli: Path

    def decode(self, buf: bytes, values: bool = False, capacity: int | None = None) -> tuple[str, np.ndarray]:
        """(status name, levels as int32 or values as float32) of a stream."""
        info = Header()
        if capacity is None:
            status = self.lib.zs_inspect(buf, len(buf), ctypes.byref(info))
            capacity = info.n * info.c * info.h * info.w if status == 0 else 0
        out = np.zeros(capacity, np.float32 if values else np.int32)
        decoder = self.lib.zs_decode_values if values else self.lib.zs_decode_levels
        status = decoder(buf, len(buf), out.ctypes.data, capacity, ctypes.byref(info))
        return _name(status), out[: info.n * info.c * info.h * info.w] if status == 0 else out[:0]

    def encode(self, spec: Header, levels: np.ndarray, scales: np.ndarray) -> tuple[str, bytes]:
        """(status name, stream) of int32 levels; the first call sizes the buffer."""
        levels = np.ascontiguousarray(levels, np.int32)
        scales = np.ascontiguousarray(scales, np.float32)
        size = ctypes.c_uint64()
        args = (ctypes.byref(spec), levels.ctypes.data, levels.size, scales.ctypes.data)
        status = self.lib.zs_encode(*args, None, 0, ctypes.byref(size))
        if status != STATUS["ZS_E_OUTPUT_TOO_SMALL"]:
            return _name(status), b""
        out = ctypes.create_string_buffer(size.value)
        status = self.lib.zs_encode(*args, out, size.value, ctypes.byref(size))
        return _name(status), out.raw[: size.value]

    def run(self, *args: str | Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.cli), *map(str, args)], capture_output=True, text=True, check=False)


def _name(status: int) -> str:
    return next(name for name, code in STATUS.items() if code == status)


def _compile(compiler: str, out: Path, *args: str | Path) -> None:
    done = subprocess.run([compiler, *CFLAGS, "-o", str(out), *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def compiler() -> str:
    found = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if not found:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH: the C model cannot be built here")
    return found


@pytest.fixture(scope="session")
def model(compiler, tmp_path_factory) -> Model:
    folder = tmp_path_factory.mktemp("csrc")
    _compile(compiler, folder / "libzebra_stream.so", "-shared", "-fPIC", CSRC / "zebra_stream.c")
    _compile(compiler, folder / "zebra-stream", CSRC / "zebra_stream.c", CSRC / "zebra_stream_cli.c")
    lib = ctypes.CDLL(str(folder / "libzebra_stream.so"))
    u64, ptr, header = ctypes.c_uint64, ctypes.c_void_p, ctypes.POINTER(Header)
    lib.zs_inspect.argtypes = [ctypes.c_char_p, u64, header]
    lib.zs_decode_levels.argtypes = lib.zs_decode_values.argtypes = [ctypes.c_char_p, u64, ptr, u64, header]
    lib.zs_encode.argtypes = [header, ptr, u64, ptr, ctypes.c_char_p, u64, ctypes.POINTER(u64)]
    lib.zs_strerror.argtypes, lib.zs_strerror.restype = [ctypes.c_int], ctypes.c_char_p
    return Model(lib, folder / "zebra-stream")


@pytest.fixture(scope="session")
def fuzz_driver(compiler, tmp_path_factory) -> Path:
    """The fuzz driver built with AddressSanitizer and UndefinedBehaviorSanitizer (skipped where they do not run)."""
    folder = tmp_path_factory.mktemp("csrc-sanitized")
    probe = folder / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    built = subprocess.run([compiler, *SANITIZE, "-o", str(folder / "probe"), str(probe)], capture_output=True)
    if built.returncode != 0 or subprocess.run([str(folder / "probe")], capture_output=True).returncode != 0:
        pytest.skip(f"{compiler} cannot build and run with -fsanitize=address,undefined here")
    _compile(compiler, folder / "fuzz", *SANITIZE, CSRC / "zebra_stream.c", CSRC / "zebra_stream_fuzz.c")
    return folder / "fuzz"


def python_status(buf: bytes) -> str:
    """The C status matching what torchzebra.codec.decode (with max_elements=CAPACITY) says of a stream."""
    try:
        codec.decode(buf, max_elements=CAPACITY)
    except codec.StreamError as error:
        names = [name for pattern, name in PYTHON_ERRORS.items() if re.search(pattern, str(error))]
        assert len(names) == 1, f"no single C status for {error}"
        return names[0]
    return "ZS_OK"


def random_map(g: torch.Generator, batched: bool, signed: bool) -> torch.Tensor:
    """A small map with element- and block-level zeros."""
    shape = tuple(int(v) for v in torch.randint(1, 4, (1,), generator=g)) if batched else ()
    shape += (int(torch.randint(1, 5, (1,), generator=g)), *(int(v) for v in torch.randint(1, 12, (2,), generator=g)))
    x = torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) > torch.rand(1, generator=g))
    keep = torch.rand((*shape[:-2], -(-shape[-2] // 3), -(-shape[-1] // 3)), generator=g) > 0.5
    x = x * keep.repeat_interleave(3, -2).repeat_interleave(3, -1)[..., : shape[-2], : shape[-1]]
    return x if signed else x.abs()


def spec_and_levels(x: torch.Tensor, fmt: str, block, bits: int, per_channel: bool):
    """The encoder's header fields, int32 levels and scales for ``codec.encode(x, ...)``."""
    x4 = x if x.dim() == 4 else x.unsqueeze(0)
    q = codec.quantize(x4, bits, per_channel)
    flags = SIGNED * q.signed | PER_CHANNEL * (per_channel and bits != 32) | BATCHED * (x.dim() == 4)
    spec = Header(format=FORMAT_CODES[fmt], bits=bits, flags=flags, n=x4.shape[0], c=x4.shape[1], h=x4.shape[2],
                  w=x4.shape[3], block_size=0 if block == "map" else block)
    levels = q.levels.view(np.int32) if bits == 32 else q.levels.astype(np.int32)
    return spec, levels.ravel(), q.scale


def check_equal(model: Model, buf: bytes, spec: Header, levels: np.ndarray, scales: np.ndarray) -> None:
    """C encode of the encoder's ``levels`` gives ``buf``; C decode of ``buf`` gives them back (at 32 bits Python's
    values: a -0.0 that the format skips decodes to 0.0) and Python's values, bit for bit."""
    assert model.encode(spec, levels, scales) == ("ZS_OK", buf)
    python = codec.decode(buf).numpy().ravel().view(np.int32)
    status, decoded = model.decode(buf)
    assert status == "ZS_OK" and np.array_equal(decoded, python if spec.bits == 32 else levels)
    status, values = model.decode(buf, values=True)
    assert status == "ZS_OK" and np.array_equal(values.view(np.int32), python)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bits", [8, 16, 32])
def test_random_maps_decode_and_encode_bit_for_bit(model, fmt, bits):
    g = torch.Generator().manual_seed(bits * 10 + FORMATS.index(fmt))
    for block, per_channel, batched, signed in itertools.product([1, 3, 4, "map"], *[[False, True]] * 3):
        for _ in range(2):
            x = random_map(g, batched, signed)
            buf = codec.encode(x, fmt, block, bits, per_channel=per_channel)
            check_equal(model, buf, *spec_and_levels(x, fmt, block, bits, per_channel))
    zero = torch.zeros(2, 3, 5, 7)  # every block empty
    check_equal(model, codec.encode(zero, fmt, 2, bits), *spec_and_levels(zero, fmt, 2, bits, False))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> list[Path]:
    """``maps/`` folders that ``zebra export`` writes (export_maps) for a tiny ResNet-18, in four settings."""
    prepared = tz.prepare(ResNet18(10, 1, 4, "cifar").eval(), tz.ZebraConfig(block_size=2, threshold=0.1))
    images = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    folders = []
    for fmt, bits, per_channel in [("zebra_zvc", 8, False), ("zvc", 16, True), ("zebra", 32, False),
                                   ("dense", 8, True)]:
        folders.append(tmp_path_factory.mktemp(f"maps-{fmt}-{bits}"))
        export_maps(prepared, images, folders[-1], fmt, bits, per_channel)
    return folders


def test_exported_maps_inspect_and_decode_like_python_and_match_their_golden_levels(model, exported, tmp_path):
    for folder in exported:
        manifest = json.loads((folder / "manifest.json").read_text())
        for entry in manifest["files"]:
            stream = (folder / entry["file"]).read_bytes()
            golden = np.fromfile(folder / entry["levels"], np.dtype(entry["levels_dtype"]).newbyteorder("<"))
            info = codec.inspect(stream)
            printed = model.run("inspect", folder / entry["file"]).stdout
            fields = dict(line.split(":", 1) for line in printed.splitlines())
            assert {key: value.split() for key, value in fields.items()} == {
                "format": [info.format], "version": [str(info.version)], "shape": [str(v) for v in info.shape],
                "block_size": [str(info.block_size)], "bits": [str(info.bits)], "signed": [str(info.signed).lower()],
                "per_channel": [str(info.per_channel).lower()], "scale": fields["scale"].split(),
                "header_bytes": [str(info.header_bytes)], "payload_bytes": [str(info.payload_bytes)],
                "map_bytes": [str(v) for v in info.map_bytes]}
            assert np.array_equal(np.float32(fields["scale"].split()), np.float32(info.scale))
            assert model.run("decode", folder / entry["file"], "-o", tmp_path / "out").returncode == 0
            assert (tmp_path / "out").read_bytes() == golden.tobytes()
            assert model.run("decode", folder / entry["file"], "-o", tmp_path / "out", "--values").returncode == 0
            python = codec.decode(stream)
            assert (tmp_path / "out").read_bytes() == python.numpy().astype("<f4").tobytes()
            scale = np.frombuffer(stream, "<f4", len(info.scale), HEADER.size)
            assert torch.equal(codec.dequantize(golden.reshape(python.shape[0], -1), scale, tuple(python.shape)),
                               python)
            spec = Header()
            assert model.lib.zs_inspect(stream, len(stream), ctypes.byref(spec)) == 0
            levels = golden.view(np.int32) if manifest["bits"] == 32 else golden.astype(np.int32)
            assert model.encode(spec, levels, scale) == ("ZS_OK", stream)


def test_the_tool_refuses_a_bad_stream_with_its_status_and_usage_errors(model, tmp_path):
    bad = tmp_path / "bad.zbra"
    bad.write_bytes(b"PK\x03\x04" + codec.encode(SAMPLE)[4:])
    done = model.run("decode", bad, "-o", tmp_path / "out")
    assert done.returncode == 1 and "does not start with ZBRA (zs_status 2)" in done.stderr
    assert model.run("inspect").returncode == 2 and "usage" in model.run("inspect").stderr
    assert model.run("inspect", tmp_path / "missing.zbra").returncode == 2


def _hostile() -> list[bytes]:
    """The streams torchzebra.codec's tests refuse, and one of every other refusal."""
    buf = codec.encode(SAMPLE, "zebra", 4, 8)
    streams = [buf[:cut] for fmt in FORMATS for buf in [codec.encode(SAMPLE, fmt, 4, 8)] for cut in range(len(buf))]
    streams += [codec.encode(SAMPLE, fmt, 4, 8) + b"\0" for fmt in FORMATS]
    streams += [b"PK\x03\x04" + buf[4:], buf[:-1] + bytes([buf[-1] ^ 1]), buf[:20] + bytes([buf[20] ^ 1]) + buf[21:]]
    streams += [with_fields(buf, **change) for change in [
        dict(version=9), dict(code=7), dict(bits=12), dict(flags=0x80), dict(h=0), dict(scales=3),
        dict(payload=10**15), dict(n=10**9), dict(h=2**20, w=2**20, block=0), dict(w=10), dict(c=4),
        dict(n=2, flags=0)]]
    zvc = codec.encode(SAMPLE, "zvc", 4, 8)
    streams.append(with_fields(zvc, w=40))  # a 1080-bit bitmap in 94 bytes
    table = HEADER.size + 4
    lengths = np.frombuffer(zvc, "<u8", 2, table)
    for change in ([1, -1], [1, 0]):  # the same total split wrongly; a total that is not the payload
        moved = (lengths.astype(np.int64) + change).astype("<u8").tobytes()
        streams.append(reseal(zvc[:table] + moved + zvc[table + 16:]))
    streams += [_with_a_marked_zero(fmt) for fmt in ("zebra", "zvc", "zebra_zvc")]
    streams.append(reseal(zvc[:HEADER.size] + struct.pack("<f", -1.0) + zvc[table:]))
    streams.append(reseal(zvc[:HEADER.size] + struct.pack("<f", 3e38) + zvc[table:]))  # 255 x 3e38 overflows
    signed = codec.encode(-SAMPLE, "dense", 4, 8)
    streams.append(reseal(signed[:-1] + b"\x80"))  # level -128
    floats = codec.encode(SAMPLE, "dense", 4, 32)
    streams.append(reseal(floats[:-4] + struct.pack("<f", float("nan"))))
    rng = np.random.default_rng(7)
    blobs = [rng.integers(0, 256, int(rng.integers(0, 300)), np.uint8).tobytes() for _ in range(200)]
    return streams + blobs + [b"ZBRA" + blob for blob in blobs]


def test_every_hostile_stream_is_refused_with_the_python_decoders_error(model):
    seen = set()
    for stream in _hostile():
        expected = python_status(stream)
        assert expected != "ZS_OK"
        assert model.decode(stream, capacity=CAPACITY)[0] == expected, (expected, stream[:64])
        assert model.decode(stream, values=True, capacity=CAPACITY)[0] == expected
        seen.add(expected)
    assert seen == set(PYTHON_ERRORS.values())  # every refusal of the Python decoder is exercised


@pytest.mark.parametrize("change, expected", [
    (dict(bits=12), "ZS_E_FIELDS"), (dict(flags=0), "ZS_E_SHAPE"),
    (dict(flags=BATCHED | SIGNED, level=-128), "ZS_E_LEVEL_RANGE"),
    (dict(level=256), "ZS_E_LEVEL_RANGE"), (dict(scale=0.0), "ZS_E_SCALE"), (dict(scale=3e38), "ZS_E_SCALE"),
    (dict(count=1), "ZS_E_ARGUMENT"),
    (dict(bits=32, level=0x7FC00000), "ZS_E_NON_FINITE"),
])
def test_the_encoder_refuses_what_the_decoder_would(model, change, expected):
    spec = Header(format=FORMAT_CODES["zebra"], bits=change.get("bits", 8), flags=change.get("flags", BATCHED), n=2,
                  c=1, h=2, w=2, block_size=2)
    levels = np.zeros(change.get("count", 8), np.int32)
    levels[0] = change.get("level", 1)
    scales = np.array([change.get("scale", 1.0)] * (spec.bits != 32), np.float32)
    assert model.encode(spec, levels, scales)[0] == expected


def test_every_status_has_its_own_message_and_a_row_in_the_docs(model):
    messages = {model.lib.zs_strerror(code).decode() for code in STATUS.values()}
    assert len(messages) == len(STATUS) and b"unknown" in model.lib.zs_strerror(len(STATUS))
    spec = (ROOT / "docs" / "FORMAT.md").read_text()
    documented = re.findall(r"^\| (\d+) \| `(ZS_\w+)` \|", spec, re.MULTILINE)
    assert {name: int(code) for code, name in documented} == STATUS
    assert f"fuzz run of {FUZZ_COUNT}\nmutated streams (seed {FUZZ_SEED})" in spec


def _mutants(rng: np.random.Generator) -> list[bytes]:
    """FUZZ_COUNT mutated real streams: 1-8 bytes overwritten, a fifth cut short, four fifths with both CRCs
    recomputed (so that most reach the checks behind them)."""
    seeds = [codec.encode(x, fmt, block, bits, per_channel=per_channel)
             for x, fmt, block, bits in itertools.product([SAMPLE, -SAMPLE], FORMATS, [2, 4, "map"], [8, 16, 32])
             for per_channel in [bits == 16]]
    seeds.append(with_fields(codec.encode(SAMPLE, "zvc", 4, 32), flags=BATCHED))  # float32 with the signed flag clear
    mutants = []
    for _ in range(FUZZ_COUNT):
        buf = bytearray(seeds[rng.integers(len(seeds))])
        for _ in range(rng.integers(1, 9)):
            buf[rng.integers(len(buf))] = rng.integers(256)
        if rng.random() < 0.2:
            buf = buf[: rng.integers(len(buf) + 1)]
        if rng.random() < 0.8 and len(buf) >= HEADER.size:
            buf = bytearray(reseal(bytes(buf)))
        mutants.append(bytes(buf))
    return mutants


@pytest.mark.slow
def test_sanitized_fuzz_run_gives_only_documented_statuses_and_the_python_decoders_answers(fuzz_driver, tmp_path):
    """Seed FUZZ_SEED, FUZZ_COUNT streams, under AddressSanitizer and UndefinedBehaviorSanitizer."""
    mutants = _mutants(np.random.default_rng(FUZZ_SEED))
    (tmp_path / "in").write_bytes(b"".join(struct.pack("<I", len(m)) + m for m in mutants))
    done = subprocess.run([str(fuzz_driver), tmp_path / "in", tmp_path / "out", str(CAPACITY)], capture_output=True,
                          text=True, env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert done.returncode == 0 and done.stderr == "", done.stderr[-3000:]
    out, at, accepted = (tmp_path / "out").read_bytes(), 0, 0
    for stream in mutants:
        status, count = struct.unpack_from("<iQ", out, at)
        values = np.frombuffer(out, np.float32, count, at + 12)
        at += 12 + 4 * count
        assert _name(status) == python_status(stream)
        if status == 0:
            accepted += 1
            assert np.array_equal(values.view(np.uint32), codec.decode(stream).numpy().ravel().view(np.uint32))
    assert at == len(out) and 0 < accepted < FUZZ_COUNT
