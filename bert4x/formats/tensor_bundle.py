"""TensorFlow checkpoints (tensor bundles) read without TensorFlow.

A checkpoint at `prefix` is `prefix.index` plus the shards `prefix.data-SSSSS-of-NNNNN`.

    .index   a LevelDB-format table (tensorflow/core/lib/io/table_format.txt):
             data blocks | metaindex block | index block | footer
    footer   48 bytes: metaindex and index BlockHandles (varint64 offset, varint64 size
             each), zero padding to 40 bytes, magic 0xdb4775248b80fb57 (fixed64 LE)
    block    entries, restart offsets (uint32 each), their count (uint32); then a 5-byte
             trailer: type (0 raw, 1 snappy) and masked crc32c of contents + type byte
    entry    varint32 shared, varint32 non_shared, varint32 value_length,
             key[shared:], value; the key continues the previous key's first `shared` bytes
    values   index block: BlockHandles of data blocks. data blocks: key '' ->
             BundleHeaderProto, key tensor name -> BundleEntryProto (tensor_bundle.proto)
    .data-*  entry.size bytes at entry.offset of shard entry.shard_id: the raw little-endian
             row-major tensor; strings are varint64 lengths, a masked crc32c of the lengths
             (each as uint32), then the bytes. entry.crc32c = mask(crc32c(those bytes)).

mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2^32). Only the few protobuf fields
named above are decoded, by hand (varint and length-delimited wire types).

Checksums: crc32c runs in pure Python (~5 MB/s), so by default every index block and each
tensor of at most `max_checksum_bytes` (1 MiB: biases, norms, small tables) is verified;
pass `max_checksum_bytes=None` to verify all, 0 to verify none. Every corruption found
raises ValueError naming the file.
"""

import os
import re
import struct

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
TRAILER_SIZE = 5
MASK_DELTA = 0xA282EAD8
CRC32C_POLY = 0x82F63B78  # Castagnoli, reflected
DEFAULT_MAX_CHECKSUM_BYTES = 1 << 20


def _bfloat16():
    """ml_dtypes' bfloat16 numpy type, or None (then bfloat16 tensors become float32)."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


#: DataType enum (tensorflow/core/framework/types.proto) -> numpy dtype; 7 is DT_STRING.
DTYPES = {
    1: np.dtype("float32"),
    2: np.dtype("float64"),
    3: np.dtype("int32"),
    4: np.dtype("uint8"),
    5: np.dtype("int16"),
    6: np.dtype("int8"),
    8: np.dtype("complex64"),
    9: np.dtype("int64"),
    10: np.dtype("bool"),
    14: np.dtype("uint16"),  # bfloat16 bits, converted by _decode_bfloat16
    17: np.dtype("uint16"),
    18: np.dtype("complex128"),
    19: np.dtype("float16"),
    22: np.dtype("uint32"),
    23: np.dtype("uint64"),
}
DT_STRING, DT_BFLOAT16 = 7, 14


# ----------------------------------------------------------------------------- checksums
def _crc32c_table():
    table = []
    for byte in range(256):
        c = byte
        for _ in range(8):
            c = (c >> 1) ^ CRC32C_POLY if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli) of `data`, continuing from `crc`; crc32c(b'123456789') = 0xE3069283."""
    c = crc ^ 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        c = table[(c ^ byte) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def mask_crc(crc):
    """LevelDB's masked crc: rotate right by 15 bits, add 0xa282ead8 (mod 2^32)."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- primitives
class _Corrupt(ValueError):
    """A malformed structure; the reader re-raises it as a ValueError naming the file."""


def read_varint(buf, pos, limit=None):
    """(value, next position) of the base-128 varint at buf[pos] (at most 10 bytes)."""
    end = len(buf) if limit is None else limit
    value = shift = 0
    while shift < 70:
        if pos >= end:
            raise _Corrupt("varint runs past the end of its buffer")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise _Corrupt("varint longer than 10 bytes")


def parse_message(buf):
    """{field number: [values]} of a protobuf message: ints for varint/fixed, bytes for strings."""
    fields, pos = {}, 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise _Corrupt("fixed-width protobuf field runs past the end")
            value = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                raise _Corrupt("length-delimited protobuf field runs past the end")
            value, pos = bytes(buf[pos : pos + length]), pos + length
        else:
            raise _Corrupt(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _last(fields, number, kind=int):
    """The field's last occurrence (proto3: the last one wins), checked to be `kind`
    (int for varint/fixed fields, bytes for messages); 0 or b'' when absent."""
    value = fields.get(number, [kind()])[-1]
    if not isinstance(value, kind):
        raise _Corrupt(f"protobuf field {number} has the wrong wire type")
    return value


def snappy_decompress(data):
    """Raw snappy: varint uncompressed length, then literal and copy elements."""
    length, pos = read_varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal; lengths above 60 are stored in 1-4 following bytes
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                size = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            size += 1
            if pos + size > len(data) or len(out) + size > length:
                raise _Corrupt("snappy literal runs past the end")
            out += data[pos : pos + size]
            pos += size
            continue
        if kind == 1:  # copy, 1-byte offset
            size, offset, width = ((tag >> 2) & 7) + 4, (tag >> 5) << 8, 1
        else:  # copy, 2- or 4-byte offset
            size, offset, width = (tag >> 2) + 1, 0, 2 if kind == 2 else 4
        if pos + width > len(data):
            raise _Corrupt("snappy copy runs past the end")
        offset += int.from_bytes(data[pos : pos + width], "little")
        pos += width
        if offset == 0 or offset > len(out) or len(out) + size > length:
            raise _Corrupt("snappy copy points outside the output")
        for _ in range(size):  # byte by byte: a copy may overlap its own output
            out.append(out[-offset])
    if len(out) != length:
        raise _Corrupt(f"snappy output has {len(out)} bytes, header says {length}")
    return bytes(out)


# ----------------------------------------------------------------------------- the table
def read_block(data, handle, verify):
    """Contents of the block at BlockHandle `handle`, trailer checked and snappy undone."""
    offset, size = handle
    end = offset + size
    if end + TRAILER_SIZE > len(data):
        raise _Corrupt(f"block [{offset}, {end}) lies past the end of the file")
    contents, kind = data[offset:end], data[end]
    if verify:
        (stored,) = struct.unpack_from("<I", data, end + 1)
        if mask_crc(crc32c(data[offset : end + 1])) != stored:
            raise _Corrupt(f"block at offset {offset} fails its crc32c check")
    if kind == 0:
        return contents
    if kind == 1:
        return snappy_decompress(contents)
    raise _Corrupt(f"block at offset {offset} has unknown compression type {kind}")


def block_entries(block):
    """(key, value) pairs of a table block, in order."""
    if len(block) < 4:
        raise _Corrupt("block shorter than its restart count")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise _Corrupt("block restart array is larger than the block")
    entries, key, pos = [], b"", 0
    while pos < limit:
        shared, pos = read_varint(block, pos, limit)
        unshared, pos = read_varint(block, pos, limit)
        size, pos = read_varint(block, pos, limit)
        if shared > len(key) or pos + unshared + size > limit:
            raise _Corrupt("block entry runs past its block")
        key = key[:shared] + bytes(block[pos : pos + unshared])
        pos += unshared
        entries.append((key, bytes(block[pos : pos + size])))
        pos += size
    return entries


def read_handle(buf, pos=0):
    """(offset, size) of an encoded BlockHandle and the position after it."""
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return (offset, size), pos


def read_table(data, verify=True):
    """{key bytes: value bytes} of a whole LevelDB-format table held in `data`."""
    if len(data) < FOOTER_SIZE:
        raise _Corrupt(f"{len(data)} bytes is shorter than the {FOOTER_SIZE}-byte footer")
    footer = data[-FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise _Corrupt("bad magic number: not a TensorFlow checkpoint index")
    _, pos = read_handle(footer)  # metaindex: TF writes no filters, nothing to read
    index_handle, _ = read_handle(footer, pos)
    table = {}
    for _, value in block_entries(read_block(data, index_handle, verify)):
        handle, _ = read_handle(value)
        table.update(block_entries(read_block(data, handle, verify)))
    return table


# ----------------------------------------------------------------------------- bundle entries
def parse_entry(value):
    """BundleEntryProto -> dict(dtype, shape, shard, offset, size, crc, sliced)."""
    fields = parse_message(value)
    shape_fields = parse_message(_last(fields, 2, bytes))
    if _last(shape_fields, 3):
        raise _Corrupt("tensor of unknown rank")
    shape = []
    for dim in shape_fields.get(2, []):
        if not isinstance(dim, bytes):
            raise _Corrupt("tensor dimension has the wrong wire type")
        size = _last(parse_message(dim), 1)
        if size >= 1 << 62:  # negative int64 or absurd
            raise _Corrupt(f"invalid dimension {size}")
        shape.append(size)
    return {
        "dtype": _last(fields, 1),
        "shape": tuple(shape),
        "shard": _last(fields, 3),
        "offset": _last(fields, 4),
        "size": _last(fields, 5),
        "crc": _last(fields, 6),
        "sliced": bool(fields.get(7)),  # TensorSliceProto entries: a partitioned variable
    }


def parse_header(value):
    """(num_shards, big_endian) of the BundleHeaderProto."""
    fields = parse_message(value)
    return _last(fields, 1), _last(fields, 2) == 1


def decode_strings(buf, count):
    """`count` byte strings of a DT_STRING tensor, and the crc32c TF computes over them."""
    lengths, pos = [], 0
    for _ in range(count):
        length, pos = read_varint(buf, pos)
        lengths.append(length)
    crc = 0
    for length in lengths:
        crc = crc32c(struct.pack("<I" if length <= 0xFFFFFFFF else "<Q", length), crc)
    if pos + 4 > len(buf) or mask_crc(crc) != struct.unpack_from("<I", buf, pos)[0]:
        raise _Corrupt("string lengths fail their crc32c check")
    crc = crc32c(buf[pos : pos + 4], crc)
    pos += 4
    if pos + sum(lengths) != len(buf):
        raise _Corrupt("string lengths do not add up to the stored size")
    strings = []
    for length in lengths:
        strings.append(bytes(buf[pos : pos + length]))
        pos += length
    return strings, crc32c(buf[len(buf) - sum(lengths) :], crc)


def _decode_bfloat16(bits):
    """bfloat16 bit patterns (uint16) as ml_dtypes.bfloat16, else as float32 (bits << 16)."""
    bfloat16 = _bfloat16()
    if bfloat16 is not None:
        return bits.view(bfloat16)
    return (bits.astype(np.uint32) << 16).view(np.float32)


# ----------------------------------------------------------------------------- the reader
def resolve_prefix(path):
    """The checkpoint prefix of `path`: itself, or the latest one named by a directory's
    `checkpoint` state file (model_checkpoint_path: "..."), or a directory's only .index."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return path
    state = os.path.join(path, "checkpoint")
    if os.path.isfile(state):
        with open(state, encoding="utf-8", errors="replace") as file:
            match = re.search(r'^model_checkpoint_path:\s*"(.*)"', file.read(), re.MULTILINE)
        if match:
            return os.path.join(path, match.group(1))
    indexes = sorted(name for name in os.listdir(path) if name.endswith(".index"))
    if len(indexes) == 1:
        return os.path.join(path, indexes[0][: -len(".index")])
    raise ValueError(
        f"directory {path!r} holds {len(indexes)} checkpoint indexes and no usable 'checkpoint' "
        "state file; pass the prefix itself (e.g. '.../bert_model.ckpt')"
    )


class TensorBundleReader:
    """A TensorFlow checkpoint read without TensorFlow, with tf.train.load_checkpoint's interface.

    `get_tensor` returns what TensorFlow returns: numpy arrays (numpy scalars for rank 0),
    bytes / object arrays for strings, ml_dtypes.bfloat16 for bfloat16 (float32 when
    ml_dtypes is missing). Partitioned (sliced) variables are not supported.
    """

    def __init__(self, path, max_checksum_bytes=DEFAULT_MAX_CHECKSUM_BYTES):
        self.prefix = resolve_prefix(path)
        self.max_checksum_bytes = max_checksum_bytes
        index_path = self.prefix + ".index"
        try:
            with open(index_path, "rb") as file:
                data = file.read()
        except OSError as error:
            raise ValueError(
                f"cannot read a TensorFlow checkpoint at {self.prefix!r} ({error.strerror}): pass "
                "the prefix (e.g. '.../bert_model.ckpt') or the directory that holds it"
            ) from error
        try:
            table = read_table(data, verify=max_checksum_bytes != 0)
            header = table.pop(b"", None)
            if header is None:
                raise _Corrupt("no bundle header (empty key)")
            self.num_shards, big_endian = parse_header(header)
            self.entries = {key.decode("utf-8"): parse_entry(value) for key, value in table.items()}
        except (_Corrupt, UnicodeDecodeError) as error:
            raise ValueError(
                f"TensorFlow checkpoint index {index_path!r} is truncated or corrupted: {error}"
            ) from None
        if big_endian:
            raise ValueError(f"{index_path!r} was written on a big-endian machine; not supported")

    def get_variable_to_shape_map(self):
        """{name: shape} of every tensor in the checkpoint."""
        return {name: list(entry["shape"]) for name, entry in self.entries.items()}

    def get_variable_to_dtype_map(self):
        """name -> numpy dtype (object for strings, bfloat16 as get_tensor returns it)."""
        return {name: self._dtype(entry) for name, entry in self.entries.items()}

    def has_tensor(self, name):
        """True when the checkpoint holds a tensor called `name`."""
        return name in self.entries

    def get_tensor(self, name):
        """The numpy value of tensor `name`, checksum verified within max_checksum_bytes."""
        if name not in self.entries:
            raise ValueError(f"checkpoint {self.prefix!r} has no tensor {name!r}")
        entry = self.entries[name]
        try:
            return self._decode(entry, self._read(entry))
        except _Corrupt as error:
            raise ValueError(
                f"tensor {name!r} of checkpoint {self.prefix!r} is corrupted: {error}"
            ) from None

    def _dtype(self, entry):
        if entry["dtype"] == DT_STRING:
            return np.dtype(object)
        if entry["dtype"] == DT_BFLOAT16:
            return _bfloat16() or np.dtype("float32")
        return DTYPES.get(entry["dtype"])

    def _read(self, entry):
        """The entry's bytes from its data shard, bounds and checksum checked."""
        if entry["sliced"]:
            raise _Corrupt("a partitioned (sliced) variable; load it with TensorFlow")
        if entry["shard"] >= max(self.num_shards, 1):
            raise _Corrupt(f"shard {entry['shard']} of a {self.num_shards}-shard bundle")
        path = f"{self.prefix}.data-{entry['shard']:05d}-of-{self.num_shards:05d}"
        try:
            with open(path, "rb") as file:
                available = os.fstat(file.fileno()).st_size
                if entry["offset"] + entry["size"] > available:
                    raise _Corrupt(f"{path} is truncated ({available} bytes)")
                file.seek(entry["offset"])
                data = file.read(entry["size"])
        except OSError as error:
            raise _Corrupt(f"cannot read {path}: {error.strerror}") from None
        limit = self.max_checksum_bytes
        verify = entry["dtype"] != DT_STRING and (limit is None or len(data) <= limit)
        if verify and mask_crc(crc32c(data)) != entry["crc"]:
            raise _Corrupt("data fails its crc32c check")
        return data

    def _decode(self, entry, data):
        """Array (or scalar, or bytes) of shape entry['shape'] from the raw bytes."""
        shape, count = entry["shape"], int(np.prod(entry["shape"], dtype=object))
        if entry["dtype"] == DT_STRING:
            strings, crc = decode_strings(data, count)
            if self.max_checksum_bytes != 0 and mask_crc(crc) != entry["crc"]:
                raise _Corrupt("string data fails its crc32c check")
            if not shape:
                return strings[0]
            array = np.empty(count, dtype=object)
            array[:] = strings
            return array.reshape(shape)
        dtype = DTYPES.get(entry["dtype"])
        if dtype is None:
            raise _Corrupt(f"unsupported dtype enum {entry['dtype']}")
        if count * dtype.itemsize != len(data):
            raise _Corrupt(f"{len(data)} bytes do not hold {shape} x {dtype}")
        array = np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
        if entry["dtype"] == DT_BFLOAT16:
            array = _decode_bfloat16(array)
        return array[()] if not shape else array
