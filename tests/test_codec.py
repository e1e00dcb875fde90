"""The codec: exact round trips, payloads equal to the traffic model's bytes, and hostile streams."""

import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchzebra import codec
from torchzebra.cli import main
from torchzebra.codec.layout import FORMAT_CODES, HEADER
from torchzebra.core import FORMAT_REGISTRY, FORMATS, bits_to_bytes, map_bits

BLOCKS = [1, 2, 3, 4, 8, "map"]


@st.composite
def maps(draw):
    """Random maps with element- and block-level zeros, signed or not."""
    batched = draw(st.booleans())
    shape = (draw(st.integers(1, 3)),) if batched else ()
    shape += (draw(st.integers(1, 4)), draw(st.integers(1, 11)), draw(st.integers(1, 11)))
    seed = draw(st.integers(0, 2**31))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * draw(st.sampled_from([1e-3, 1.0, 50.0]))
    x = x * (torch.rand(shape, generator=g) > draw(st.floats(0, 1)))  # element sparsity
    block = draw(st.integers(1, 4))
    grid = (*shape[:-2], -(-shape[-2] // block), -(-shape[-1] // block))
    keep = torch.rand(grid, generator=g) > draw(st.floats(0, 1))
    x = x * keep.repeat_interleave(block, -2).repeat_interleave(block, -1)[..., : shape[-2], : shape[-1]]
    return x.abs() if draw(st.booleans()) else x


def model_bytes(x: torch.Tensor, fmt: str, block, bits: int) -> list[int]:
    return bits_to_bytes(map_bits(x, block, bits)[fmt]).tolist()


@settings(max_examples=300, deadline=None)
@given(x=maps(), fmt=st.sampled_from(FORMATS), block=st.sampled_from(BLOCKS), bits=st.sampled_from([8, 16, 32]),
       per_channel=st.booleans())
def test_round_trip_is_exact_and_payload_is_the_models_bytes(x, fmt, block, bits, per_channel):
    buf = codec.encode(x, fmt, block, bits, per_channel=per_channel)
    quantised = codec.fake_quantize(x, bits, per_channel)
    decoded = codec.decode(buf)
    assert decoded.shape == x.shape and decoded.dtype == torch.float32
    assert torch.equal(decoded, quantised)
    info = codec.inspect(buf)
    assert list(info.map_bytes) == model_bytes(quantised, fmt, block, bits)
    assert info.payload_bytes == sum(info.map_bytes) == len(buf) - info.header_bytes
    assert (info.format, info.block_size, info.bits, info.shape) == (fmt, block, bits, tuple(x.shape))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("block", [3, 4, "map"])
def test_values_on_the_grid_give_exactly_the_models_bytes_of_the_map_itself(fmt, block):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 5, 13, 10), generator=g).float()
    x[:, :, :6, :4] = 0  # whole zero blocks, and a partial border
    x[0, 2] = 0
    x[1, 1, 12, 9] = 255  # max 255 at 8 bits: scale 1, levels = x
    buf = codec.encode(x, fmt, block, 8)
    assert torch.equal(codec.decode(buf), x)
    assert list(codec.inspect(buf).map_bytes) == model_bytes(x, fmt, block, 8)


def test_bit_layout_by_hand():
    x = torch.tensor([[[0.0, 5.0], [0.0, 0.0]]])  # one channel, 2x2, unsigned; scale 5/255, level 255
    buf = codec.encode(x, "zvc", 2, 8)
    info = codec.inspect(buf)
    # ZVC: bitmap 0b0010 (raster order, LSB first), then 0xFF from bit 4 on: bytes 0xF2 0x0F
    assert buf[info.header_bytes:] == b"\xf2\x0f"
    assert info.scale == (pytest.approx(5 / 255),) and not info.signed
    buf = codec.encode(torch.tensor([[[51.0, 0.0, 0.0], [0.0, 0.0, 255.0]]]), "zebra_zvc", 2, 8)
    info = codec.inspect(buf)
    # blocks [51 0; 0 0 | 0 255] (2x2 then partial 2x1): bitmap 0b11; element bits of block 0 (1,0,0,0) and
    # block 1 (0,1) -> 0b10_0001 after the block bits; values 51 and 255 (scale 1) from bit 8 on
    assert buf[info.header_bytes:] == bytes([0b10000111, 51, 255])


def test_per_channel_scales_and_given_scale():
    x = torch.stack([torch.full((4, 4), 0.5), torch.full((4, 4), 100.0)])
    info = codec.inspect(codec.encode(x, "dense", 4, 8, per_channel=True))
    assert info.per_channel and info.scale == (pytest.approx(0.5 / 255), pytest.approx(100 / 255))
    fixed = codec.decode(codec.encode(x, "dense", 4, 8, scale=1.0))
    assert torch.equal(fixed, torch.stack([torch.zeros(4, 4), torch.full((4, 4), 100.0)]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(fmt="rle"), "format='rle' is invalid"),
    (dict(bits=4), "bits=4 is invalid: use 8 or 16 .* for the codec"),
    (dict(block_size=0), "block_size=0 is invalid"),
    (dict(scale=-1.0), "positive finite"),
    (dict(scale=3e38, bits=16), r"finite times the largest level \(65535\)"),  # 65535 * 3e38 overflows
])
def test_encode_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        codec.encode(torch.ones(1, 4, 4), **kwargs)


@pytest.mark.parametrize("bits", [8, 16])
def test_a_map_near_the_largest_float_decodes_finite(bits):
    big = float(torch.finfo(torch.float32).max)
    for x in (torch.tensor([[[big, 1.0, -big]]]), torch.tensor([[[big, 1.0]]])):  # signed and unsigned levels
        out = codec.decode(codec.encode(x, "dense", "map", bits))
        assert torch.isfinite(out).all() and out.max() > 0.99 * big


def test_a_scale_that_overflows_times_the_largest_level_is_refused():
    buf = codec.encode(SAMPLE, "zvc", 4, 16)  # unsigned 16-bit: levels up to 65535
    overflowing = reseal(buf[:HEADER.size] + struct.pack("<f", 3e38) + buf[HEADER.size + 4:])
    with pytest.raises(codec.StreamError, match="invalid scale in the header: .* finite times the largest level"):
        codec.decode(overflowing)


def test_encode_rejects_bad_maps():
    with pytest.raises(ValueError, match="NaN or infinite"):
        codec.encode(torch.tensor([[[float("nan")]]]))
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, C, H, W\)"):
        codec.encode(torch.ones(4, 4))


def reseal(buf: bytes) -> bytes:
    """Recompute both CRCs, so that a fabricated stream reaches the structural checks."""
    fields = list(HEADER.unpack_from(buf))
    n, scales = fields[5], fields[10]
    table_end = HEADER.size + 4 * scales + 8 * n
    payload = buf[table_end:]
    fields[12] = zlib.crc32(payload)
    head = HEADER.pack(*fields[:-1], 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(buf[HEADER.size:table_end], zlib.crc32(head))) + buf[HEADER.size:]


def with_fields(buf: bytes, **changes) -> bytes:
    names = ["magic", "version", "code", "bits", "flags", "n", "c", "h", "w", "block", "scales", "payload", "crc",
             "hcrc"]
    fields = dict(zip(names, HEADER.unpack_from(buf)))
    fields.update(changes)
    return reseal(HEADER.pack(*fields.values()) + buf[HEADER.size:])


SAMPLE = torch.relu(torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(3)) - 0.5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_truncation_is_a_clear_error(fmt):
    buf = codec.encode(SAMPLE, fmt, 4, 8)
    for cut in range(len(buf)):
        with pytest.raises(codec.StreamError, match="truncated|does not match|header"):
            codec.decode(buf[:cut])
    with pytest.raises(codec.StreamError, match="trailing bytes"):
        codec.decode(buf + b"\0")


def test_wire_codes_are_the_spec_s():
    """The header's format byte of each format is the number docs/FORMAT.md gives it, in the container table and
    in the stream table, whatever the registry's order; every stream carries its format's code."""
    spec = (Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md").read_text()
    titles = {f.title: name for name, f in FORMAT_REGISTRY.items()}
    container = re.search(r"^\| 5 \| 1 \| u8 \| format: (.*) \|$", spec, re.MULTILINE).group(1)
    from_container = {titles[title]: int(code) for code, title in re.findall(r"(\d+) ([^,]+)", container)}
    streams = spec.split("## 4.", 1)[1].split("\n## ", 1)[0]
    from_streams = {titles[title]: int(code)
                    for title, code in re.findall(r"^\| (\S+) \((\d+)\) \|", streams, re.MULTILINE)}
    assert from_container == from_streams == FORMAT_CODES == {name: f.code for name, f in FORMAT_REGISTRY.items()}
    assert set(FORMAT_CODES) == set(FORMATS)
    for fmt in FORMATS:
        assert codec.encode(SAMPLE, fmt, 4, 8)[5] == FORMAT_CODES[fmt]


def test_fabricated_headers_are_refused():
    buf = codec.encode(SAMPLE, "zebra", 4, 8)
    cases = [
        (b"PK\x03\x04" + buf[4:], "not a torchzebra codec stream"),
        (with_fields(buf, version=9), "version 9 is not supported"),
        (with_fields(buf, code=7), "invalid header fields"),
        (with_fields(buf, bits=12), "invalid header fields"),
        (with_fields(buf, flags=0x80), "invalid header fields"),
        (with_fields(buf, h=0), "invalid shape"),
        (with_fields(buf, scales=3), "truncated|scales"),
        (with_fields(buf, payload=10**15), "truncated"),
        (with_fields(buf, n=10**9), "truncated"),
        (with_fields(buf, h=2**20, w=2**20, block=0), "max_elements"),  # a 1 TB zero map in a few bytes
        (with_fields(buf, w=10), "bitmap describes|too short"),
        (with_fields(buf, c=4), "bitmap describes|too short"),
    ]
    for stream, message in cases:
        with pytest.raises(codec.StreamError, match=message):
            codec.decode(stream)
    with pytest.raises(codec.StreamError, match="CRC-32"):
        codec.decode(buf[:-1] + bytes([buf[-1] ^ 1]))
    with pytest.raises(codec.StreamError, match="header corrupted"):
        codec.decode(buf[:20] + bytes([buf[20] ^ 1]) + buf[21:])


def test_length_table_that_disagrees_with_the_bitmaps_is_refused():
    buf = codec.encode(SAMPLE, "zvc", 4, 8)
    info = codec.inspect(buf)
    table = HEADER.size + 4 * len(info.scale)
    lengths = np.frombuffer(buf, "<u8", 2, table).copy()
    lengths += np.array([1, -1], dtype=np.int64).astype(np.uint64)  # same total, wrong split
    with pytest.raises(codec.StreamError, match="map 0: its bitmap describes"):
        codec.decode(reseal(buf[:table] + lengths.tobytes() + buf[table + 16:]))


def _with_a_marked_zero(fmt: str) -> bytes:
    """A valid stream whose one value in block 1 is overwritten with zero (lengths and CRCs still agree).
    Two channels of 2x2 blocks: 8 block bits, so every value starts on a byte."""
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, 0, 0] = 1.0
    x[0, 0, 0, 2] = 1.0
    y = x.clone()
    y[0, 0, 0, 2] = 0.5  # the same stream but for the byte of this value
    a, b = codec.encode(x, fmt, 2, 8), codec.encode(y, fmt, 2, 8)
    start = codec.inspect(a).header_bytes
    differ = [i for i in range(start, len(a)) if a[i] != b[i]]
    assert len(differ) == 1
    buf = bytearray(a)
    buf[differ[0]] = 0
    return reseal(bytes(buf))


def test_a_block_marked_non_zero_that_holds_only_zeros_is_refused():
    with pytest.raises(codec.StreamError, match="a block marked non-zero in the block bitmap holds only zeros"):
        codec.decode(_with_a_marked_zero("zebra"))


@pytest.mark.parametrize("fmt", ["zvc", "zebra_zvc"])
def test_a_set_bit_over_a_zero_value_is_refused(fmt):
    with pytest.raises(codec.StreamError, match="a value marked non-zero in the bitmap is zero"):
        codec.decode(_with_a_marked_zero(fmt))


@pytest.mark.slow  # 400 hypothesis examples: a long loop
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), fmt=st.sampled_from(FORMATS), resealed=st.booleans())
def test_fuzzed_streams_decode_correctly_shaped_or_raise_stream_error(data, fmt, resealed):
    buf = bytearray(codec.encode(SAMPLE, fmt, data.draw(st.sampled_from([2, 4, "map"])), data.draw(
        st.sampled_from([8, 16, 32]))))
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(buf) - 1))
        buf[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        buf = buf[: data.draw(st.integers(0, len(buf)))]
    stream = bytes(buf)
    if resealed and len(stream) >= HEADER.size:
        try:
            stream = reseal(stream)
        except struct.error:
            pass
    try:
        out = codec.decode(stream)
    except codec.StreamError:
        return
    assert out.shape == SAMPLE.shape and torch.isfinite(out).all()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_refused(blob):
    with pytest.raises(codec.StreamError):
        codec.decode(blob)
    with pytest.raises(codec.StreamError):
        codec.decode(codec.layout.MAGIC + blob)


def test_export_writes_topology_densities_and_streams(tmp_path, capsys, tiny_run):
    assert main(["train", *tiny_run.args("zebra.enabled=true", "zebra.threshold=0.2"),
                 "--run-dir", str(tmp_path / "run")]) == 0
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "run" / "last.pt"), "--out", str(out), "--images", "0", "5",
                 "--format", "zebra", "--quiet"]) == 0
    lines = (out / "topology.csv").read_text().splitlines()
    assert lines[0] == "Layer name,IFMAP Height,IFMAP Width,Filter Height,Filter Width,Channels,Num Filter,Strides,"
    assert lines[1] == "stem.0,34,34,3,3,1,4,1,"  # 32x32 input padded by 1, grey input
    # SCALE-Sim's ceil((H - R + S) / S) of the exported 31 gives PyTorch's 16 (32 would give 17)
    assert "layer2.0.shortcut.0,31,31,1,1,4,8,2," in lines and lines[-1] == "fc,1,1,1,1,32,10,1,"
    assert (out / "layout.csv").is_file() and len((out / "layers.csv").read_text().splitlines()) == len(lines)
    density = yaml.safe_load((out / "density.yaml").read_text())
    assert density["images"] == 128 and len(density["layers"]) == 17
    first = density["layers"][0]
    assert first["name"] == "stem.2" and first["shape"] == [4, 32, 32]
    assert 0 < first["element_density"] <= first["block_density"] <= 1
    assert first["sparseloop"]["density"] == first["element_density"]
    manifest = json.loads((out / "maps" / "manifest.json").read_text())
    assert manifest["format"] == "zebra" and len(manifest["files"]) == 17
    for entry in manifest["files"]:
        stream = (out / "maps" / entry["file"]).read_bytes()
        assert entry["payload_bytes"] == entry["model_bytes"] and len(stream) == entry["bytes"]
        assert tuple(codec.decode(stream).shape) == tuple(entry["shape"]) and entry["shape"][0] == 2
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run" / "last.pt"), "--out", str(out), "--images", "999"]) == 2
    assert "image indices [999] are invalid" in capsys.readouterr().err
