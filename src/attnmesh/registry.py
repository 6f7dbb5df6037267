"""The registry of landmark models: one table of every network ``FaceMesh``, the CLI, ``eval``, export and the
runtime backends can run, with its weights and configuration kept apart from the code (in the spirit of
timm's ``create_model`` and segment-anything's ``sam_model_registry``).

    >>> import attnmesh
    >>> attnmesh.list_models()
    ['attention_mesh', 'attention_mesh_300w', 'cascade', 'face_landmark', 'face_transformer_xs']
    >>> net = attnmesh.create_model("attention_mesh")       # torch.nn.Module, shipped weights, eval mode
    >>> fm = attnmesh.FaceMesh(model="face_transformer_xs")  # any registered name, on any listed backend

Older spellings stay accepted as aliases (``"attention"``, ``"transformer"``). Every network takes RGB crops
of ``input_size`` x ``input_size`` pixels (uint8 on the runtime backends; float NCHW in ``input_range`` for
the PyTorch modules) and gives ``num_landmarks`` (x, y, z) points in crop pixels (z on x's scale).
This module needs no PyTorch; :func:`create_model` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .models.sizes import FACE_TRANSFORMER_INPUT_SIZE, IRIS_INPUT_SIZE, MESH_INPUT_SIZE
from .topology import NUM_MESH_LANDMARKS, NUM_REFINED_LANDMARKS

if TYPE_CHECKING:
    from torch import nn

#: Every backend a registered model may run on (``"auto"`` picks one of them; see :mod:`attnmesh.runtime`).
ALL_BACKENDS = ("torch", "onnxruntime", "openvino")
#: Architectures: the PyTorch module of each (built by :func:`create_model`).
ARCHITECTURES = ("attention_mesh", "face_landmark", "cascade", "face_transformer")


@dataclass(frozen=True)
class ModelSpec:
    """One registered landmark model.

    Attributes:
        name: canonical name (``FaceMesh(model=name)``, ``--model name``).
        architecture: one of :data:`ARCHITECTURES`.
        weights: the shipped weights it loads (names in ``attnmesh/weights/manifest.json``).
        input_size: crop side, pixels.
        num_landmarks: points per face (478 refined, 468 for the base mesh).
        input_range: the float input of the PyTorch module: uint8 / 255 maps onto this range.
        backends: the runtime backends it runs on.
        summary: one line for tables and ``--help``.
        card: its model card in the docs (a path in the repository), if any.
        aliases: older names that still resolve to it.
        config: keyword arguments of the architecture's constructor.
    """

    name: str
    architecture: str
    weights: tuple[str, ...]
    input_size: int
    num_landmarks: int
    summary: str
    input_range: tuple[float, float] = (0.0, 1.0)
    backends: tuple[str, ...] = ALL_BACKENDS
    card: str | None = None
    aliases: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)


_MODELS = (
    ModelSpec("attention_mesh", "attention_mesh", ("attention_mesh",), MESH_INPUT_SIZE, NUM_REFINED_LANDMARKS,
              "Attention Mesh (the paper; MediaPipe's face_landmark_with_attention): mesh + lips, eyes, irises",
              aliases=("attention",)),
    ModelSpec("face_landmark", "face_landmark", ("face_landmark",), MESH_INPUT_SIZE, NUM_MESH_LANDMARKS,
              "MediaPipe's base face mesh, 468 points (what refine_landmarks=False runs)"),
    ModelSpec("cascade", "cascade", ("face_landmark", "iris_landmark"), MESH_INPUT_SIZE, NUM_REFINED_LANDMARKS,
              f"face_landmark + iris_landmark on {IRIS_INPUT_SIZE}x{IRIS_INPUT_SIZE} eye crops (the paper's baseline)"),
    ModelSpec("attention_mesh_300w", "attention_mesh", ("attention_mesh_300w",), MESH_INPUT_SIZE,
              NUM_REFINED_LANDMARKS, "Attention Mesh fine-tuned on the 300-W training split",
              card="docs/model_card_300w.md"),
    ModelSpec("face_transformer_xs", "face_transformer", ("face_transformer_xs",), FACE_TRANSFORMER_INPUT_SIZE,
              NUM_REFINED_LANDMARKS,
              "MobileViT-style face transformer distilled from the Attention Mesh (+ embedding, expression, "
              "anti-spoofing heads)", card="docs/model_card_face_transformer.md", aliases=("transformer",),
              config={"size": "xs", "input_size": FACE_TRANSFORMER_INPUT_SIZE, "refine_dim": 64, "refine_steps": 1}),
)
_REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _MODELS}
_ALIASES: dict[str, str] = {alias: spec.name for spec in _MODELS for alias in spec.aliases}


def list_models() -> list[str]:
    """The canonical names of the registered landmark models, sorted."""
    return sorted(_REGISTRY)


def model_names() -> list[str]:
    """Every accepted spelling: the canonical names, then the aliases."""
    return [*list_models(), *sorted(_ALIASES)]


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name`` (a canonical name or an alias); ValueError naming the choices."""
    if not isinstance(name, str):
        raise TypeError(f"a model name must be a str, got {type(name).__name__}")
    spec = _REGISTRY.get(_ALIASES.get(name, name))
    if spec is None:
        raise ValueError(f"model must be one of {', '.join(list_models())} (aliases: "
                         f"{', '.join(f'{a}={c}' for a, c in sorted(_ALIASES.items()))}); got {name!r}")
    return spec


def build_architecture(architecture: str, config: dict[str, Any] | None = None) -> nn.Module:
    """A freshly initialised PyTorch module of ``architecture`` (one of :data:`ARCHITECTURES`) built with
    ``config`` (its constructor's keyword arguments)."""
    config = dict(config or {})
    if architecture == "attention_mesh":
        from .models.attention_mesh import AttentionMesh

        return AttentionMesh(**config)
    if architecture == "face_landmark":
        from .models.face_landmark import FaceLandmarkModel

        return FaceLandmarkModel(**config)
    if architecture == "cascade":
        from .models.cascade import CascadeMesh

        return CascadeMesh(**config)
    if architecture == "face_transformer":
        from .models.face_transformer import FaceTransformer

        return FaceTransformer(**config)
    raise ValueError(f"unknown architecture {architecture!r}; one of {', '.join(ARCHITECTURES)}")


def create_model(name: str, pretrained: bool = True) -> nn.Module:
    """The PyTorch module of registered model ``name`` in eval mode, with its shipped (sha256-checked)
    weights when ``pretrained``. The cascade's two networks are its ``face`` and ``iris`` children."""
    from .weights import load_model_weights

    spec = get_model_spec(name)
    net = build_architecture(spec.architecture, spec.config)
    if pretrained:
        if spec.architecture == "cascade":
            load_model_weights(net.face, spec.weights[0])
            load_model_weights(net.iris, spec.weights[1])
        else:
            load_model_weights(net, spec.weights[0])
    return net.eval()


def model_table() -> str:
    """A Markdown table of the registered models (the README's and the docs' model table)."""
    rows = ["| model | landmarks | input | backends | what it is |", "|---|---|---|---|---|"]
    for name in list_models():
        s = _REGISTRY[name]
        what = s.summary + (f" ([card]({s.card}))" if s.card else "")
        aka = f" (alias `{'`, `'.join(s.aliases)}`)" if s.aliases else ""
        rows.append(f"| `{name}`{aka} | {s.num_landmarks} | {s.input_size} | {', '.join(s.backends)} | {what} |")
    return "\n".join(rows)
