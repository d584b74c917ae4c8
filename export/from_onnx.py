"""Rebuild a trainable :class:`~core.model.cdformer.CDFormer` (needs torch and onnx) from an exported hsr-diff ONNX model.

The bundled models ship without their torch checkpoints; fine-tuning one starts from the weights in
its graph. Most initialisers of an export keep their ``state_dict`` names, but the exporter renames
and transforms some: a ``Linear`` weight becomes the transposed ``MatMul`` operand, a
:class:`~core.model.blocks.LayerNorm2d` weight or bias the ``(1, C, 1, 1)`` operand of a ``Mul`` /
``Add``, and a window attention's ``rel_bias`` ``((2w-1)^2, heads)`` the gathered bias table
``(1, heads, w*w, w*w)`` of an ``Add``.

How the renamed initialisers are identified: a reference CDFormer with the file's ``model_config``
is exported by :func:`export.onnx_export.export_model` in the file's graph layout, with every
element of its ``state_dict`` set to a distinct float32 whose bit pattern encodes that element's
index (values ``2^40 .. 2^127``, which no constant of the graph takes). Reading back the reference's
renamed initialisers then gives, element by element, which parameter element each entry is a copy
of - transpose, reshape and the relative-position gather alike, without a rule per case. The file's
initialisers are paired with the reference's by their consumers (node name, op type and input
slot; a wrapper module's name prefix removed) or, where the node names differ, by structure: a hash
of the nodes that compute each consumer from the graph inputs and the named initialisers, together
with a hash of the nodes within a few edges after it (:func:`_consumer_keys`). Each parameter element is then copied from the
file; an element that occurs more than once (the gathered bias table) must have one value
everywhere, and every element of every parameter must be found, or the file is refused.

Only float32 graphs are read (a float16 export stores rounded weights: fine-tune from its float32
sibling).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["cdformer_from_onnx", "recover_state_dict"]

_EXP0 = 167  # biased float32 exponent of the first code, 2^40
_MANT = 1 << 23


def _encode(count: int) -> np.ndarray:
    """``(count,)`` float32 codes: element ``g`` has exponent ``2^(40 + g // 2^23)`` and mantissa ``g % 2^23``."""
    if count > (255 - _EXP0) * _MANT:
        raise ValueError(f"{count} parameter elements exceed the {(255 - _EXP0) * _MANT} codes")
    g = np.arange(count, dtype=np.uint64)
    bits = (((g // _MANT) + _EXP0) << np.uint64(23)) | (g % _MANT)
    return bits.astype(np.uint32).view(np.float32)


def _decode(values: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`_encode` for any float32 array: the element indices, -1 where a value is no code."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.int64)
    exp, mant = (bits >> 23) & 0xFF, bits & (_MANT - 1)
    g = (exp - _EXP0) * _MANT + mant
    ok = (bits >> 31 == 0) & (exp >= _EXP0) & (exp < 255) & (g < count)
    return np.where(ok, g, -1)


def _float_keys(state: dict) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point()]


def _hash(*parts) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()


def _attribute_repr(attr):
    from onnx import AttributeProto, helper, numpy_helper

    if attr.type == AttributeProto.TENSOR:
        a = numpy_helper.to_array(attr.t)
        return (attr.name, str(a.dtype), a.shape, hashlib.sha1(a.tobytes()).hexdigest())
    if attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS, AttributeProto.TENSORS):
        return (attr.name, hashlib.sha1(attr.SerializeToString()).hexdigest())
    return (attr.name, repr(helper.get_attribute_value(attr)))


def _module_prefix(graph, params: set[str]) -> str:
    """The prefix of the ``state_dict`` names in ``graph`` (``"inner."`` when the exporter wrapped the model, else ``""``)."""
    names = [i.name for i in graph.initializer]
    for n in names:
        if n in params:
            return ""
    for n in names:
        for k in params:
            if n.endswith("." + k):
                return n[: len(n) - len(k)]
    return ""


def _param_names(graph, params: set[str]) -> dict[str, str]:
    """Initialiser name -> ``state_dict`` name, for the initialisers that kept theirs (module prefix removed)."""
    prefix = _module_prefix(graph, params)
    out = {}
    for i in graph.initializer:
        if i.name.startswith(prefix) and i.name[len(prefix):] in params:
            out[i.name] = i.name[len(prefix):]
    return out


_RADII = (0, 1, 2, 4, 8, 16, 32, 64)


def _consumer_keys(graph, params: set[str]) -> list[dict[str, tuple]]:
    """Keys of each initialiser that is not a ``state_dict`` name, most specific first: by consumer names, then by structure.

    A wrapper module's prefix (:func:`_module_prefix`) is removed from initialiser and node names.
    The name key lists ``(node name, op type, input slot)`` of every consumer. The structure keys
    describe each consumer by an upstream hash - its op type, attributes and the hashes of its
    inputs (graph inputs by name, ``state_dict`` initialisers by name, other float initialisers by
    shape, other constants by value), a Merkle hash of how the consumer is computed - and a
    downstream hash over the nodes within ``r`` edges after it (:data:`_RADII`): two LayerNorms of
    one tensor differ only by where their outputs go, while far-away differences (a final cast)
    must not matter.
    """
    from onnx import TensorProto, numpy_helper

    named = _param_names(graph, params)
    prefix = _module_prefix(graph, params)
    scope = "/" + prefix.rstrip(".").replace(".", "/") if prefix else ""
    value_hash: dict[str, str] = {i.name: _hash("input", i.name) for i in graph.input}
    renamed = set()
    for init in graph.initializer:
        if init.name in named:
            value_hash[init.name] = _hash("param", named[init.name])
        elif init.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE):
            value_hash[init.name] = _hash("init", init.data_type, tuple(init.dims))
            renamed.add(init.name)
        else:
            a = numpy_helper.to_array(init)
            value_hash[init.name] = _hash("const", str(a.dtype), a.shape, a.tobytes())
    leaves = set(value_hash)
    nodes = list(graph.node)
    up, local = [], []
    consumers: dict[str, list[tuple[int, int]]] = {}
    for i, node in enumerate(nodes):
        attrs = tuple(sorted(_attribute_repr(a) for a in node.attribute))
        inputs = tuple(value_hash.get(x, _hash("missing", x)) if x else "" for x in node.input)
        up.append(_hash(node.op_type, node.domain, attrs, inputs))
        local.append(_hash(node.op_type, node.domain, attrs, tuple(value_hash[x] if x in leaves else "" for x in node.input)))
        for slot, x in enumerate(node.input):
            consumers.setdefault(x, []).append((i, slot))
        for slot, y in enumerate(node.output):
            value_hash[y] = _hash(up[i], "out", slot)
    outputs = {o.name for o in graph.output}
    edges = [tuple((k, y in outputs, tuple(consumers.get(y, ()))) for k, y in enumerate(node.output)) for node in nodes]
    down = {0: local}
    current = local
    for r in range(1, max(_RADII) + 1):
        current = [_hash(local[i], tuple((k, out, tuple(sorted((s, current[j]) for j, s in cons))) for k, out, cons in edges[i]))
                   for i in range(len(nodes))]
        if r in _RADII:
            down[r] = current
    keys: list[dict[str, list]] = [{n: [] for n in renamed} for _ in range(1 + len(_RADII))]
    for x in renamed:
        for i, slot in consumers.get(x, ()):
            name = nodes[i].name[len(scope):] if scope and nodes[i].name.startswith(scope + "/") else nodes[i].name
            keys[0][x].append((name, nodes[i].op_type, slot))
            for level, r in enumerate(_RADII, start=1):
                keys[level][x].append((up[i], slot, down[r][i]))
    return [{k: tuple(sorted(v)) for k, v in level.items() if v} for level in keys]


def _unique_keys(keys: dict[str, tuple]) -> dict[tuple, str]:
    """``key -> initialiser name`` for the keys that occur once (a key shared by two initialisers identifies neither)."""
    count: dict[tuple, int] = {}
    for k in keys.values():
        count[k] = count.get(k, 0) + 1
    return {k: n for n, k in keys.items() if count[k] == 1}


def _reference_maps(model, meta) -> list[dict[tuple, np.ndarray]]:
    """Export a coded copy of ``model`` in ``meta``'s layout; per key level (:func:`_consumer_keys`), key -> element indices."""
    import copy

    import onnx
    import torch

    from .onnx_export import export_model, untrained_export_info

    ref = copy.deepcopy(model).cpu().float()
    state = ref.state_dict()
    keys = _float_keys(state)
    codes = torch.from_numpy(_encode(sum(state[k].numel() for k in keys)))
    offset = 0
    with torch.no_grad():
        for k in keys:
            n = state[k].numel()
            state[k].copy_(codes[offset:offset + n].reshape(state[k].shape))
            offset += n
    info = untrained_export_info(ref, scale=meta.scale)
    with tempfile.TemporaryDirectory(prefix="hsr_diff_ref_") as tmp:
        path = export_model(ref.eval(), info, Path(tmp) / "reference.onnx", check=False, split=meta.graph == "split")
        proto = onnx.load(str(path))
    levels = _consumer_keys(proto.graph, set(state))
    index = {}
    for init in proto.graph.initializer:
        if init.name in levels[0] and init.data_type == onnx.TensorProto.FLOAT:
            g = _decode(onnx.numpy_helper.to_array(init), offset)
            if (g >= 0).all():
                index[init.name] = g
    return [{k: index[n] for k, n in _unique_keys(level).items() if n in index} for level in levels]


def recover_state_dict(proto, model, source: str = "<model>") -> dict:
    """The ``state_dict`` of ``model`` (a CDFormer of the right config) with every tensor read from ``proto``.

    ``proto``: the loaded ``onnx.ModelProto`` of a float32 export; ``source`` names it in errors.
    Raises ``ValueError`` naming ``source`` and the parameters not found, or an inconsistent copy.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    from .metadata import METADATA_KEY, ModelMetadata

    text = {p.key: p.value for p in proto.metadata_props}.get(METADATA_KEY)
    if text is None:
        raise ValueError(f"{source}: not an hsr-diff model (no '{METADATA_KEY}' metadata)")
    meta = ModelMetadata.from_json(text)
    state = model.state_dict()
    keys = _float_keys(state)
    sizes = [state[k].numel() for k in keys]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    total = int(starts[-1])
    flat = np.zeros(total, np.float32)
    seen = np.zeros(total, bool)
    inits = {i.name: i for i in proto.graph.initializer}
    named = {v: k for k, v in _param_names(proto.graph, set(state)).items()}  # state_dict name -> initialiser
    out: dict = {}
    for k, v in state.items():
        if k not in named:
            continue
        a = numpy_helper.to_array(inits[named[k]])
        if tuple(a.shape) != tuple(v.shape):
            raise ValueError(f"{source}: initialiser '{named[k]}' has shape {a.shape}, the model config gives {tuple(v.shape)}")
        if k in keys:
            i = keys.index(k)
            flat[starts[i]:starts[i + 1]] = a.reshape(-1)
            seen[starts[i]:starts[i + 1]] = True
        else:
            out[k] = torch.from_numpy(a.copy())
    kept = set(named.values())
    renamed = [n for n, i in inits.items() if n not in kept and i.data_type == onnx.TensorProto.FLOAT]
    unmatched = []
    if renamed:
        reference = _reference_maps(model, meta)
        levels = [_unique_keys(level) for level in _consumer_keys(proto.graph, set(state))]
        found = {}
        for ref_level, level in zip(reference, levels, strict=True):
            for k, n in level.items():
                if n not in found and k in ref_level:
                    found[n] = ref_level[k]
        for n in renamed:
            g = found.get(n)
            if g is None:
                unmatched.append(n)
                continue
            a = numpy_helper.to_array(inits[n]).astype(np.float32)
            if a.shape != g.shape:
                raise ValueError(f"{source}: initialiser '{n}' has shape {a.shape}, the reference export {g.shape}")
            g, a = g.reshape(-1), a.reshape(-1)
            clash = seen[g] & (flat[g] != a)
            order = np.argsort(g, kind="stable")
            gs, as_ = g[order], a[order]
            dup = gs[1:] == gs[:-1]
            if clash.any() or (as_[1:][dup] != as_[:-1][dup]).any():
                raise ValueError(f"{source}: initialiser '{n}' holds different values for one parameter element "
                                 "(not a copy of the model's parameters)")
            flat[g] = a
            seen[g] = True
    missing = [k for i, k in enumerate(keys) if not seen[starts[i]:starts[i + 1]].all()]
    missing += [k for k in state if k not in keys and k not in out]
    if missing:
        extra = f"; initialisers not identified: {', '.join(unmatched)}" if unmatched else ""
        raise ValueError(f"{source}: cannot recover {len(missing)} of the model's {len(state)} weight tensors from the graph "
                         f"({', '.join(missing)}){extra}; a file exported by an earlier hsr-diff has another graph layout: "
                         "fine-tune from its checkpoint folder instead")
    for i, k in enumerate(keys):
        out[k] = torch.from_numpy(flat[starts[i]:starts[i + 1]].reshape(tuple(state[k].shape)).copy())
    return {k: out[k] for k in state}


def cdformer_from_onnx(path: str | os.PathLike):
    """``(model, metadata)``: the CDFormer of an exported hsr-diff ``.onnx`` file with its weights, and its metadata.

    ``model`` is a :class:`~core.model.cdformer.CDFormer` in eval mode on the CPU, float32, whose
    ``forward(noisy, noise_level, lr_up, msi)`` reproduces the file's denoiser (for a split graph:
    ``condition`` its conditioning part, ``denoise`` its step part). ``metadata`` is the file's
    hsr-diff metadata document (the JSON under ``metadata_props['hsr_diff']``) as a dict, its
    ``model_config`` the model's config. Works on fused and split graphs (module docstring).

    Raises ``ValueError`` (:class:`~export.metadata.ModelFileError` for foreign files) naming the
    file when it is not an hsr-diff model, has no model config, is float16, or when some weight
    tensor cannot be recovered (the message names them).
    """
    import onnx

    from core.model.cdformer import CDFormer

    from .metadata import METADATA_KEY, read_metadata

    path = os.fspath(path)
    meta = read_metadata(path)
    if not meta.model_config:
        raise ValueError(f"{path}: the hsr-diff metadata has no model_config, so the network cannot be rebuilt")
    if meta.precision != "float32":
        raise ValueError(f"{path}: a {meta.precision} export stores rounded weights; rebuild from its float32 export")
    try:
        model = CDFormer(dict(meta.model_config))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: the metadata's model_config does not build a CDFormer ({exc})") from exc
    if meta.graph == "split" and meta.features != model.feature_count:
        raise ValueError(f"{path}: exported by an earlier hsr-diff ({meta.features} feature tensors between the graph's "
                         f"parts, this version's CDFormer has {model.feature_count}), so its weights cannot be read back "
                         "from the graph; fine-tune from its checkpoint folder, or re-export that with "
                         "`python -m export.onnx_export CHECKPOINT_DIR OUT.onnx`")
    proto = onnx.load(path)
    document = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    model.load_state_dict(recover_state_dict(proto, model, path))
    return model.eval(), document
