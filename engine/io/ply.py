"""A small, strict PLY reader and writer on numpy structured arrays (no torch).

Reading covers what other tools write: ASCII, binary little- and big-endian bodies, any element order,
elements that are not wanted (skipped without decoding, list properties such as faces included),
comments, obj_info lines and every PLY numeric type. Scalar properties of the wanted elements come back
as one structured array per element (native byte order, one field per property, in file order); list
properties are skipped. Binary bodies are decoded with ``np.frombuffer``, so a million rows read in a
fraction of a second; only list elements whose rows have different lengths (polygon meshes) and
ASCII list elements are walked row by row.

Writing produces binary little-endian files from structured arrays of scalar fields.

Every problem raises :class:`PlyFormatError` with the file path and what is wrong: not a PLY, a bad
header line, an unsupported format, or truncated data (bytes expected and found).

Variants that common readers (plyfile, Blender's PLY importer, the splat viewers) accept are accepted
too: bytes or values after the last element (padding some writers leave; counted in
``PlyHeader.trailing_bytes`` and otherwise ignored), a version written ``1`` or ``1.00``, blank lines,
tabs, CR LF line ends and trailing blanks on the magic line.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Optional

import numpy as np

from .atomic import atomic_write
from .errors import InvalidValuesError, PathLike, PlyFormatError

# PLY type names (both the classic and the sized spellings) -> numpy type codes without byte order.
PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
# The classic names, which is what 3DGS tools write and what every reader understands.
_WRITE_NAMES = {
    "i1": "char",
    "u1": "uchar",
    "i2": "short",
    "u2": "ushort",
    "i4": "int",
    "u4": "uint",
    "f4": "float",
    "f8": "double",
}
_STRUCT_CODES = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "f4": "f", "f8": "d"}

FORMATS = ("ascii", "binary_little_endian", "binary_big_endian")
_MAX_HEADER_BYTES = 1 << 20


@dataclass(frozen=True)
class PlyProperty:
    """One property of an element.

    Attributes:
        name: property name.
        type_code: numpy type code without byte order ("f4", "u1", ...); for a list, the item type.
        count_type_code: for a list property, the type code of its length prefix; None for scalars.
    """

    name: str
    type_code: str
    count_type_code: Optional[str] = None

    @property
    def is_list(self) -> bool:
        return self.count_type_code is not None


@dataclass
class PlyElementHeader:
    """An element as declared by the header: its name, row count and properties in file order."""

    name: str
    count: int
    properties: list[PlyProperty] = field(default_factory=list)

    @property
    def has_lists(self) -> bool:
        return any(p.is_list for p in self.properties)

    def scalar_dtype(self, byte_order: str = "=") -> np.dtype:
        """Packed structured dtype of the scalar properties (the whole row when there are no lists)."""
        return np.dtype([(p.name, byte_order + p.type_code) for p in self.properties if not p.is_list])


@dataclass
class PlyHeader:
    """A parsed PLY header.

    Attributes:
        format: "ascii", "binary_little_endian" or "binary_big_endian".
        elements: elements in file order.
        comments: text of the ``comment`` lines, in order.
        obj_info: text of the ``obj_info`` lines, in order.
        data_offset: byte offset of the body (just after the ``end_header`` line).
        trailing_bytes: set by :func:`read_ply`: bytes (binary) or values (ASCII) after the last
            element, which are ignored.
    """

    format: str
    elements: list[PlyElementHeader]
    comments: list[str]
    obj_info: list[str]
    data_offset: int
    trailing_bytes: int = 0


def _parse_type(word: str, line_number: int, path) -> str:
    if word not in PLY_TYPES:
        raise PlyFormatError(f"header line {line_number}: unknown property type {word!r}", path)
    return PLY_TYPES[word]


def _is_version_one(word: str) -> bool:
    try:
        return float(word) == 1.0
    except ValueError:
        return False


def _header_line(raw: bytes, header_bytes: int, path: Optional[PathLike]) -> str:
    """The text of a header line read as ``raw`` (``header_bytes``: the header's length so far)."""
    if not raw:
        raise PlyFormatError(f"the header has no end_header line (the file ends after {header_bytes} bytes)", path)
    if header_bytes > _MAX_HEADER_BYTES:
        raise PlyFormatError(f"no end_header line in the first {_MAX_HEADER_BYTES} bytes", path)
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")


def _parse_element(
    elements: list[PlyElementHeader], words: list[str], line: str, line_number: int, path: Optional[PathLike]
) -> PlyElementHeader:
    """The element of an ``element <name> <count>`` line (a name already in ``elements`` is an error)."""
    if len(words) != 3 or not words[2].isdigit():
        raise PlyFormatError(f"header line {line_number}: malformed element line {line!r}", path)
    if any(e.name == words[1] for e in elements):
        raise PlyFormatError(f"header line {line_number}: element {words[1]!r} is declared twice", path)
    return PlyElementHeader(words[1], int(words[2]))


def _parse_format(words: list[str], line: str, line_number: int, path: Optional[PathLike]) -> str:
    """The format name of a ``format <name> 1.0`` header line."""
    if len(words) != 3:
        raise PlyFormatError(f"header line {line_number}: malformed format line {line!r}", path)
    if words[1] not in FORMATS:
        raise PlyFormatError(f"unsupported format {words[1]!r} (supported: {', '.join(FORMATS)})", path)
    if not _is_version_one(words[2]):
        raise PlyFormatError(f"unsupported PLY version {words[2]!r} (supported: 1.0)", path)
    return words[1]


def _add_property(
    element: PlyElementHeader, words: list[str], line: str, line_number: int, path: Optional[PathLike]
) -> None:
    """Appends the property of a ``property <type> <name>`` or ``property list <count> <type> <name>`` line."""
    if len(words) == 5 and words[1] == "list":
        count_code = _parse_type(words[2], line_number, path)
        if count_code[0] == "f":
            raise PlyFormatError(f"header line {line_number}: list count type must be an integer type", path)
        prop = PlyProperty(words[4], _parse_type(words[3], line_number, path), count_code)
    elif len(words) == 3 and words[1] != "list":
        prop = PlyProperty(words[2], _parse_type(words[1], line_number, path))
    else:
        raise PlyFormatError(f"header line {line_number}: malformed property line {line!r}", path)
    if any(p.name == prop.name for p in element.properties):
        raise PlyFormatError(
            f"header line {line_number}: property {prop.name!r} appears twice in element {element.name!r}", path
        )
    element.properties.append(prop)


def read_header(file: BinaryIO, path: Optional[PathLike] = None) -> PlyHeader:
    """Parses the header of an open binary file positioned at its start; leaves it at the body."""
    magic = file.readline(16)
    if magic.strip() != b"ply":
        raise PlyFormatError(f"not a PLY file (it starts with {magic[:16]!r}, expected b'ply')", path)
    format_name: Optional[str] = None
    elements: list[PlyElementHeader] = []
    comments: list[str] = []
    obj_info: list[str] = []
    header_bytes = len(magic)
    line_number = 1
    while True:
        raw = file.readline(_MAX_HEADER_BYTES)
        line_number += 1
        header_bytes += len(raw)
        line = _header_line(raw, header_bytes, path)
        words = line.split()
        if not words:
            continue
        keyword = words[0]
        if keyword == "end_header":
            break
        if keyword in ("comment", "obj_info"):
            text = line.strip()[len(keyword) :].strip()
            (comments if keyword == "comment" else obj_info).append(text)
        elif keyword == "format":
            format_name = _parse_format(words, line, line_number, path)
        elif keyword == "element":
            elements.append(_parse_element(elements, words, line, line_number, path))
        elif keyword == "property":
            if not elements:
                raise PlyFormatError(f"header line {line_number}: property before any element", path)
            _add_property(elements[-1], words, line, line_number, path)
        else:
            raise PlyFormatError(f"header line {line_number}: unknown keyword {keyword!r}", path)
    if format_name is None:
        raise PlyFormatError("the header has no format line", path)
    return PlyHeader(format_name, elements, comments, obj_info, data_offset=header_bytes)


def read_ply(path: PathLike, elements: Optional[Collection[str]] = None) -> tuple[PlyHeader, dict[str, np.ndarray]]:
    """Reads a PLY file.

    Args:
        path: the file.
        elements: names of the elements to decode; None decodes all. Elements named here but absent
            from the file are simply missing from the result (the caller decides whether that is an error).

    Returns:
        The header and, for each decoded element, a structured array of shape (count,) holding its
        scalar properties in native byte order (list properties are skipped). Arrays may be views of
        one buffer holding the file's bytes.
    """
    with open(path, "rb") as file:
        header = read_header(file, path)
        # Read straight into a numpy buffer: no zero-filling and no bytes object (a writable body, so
        # the element arrays handed out can be views of it).
        body = np.empty(max(os.fstat(file.fileno()).st_size - header.data_offset, 0), dtype=np.uint8)
        body = body[: file.readinto(memoryview(body))]
    wanted = None if elements is None else set(elements)
    if header.format == "ascii":
        arrays = _read_ascii_body(body, header, wanted, path)
    else:
        byte_order = "<" if header.format == "binary_little_endian" else ">"
        arrays = _read_binary_body(body, header, wanted, byte_order, path)
    return header, arrays


def _read_binary_body(body: np.ndarray, header: PlyHeader, wanted, byte_order: str, path) -> dict[str, np.ndarray]:
    arrays = {}
    offset = 0
    for element in header.elements:
        if element.has_lists:
            scalars, offset = _read_binary_list_element(body, offset, element, byte_order, path)
        else:
            row_dtype = element.scalar_dtype(byte_order)
            expected = row_dtype.itemsize * element.count
            if len(body) - offset < expected:
                raise PlyFormatError(
                    f"truncated data: element {element.name!r} needs {expected} bytes "
                    f"({element.count} rows of {row_dtype.itemsize} bytes) but only {len(body) - offset} bytes are left "
                    f"(the header says {element.count} {element.name} rows, the data has fewer)",
                    path,
                )
            scalars = np.frombuffer(body, row_dtype, element.count, offset)
            offset += expected
        if wanted is None or element.name in wanted:
            # Native-order data stays a view of the file's bytes (no copy of a large body); the other
            # byte order is converted.
            arrays[element.name] = (
                scalars if scalars.dtype.isnative else scalars.astype(scalars.dtype.newbyteorder("="))
            )
    header.trailing_bytes = len(body) - offset
    return arrays


def _read_binary_list_element(
    body: np.ndarray, offset: int, element: PlyElementHeader, byte_order: str, path
) -> tuple[np.ndarray, int]:
    """Decodes an element with list properties; returns its scalars and the offset after it."""
    if element.count == 0:
        return np.empty(0, element.scalar_dtype(byte_order)), offset
    # Fast path: list lengths read from the first row; if every row has the same lengths (triangle
    # meshes) the element is one fixed-size record array.
    fields = []
    position = offset
    try:
        for prop in element.properties:
            if prop.is_list:
                length = int(np.frombuffer(body, byte_order + prop.count_type_code, 1, position)[0])
                fields.append((prop.name + ".count", byte_order + prop.count_type_code))
                fields.append((prop.name, byte_order + prop.type_code, (max(length, 0),)))
                position += np.dtype(prop.count_type_code).itemsize + max(length, 0) * np.dtype(prop.type_code).itemsize
            else:
                fields.append((prop.name, byte_order + prop.type_code))
                position += np.dtype(prop.type_code).itemsize
    except ValueError:  # np.frombuffer past the end of the body
        raise PlyFormatError(f"truncated data in the first row of element {element.name!r}", path) from None
    row_dtype = np.dtype(fields)
    if len(body) - offset >= row_dtype.itemsize * element.count:
        rows = np.frombuffer(body, row_dtype, element.count, offset)
        if all(np.all(rows[p.name + ".count"] == rows.dtype[p.name].shape[0]) for p in element.properties if p.is_list):
            scalar_names = [p.name for p in element.properties if not p.is_list]
            scalars = np.empty(element.count, element.scalar_dtype(byte_order))
            for name in scalar_names:
                scalars[name] = rows[name]
            return scalars, offset + row_dtype.itemsize * element.count
    return _walk_binary_list_element(body, offset, element, byte_order, path)


def _walk_binary_list_element(
    body: np.ndarray, offset: int, element: PlyElementHeader, byte_order: str, path
) -> tuple[np.ndarray, int]:
    """Row-by-row decoding of a list element whose rows differ in length (e.g. mixed polygons)."""
    steps = []  # per property: (is_list, struct for the scalar or count, item size)
    for prop in element.properties:
        if prop.is_list:
            steps.append(
                (
                    True,
                    struct.Struct(byte_order + _STRUCT_CODES[prop.count_type_code]),
                    np.dtype(prop.type_code).itemsize,
                )
            )
        else:
            steps.append((False, struct.Struct(byte_order + _STRUCT_CODES[prop.type_code]), 0))
    rows = []
    position = offset
    try:
        for row in range(element.count):
            values = []
            for is_list, reader, item_size in steps:
                (value,) = reader.unpack_from(body, position)
                position += reader.size
                if is_list:
                    if value < 0:
                        raise PlyFormatError(
                            f"element {element.name!r} row {row} has a negative list length {value}", path
                        )
                    position += value * item_size
                else:
                    values.append(value)
            rows.append(tuple(values))
    except struct.error:
        raise PlyFormatError(
            f"truncated data: element {element.name!r} ends at row {row} of {element.count} "
            f"(the header says {element.count} {element.name} rows, the data has fewer)",
            path,
        ) from None
    if position > len(body):
        raise PlyFormatError(
            f"truncated data: the lists of element {element.name!r} need {position - offset} bytes "
            f"but only {len(body) - offset} are left",
            path,
        )
    return np.array(rows, dtype=element.scalar_dtype("=")), position


def _parse_ascii_column(tokens: np.ndarray, prop: PlyProperty, element: PlyElementHeader, path) -> np.ndarray:
    """Unicode tokens -> values of the property's type, with range checks for integer types."""
    code = prop.type_code
    try:
        if code[0] == "f":
            return tokens.astype(code)
        values = tokens.astype(np.int64)
    except ValueError as error:
        raise PlyFormatError(
            f"element {element.name!r} property {prop.name!r} ({_WRITE_NAMES[code]}) has a value that is not a number: {error}",
            path,
        ) from None
    info = np.iinfo(code)
    if values.size and (values.min() < info.min or values.max() > info.max):
        bad = values[(values < info.min) | (values > info.max)][0]
        raise PlyFormatError(
            f"element {element.name!r} property {prop.name!r} has value {bad} outside the {_WRITE_NAMES[code]} range",
            path,
        )
    return values.astype(code)


def _read_ascii_body(body: np.ndarray, header: PlyHeader, wanted, path) -> dict[str, np.ndarray]:
    try:
        tokens = np.array(body.tobytes().decode("ascii").split())
    except UnicodeDecodeError as error:
        raise PlyFormatError(f"the ASCII body holds a non-ASCII byte at offset {error.start}", path) from None
    arrays = {}
    position = 0
    for element in header.elements:
        decode = wanted is None or element.name in wanted
        if element.has_lists:
            element_tokens, position = _ascii_list_element_tokens(tokens, position, element, path)
        else:
            needed = element.count * len(element.properties)
            if len(tokens) - position < needed:
                raise PlyFormatError(
                    f"truncated data: element {element.name!r} needs {needed} values ({element.count} rows of "
                    f"{len(element.properties)}) but only {len(tokens) - position} are left "
                    f"(the header says {element.count} {element.name} rows, the data has fewer)",
                    path,
                )
            element_tokens = tokens[position : position + needed].reshape(element.count, len(element.properties))
            position += needed
        if decode:
            scalars = np.empty(element.count, element.scalar_dtype("="))
            for column, prop in enumerate(p for p in element.properties if not p.is_list):
                scalars[prop.name] = _parse_ascii_column(element_tokens[:, column], prop, element, path)
            arrays[element.name] = scalars
    header.trailing_bytes = len(tokens) - position
    return arrays


def _ascii_list_element_tokens(
    tokens: np.ndarray, position: int, element: PlyElementHeader, path
) -> tuple[np.ndarray, int]:
    """Walks an ASCII element with lists; returns its scalar tokens (count, n_scalars) and the new position."""
    n_scalars = sum(not p.is_list for p in element.properties)
    picked = np.empty((element.count, n_scalars), dtype=tokens.dtype)
    for row in range(element.count):
        column = 0
        for prop in element.properties:
            if position >= len(tokens):
                raise PlyFormatError(
                    f"truncated data: element {element.name!r} ends at row {row} of {element.count} "
                    f"(the header says {element.count} {element.name} rows, the data has fewer)",
                    path,
                )
            if prop.is_list:
                try:
                    length = int(tokens[position])
                except ValueError:
                    raise PlyFormatError(
                        f"element {element.name!r} row {row}: list length {tokens[position]!r} of {prop.name!r} is not an integer",
                        path,
                    ) from None
                if length < 0:
                    raise PlyFormatError(
                        f"element {element.name!r} row {row} has a negative list length {length}", path
                    )
                position += 1 + length
            else:
                picked[row, column] = tokens[position]
                column += 1
                position += 1
    if position > len(tokens):
        raise PlyFormatError(f"truncated data: the last list of element {element.name!r} is cut short", path)
    return picked, position


def write_ply(
    path: PathLike,
    elements: Sequence[tuple[str, np.ndarray]],
    *,
    comments: Sequence[str] = (),
    obj_info: Sequence[str] = (),
) -> None:
    """Writes a binary little-endian PLY atomically (see :func:`engine.io.atomic.atomic_write`).

    Args:
        path: destination file.
        elements: (name, structured array of shape (count,)) pairs in file order; each field becomes a
            scalar property of the field's type (int8..uint32, float32, float64).
        comments, obj_info: header lines (single-line text each).
    """
    lines = ["ply", "format binary_little_endian 1.0"]
    for keyword, texts in (("comment", comments), ("obj_info", obj_info)):
        for text in texts:
            if "\n" in text or "\r" in text or not text.isascii():
                raise ValueError(f"write_ply: a PLY {keyword} must be one line of ASCII text, got {text!r}")
            lines.append(f"{keyword} {text}".rstrip())
    little_endian = []
    for name, array in elements:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"write_ply: invalid element name {name!r}")
        if array.ndim != 1 or array.dtype.names is None:
            raise ValueError(f"write_ply: element {name!r} must be a 1-D structured array, got dtype {array.dtype}")
        lines.append(f"element {name} {len(array)}")
        fields = []
        for field_name in array.dtype.names:
            field_dtype = array.dtype[field_name]
            code = f"{field_dtype.kind}{field_dtype.itemsize}"
            if field_dtype.shape or code not in _WRITE_NAMES:
                raise ValueError(
                    f"write_ply: field {field_name!r} of element {name!r} has dtype {field_dtype}, not a PLY scalar type"
                )
            if not field_name or any(c.isspace() for c in field_name):
                raise ValueError(f"write_ply: invalid property name {field_name!r}")
            lines.append(f"property {_WRITE_NAMES[code]} {field_name}")
            fields.append((field_name, "<" + code))
        little_endian.append(np.ascontiguousarray(array, dtype=np.dtype(fields)))
    lines.append("end_header")
    with atomic_write(path, "wb") as file:
        file.write(("\n".join(lines) + "\n").encode("ascii"))
        for array in little_endian:
            file.write(array.view(np.uint8))  # the raw rows, without a bytes copy


NON_FINITE_POLICIES = ("error", "drop")


def check_non_finite_policy(policy: str) -> None:
    if policy not in NON_FINITE_POLICIES:
        raise ValueError(f"non_finite must be one of {NON_FINITE_POLICIES}, got {policy!r}")


def check_non_finite(
    names: Sequence[str],
    block: np.ndarray,
    policy: str,
    row_noun: str,
    path: Optional[PathLike],
    *,
    out_of_range: Optional[np.ndarray] = None,
) -> Optional[np.ndarray]:
    """Applies an invalid-value policy to property values read from (or about to be written to) a file.

    Args:
        names: the P property names of the columns of ``block`` (file names, so messages name them).
        block: (N, P) float values, one column per property.
        policy: "error" raises :class:`InvalidValuesError` naming how many rows and which properties
            are invalid; "drop" returns the mask of rows to keep.
        row_noun: what a row is, plural, for the message ("splats", "points").
        out_of_range: optional (N, P) boolean mask of finite values that are invalid all the same
            (e.g. log-scales whose exponential overflows).

    Returns:
        None when every value is valid, else (policy "drop") the boolean mask (N,) of rows to keep.
    """
    check_non_finite_policy(policy)
    bad = ~np.isfinite(block)
    if out_of_range is not None:
        bad |= out_of_range
    if not bad.any():
        return None
    bad_rows = bad.any(axis=1)
    if policy == "error":
        bad_names = [names[column] for column in np.flatnonzero(bad.any(axis=0))]
        count = int(bad_rows.sum())
        raise InvalidValuesError(
            f"{count} of {len(block)} {row_noun} have invalid values (NaN, infinite or out of range) "
            f"in: {', '.join(bad_names)}",
            path,
            count=count,
            total=len(block),
            properties=bad_names,
        )
    return ~bad_rows
