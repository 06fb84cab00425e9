"""A user's own model and data in a study file: ``model: {entry_point: ...}`` and ``data: {entry_point: ...}``.

An entry point is ``path/to/file.py:function`` (relative to the study file) or ``package.module:function`` (an
importable module). **Loading it runs that code**, with the rights of whoever runs the study: a study file with an
entry point is a program, to be trusted like one.

- The model function is called with the study's ``model.params`` as keyword arguments, plus ``n_features``,
  ``task`` and ``n_classes`` (from the data) when it names them or takes ``**kwargs``. It returns an object with
  the core's model interface (:mod:`pipeline.core.usermodel`), which is checked before anything is written: the
  methods exist, the shapes agree, the loss at init is finite, and the gradient matches central finite
  differences at a few seeded points (``model.gradient_check: {points, rtol, atol}`` tunes that check).
- The data function is called with ``data.params`` (plus ``seed`` when it names it) and returns ``(X, y)`` or a
  mapping with ``X``, ``y`` and optionally ``feature_names``, ``target_name``, ``task``; the arrays are split and
  standardised like any dataset's (:func:`pipeline.datasets.from_arrays`).

The loader only parses and locates an entry point (the file exists, the module can be found): the code is
imported when the data or the model is first built, so ``best`` never runs it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path

from pipeline.errors import ConfigError, DataError
from pipeline.study.spec import DataSpec, EntryPoint, ModelSpec, StudySpec

_SPEC = re.compile(r"^(?P<target>[^:]+):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
MODEL_KEYS = ("entry_point", "params", "gradient_check")
DATA_KEYS = ("entry_point", "params", "task", "val_fraction", "standardize")
MODEL_INJECTED = ("n_features", "task", "n_classes")


# ----------------------------------------------------------------------------------------------- parsing


def file_sha256(path: Path | None) -> str:
    """The code file's sha256 ("" when there is none or it cannot be read)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else ""
    except OSError:
        return ""


def parse(text, study_path: Path, *, file: str | None, key: str) -> EntryPoint:
    """``file.py:function`` or ``package.module:function`` into an :class:`EntryPoint`; the file must exist, the
    module must be findable. Nothing is executed (a dotted module's parent packages are imported to find it)."""

    def error(message: str) -> ConfigError:
        return ConfigError(message, file=file, key=key, value=text)

    if not isinstance(text, str) and (callable(text) or hasattr(text, "loss_and_grad")):
        return from_object(text)
    if not isinstance(text, str) or not (m := _SPEC.match(text.strip())):
        raise error(
            'must be "path/to/file.py:function" (relative to the study file) or "package.module:function".'
        )
    target, function = m["target"].strip(), m["function"]
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_absolute():
            path = study_path.parent / path
        path = path.resolve()
        if not path.is_file():
            raise error(f"file not found ({path}).")
        if path.suffix != ".py":
            raise error(f"must name a Python file (.py). Got {path.name}.")
        return EntryPoint(text, function, path=path, source=path, source_sha256=file_sha256(path))
    if not _MODULE.match(target):
        raise error(f"{target!r} is neither a .py file nor a dotted module name.")
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError) as exc:
        raise error(f"cannot find module {target!r} ({type(exc).__name__}: {exc}).") from None
    if found is None:
        raise error(f"cannot find module {target!r} (is it installed, or on PYTHONPATH?).")
    source = Path(found.origin) if found.origin and found.origin.endswith(".py") else None
    return EntryPoint(text, function, module=target, source=source, source_sha256=file_sha256(source))


def from_object(obj) -> EntryPoint:
    """An entry point given as a Python object (through the API): a model, or a function or class returning one
    (or returning the data). Its source file, when it has one, is hashed like a named entry point's."""
    target = (
        obj if isinstance(obj, type) or callable(obj) and not hasattr(obj, "loss_and_grad") else type(obj)
    )
    name = getattr(target, "__qualname__", type(obj).__name__)
    try:
        source = inspect.getsourcefile(target)
    except TypeError:
        source = None
    source = Path(source) if source and Path(source).is_file() else None
    return EntryPoint(
        f"<python object {getattr(target, '__module__', '?')}.{name}>",
        name,
        source=source,
        source_sha256=file_sha256(source),
        obj=obj,
    )


def read_model(reader, raw: dict, task: str | None) -> ModelSpec:
    """``model: {entry_point: ..., params: {...}, gradient_check: {points, rtol, atol}}`` (loader section)."""
    from pipeline.core.usermodel import GradientTolerance

    sec = reader.mapping(raw, "model", MODEL_KEYS, required=("entry_point",))
    entry = parse(sec["entry_point"], reader.path, file=reader.file, key="model.entry_point")
    params = _params(reader, sec.get("params"), "model.params")
    for name in MODEL_INJECTED:
        if name in params:
            raise reader.error("is given by the data; remove it from model.params.", f"model.params.{name}")
    check = reader.mapping(
        sec.get("gradient_check") or {}, "model.gradient_check", ("points", "rtol", "atol")
    )
    default = GradientTolerance()
    tol = GradientTolerance(
        rtol=reader.number(
            check.get("rtol", default.rtol), "model.gradient_check.rtol", low=0, low_open=True
        ),
        atol=reader.number(
            check.get("atol", default.atol), "model.gradient_check.atol", low=0, low_open=True
        ),
        points=reader.number(
            check.get("points", default.points), "model.gradient_check.points", integer=True, low=1
        ),
    )
    return ModelSpec("entry_point", params, entry_point=entry, gradient_check=tol)


def read_data(reader, raw: dict) -> tuple[DataSpec, str | None]:
    """``data: {entry_point: ..., params: {...}, task, val_fraction, standardize}`` (loader section)."""
    from pipeline.core.names import TASKS

    sec = reader.mapping(raw, "data", DATA_KEYS, required=("entry_point",))
    entry = parse(sec["entry_point"], reader.path, file=reader.file, key="data.entry_point")
    params = _params(reader, sec.get("params"), "data.params")
    if "seed" in params:
        raise reader.error("is the study's seed; remove it from data.params.", "data.params.seed")
    task = reader.string(sec["task"], "data.task", TASKS, "task") if "task" in sec else None
    val_fraction = sec.get("val_fraction")
    if val_fraction is not None:
        val_fraction = reader.number(val_fraction, "data.val_fraction", low=0, high=1, high_open=True)
    standardize = sec.get("standardize")
    if standardize is not None:
        standardize = reader.boolean(standardize, "data.standardize")
    spec = DataSpec("entry_point", None, None, task, val_fraction, standardize, params, entry_point=entry)
    return spec, task


def _params(reader, raw, key: str) -> dict:
    """Keyword arguments for the user's function: a mapping of names to plain YAML values."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise reader.error("must be a mapping of keyword arguments.", key, raw)
    for k in raw:
        if not isinstance(k, str) or not k.isidentifier():
            raise reader.error("must be a Python identifier (a keyword argument).", f"{key}.{k}")
    return dict(raw)


# ----------------------------------------------------------------------------------------------- loading


def resolve(entry: EntryPoint, *, file: str | None, key: str):
    """Import the entry point's code (this runs it) and return the named callable."""

    def error(message: str) -> ConfigError:
        return ConfigError(message, file=file, key=key, value=entry.text)

    if entry.obj is not None:
        obj = entry.obj
        is_model = hasattr(obj, "loss_and_grad") and not isinstance(obj, type)
        return (lambda **_: obj) if is_model else obj
    try:
        if entry.path is not None:
            module = import_file(entry.path)
        else:
            module = importlib.import_module(entry.module)
    except ConfigError:
        raise
    except BaseException as exc:  # the user's module-level code: any error (SystemExit too) is the message
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise error(f"importing it raised {type(exc).__name__}: {exc}") from None
    function = getattr(module, entry.function, None)
    if function is None:
        raise error(f"{module.__name__} has no attribute {entry.function!r}.")
    if not callable(function):
        raise error(f"{entry.function!r} is a {type(function).__name__}, not a function or class.")
    return function


def import_file(path: Path):
    """A module from a file, imported once per process under a name unique to its path."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_pipeline_entry_{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _injected_for(function, injected: dict):
    """The signature of ``function`` (None when it has none) and those of ``injected`` it takes."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None, dict(injected)
    names = signature.parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in names.values())
    return signature, {k: v for k, v in injected.items() if takes_all or k in names}


def call_with(function, kwargs: dict, injected: dict):
    """``function(**kwargs, **those of injected it names)`` (all of them when it takes **kwargs)."""
    return function(**kwargs, **_injected_for(function, injected)[1])


def call(function, kwargs: dict, injected: dict, *, file: str | None, key: str, params_key: str):
    """:func:`call_with`, with a ConfigError naming the key when the arguments do not fit or the call raises."""
    signature, extra = _injected_for(function, injected)
    if signature is not None:
        try:
            signature.bind(**kwargs, **extra)
        except TypeError as exc:
            raise ConfigError(
                f"does not fit the signature {getattr(function, '__name__', 'function')}{signature} ({exc}).",
                file=file,
                key=params_key,
                value=kwargs,
            ) from None
    try:
        return function(**kwargs, **extra)
    except (ConfigError, KeyboardInterrupt):
        raise
    except Exception as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in {**kwargs, **extra}.items())
        raise ConfigError(
            f"calling {getattr(function, '__name__', 'it')}({shown}) raised {type(exc).__name__}: {exc}",
            file=file,
            key=key,
        ) from None


def load_data(spec: StudySpec):
    """The Dataset from ``data: {entry_point: ...}``: the user's arrays, split and standardised."""
    from pipeline.datasets import from_arrays

    d, file = spec.data, str(spec.path)
    key = "data.entry_point"
    function = resolve(d.entry_point, file=file, key=key)
    out = call(function, dict(d.params), {"seed": spec.seed}, file=file, key=key, params_key="data.params")
    extra = {}
    if isinstance(out, tuple) and len(out) == 2:
        X, y = out
    elif isinstance(out, dict) and "X" in out and "y" in out:
        unknown = sorted(set(out) - {"X", "y", "feature_names", "target_name", "task"})
        if unknown:
            raise ConfigError(
                f"returned unknown keys {unknown}; valid: X, y, feature_names, target_name, task.",
                file=file,
                key=key,
                value=d.entry_point.text,
            )
        X, y = out["X"], out["y"]
        extra = {k: out[k] for k in ("feature_names", "target_name") if k in out}
        if d.task is None and out.get("task") is not None:
            extra["task"] = out["task"]
    else:
        raise ConfigError(
            f"must return (X, y) or a mapping with X and y. Got {type(out).__name__}.",
            file=file,
            key=key,
            value=d.entry_point.text,
        )
    try:
        return from_arrays(
            X,
            y,
            source=f"{d.entry_point.text}",
            task=extra.pop("task", d.task),
            val_fraction=d.val_fraction,
            seed=spec.seed,
            standardize=d.standardize,
            **extra,
        )
    except DataError as exc:
        raise ConfigError(f"the arrays it returned are unusable: {exc}", file=file, key=key) from None


_CHECKED: dict[str, int] = {}  # what was checked -> n_params: the check runs once per process


def build_model(spec: StudySpec, data):
    """The user's model for the data, checked once per process (interface, shapes, loss, gradient), wrapped as
    :class:`pipeline.core.usermodel.UserModel`. A failed check is a ConfigError at ``model.entry_point``."""
    from pipeline.core.usermodel import ModelCheckError, UserModel, check_model

    m, file = spec.model, str(spec.path)
    key = "model.entry_point"
    function = resolve(m.entry_point, file=file, key=key)
    injected = {"n_features": data.n_features, "task": data.task, "n_classes": data.n_classes}
    obj = call(function, dict(m.params), injected, file=file, key=key, params_key="model.params")
    what = json.dumps(
        [
            m.entry_point.text,
            id(m.entry_point.obj),
            str(m.entry_point.source),
            m.entry_point.source_sha256,
            repr(dict(m.params)),
            data.source,
            data.X_train.shape,
            spec.seed,
            repr(m.gradient_check),
        ],
        default=str,
    )
    n_params = _CHECKED.get(what)
    if n_params is None:
        try:
            checked = check_model(
                obj,
                data.X_train,
                data.y_train,
                task=data.task,
                seed=spec.seed,
                tol=m.gradient_check,
                name=m.entry_point.text,
            )
        except ModelCheckError as exc:
            raise ConfigError(str(exc), file=file, key=key, value=m.entry_point.text) from None
        n_params = _CHECKED[what] = checked.n_params
        # The check used a fresh object; build the one that trains anew, so no state carries over.
        obj = call(function, dict(m.params), injected, file=file, key=key, params_key="model.params")
    return UserModel(obj, n_params, m.entry_point.text)
