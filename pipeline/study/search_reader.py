"""The values under a study file's ``search`` section: lr (with ``auto``), fixed values, ranges, one_minus,
choices, and the optimizer / schedule branches with their parameters, each checked by calling its factory.

A mixin of the loader's reader (:class:`pipeline.study.loader._Reader`), which provides ``error``, ``mapping``,
``number``, ``string`` and ``typed``; the ``search`` section method itself stays in the loader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from pipeline.core.checks import ArgumentError
from pipeline.study.space import (
    INT_PARAMS,
    LR_RAMPS,
    NEAR_ONE_PARAMS,
    Branch,
    Choice,
    Fixed,
    LrAuto,
    OneMinus,
    Param,
    Range,
)


class SearchValueReader:
    """Reads the values of the ``search`` section; every error names the file, the key path and the value."""

    def lr(self, raw) -> Param | LrAuto:
        if raw == "auto":
            return LrAuto()
        if isinstance(raw, dict) and "auto" in raw:
            self.mapping(raw, "search.lr", ("auto",))
            auto = raw["auto"] if raw["auto"] is not None else {}
            sec = self.mapping(
                auto,
                "search.lr.auto",
                ("start_lr", "end_lr", "steps", "ramp", "stop_factor", "step_lr", "iterations_per_value"),
            )
            d = LrAuto()
            start = self.number(
                sec.get("start_lr", d.start_lr), "search.lr.auto.start_lr", low=0, low_open=True
            )
            end = self.number(sec.get("end_lr", d.end_lr), "search.lr.auto.end_lr", low=0, low_open=True)
            if not start < end:
                raise self.error(f"must be > start_lr = {start:g}.", "search.lr.auto.end_lr", end)
            steps = self.number(sec.get("steps", d.steps), "search.lr.auto.steps", integer=True, low=2)
            ramp = self.string(sec.get("ramp", d.ramp), "search.lr.auto.ramp", LR_RAMPS, "ramp")
            stop = self.number(
                sec.get("stop_factor", d.stop_factor), "search.lr.auto.stop_factor", low=1, low_open=True
            )
            step_lr = iterations = None
            if ramp == "segments":
                for key in ("step_lr", "iterations_per_value"):
                    if key not in sec:
                        raise self.error("is required when ramp is 'segments'.", f"search.lr.auto.{key}")
                step_lr = self.number(sec["step_lr"], "search.lr.auto.step_lr", low=0, low_open=True)
                iterations = self.number(
                    sec["iterations_per_value"], "search.lr.auto.iterations_per_value", integer=True, low=1
                )
            else:
                for key in ("step_lr", "iterations_per_value"):
                    if key in sec:
                        raise self.error(
                            "is only used when ramp is 'segments'.", f"search.lr.auto.{key}", sec[key]
                        )
            return LrAuto(start, end, steps, ramp, stop, step_lr, iterations)
        return self.param(raw, "search.lr", "lr", allow_one_minus=False)

    def scalar(self, value, key: str, name: str):
        """A fixed value or one choice of parameter ``name``: its type and, for lr / batch / warmup, its range."""
        if name == "lr":
            return self.number(value, key, low=0, low_open=True)
        if name == "batch_size":
            if value == "full":
                return "full"
            if isinstance(value, str):
                raise self.error('must be "full" or an int >= 1.', key, value)
            return self.number(value, key, integer=True, low=1)
        if name == "warmup_steps":
            return self.number(value, key, integer=True, low=0)
        return self.number(value, key, integer=name in INT_PARAMS)

    def param(self, raw, key: str, name: str, *, allow_one_minus: bool = True) -> Param:
        """One searched value in any of the four forms (see the module docstring)."""
        integer = name in INT_PARAMS
        if not isinstance(raw, dict):
            value = self.scalar(raw, key, name)
            return Fixed(None if value == "full" else value)
        forms = (
            "choices",
            "low",
            "high",
            "log",
            *(("one_minus",) if allow_one_minus and not integer else ()),
        )
        if "choices" in raw:
            self.mapping(raw, key, ("choices",))
            choices = raw["choices"]
            if not isinstance(choices, list) or not choices:
                raise self.error("must be a non-empty list.", f"{key}.choices", choices)
            values = tuple(self.scalar(v, f"{key}.choices[{i}]", name) for i, v in enumerate(choices))
            if len(set(values)) < len(values):
                raise self.error("must not repeat a value.", f"{key}.choices", choices)
            return Choice(values)
        if "one_minus" in raw:
            self.mapping(raw, key, forms)
            if len(raw) > 1:
                raise self.error("one_minus stands alone; put low and high inside it.", key, raw)
            sec = self.mapping(
                raw["one_minus"], f"{key}.one_minus", ("low", "high"), required=("low", "high")
            )
            low = self.number(
                sec["low"], f"{key}.one_minus.low", low=0, low_open=True, high=1, high_open=True
            )
            high = self.number(
                sec["high"], f"{key}.one_minus.high", low=0, low_open=True, high=1, high_open=True
            )
            if not low < high:
                raise self.error(f"must be > low = {low:g}.", f"{key}.one_minus.high", sec["high"])
            return OneMinus(low, high)
        sec = self.mapping(raw, key, forms, required=("low", "high"))
        log = self.boolean(sec.get("log", True), f"{key}.log")
        if log and name in NEAR_ONE_PARAMS:
            hint = ""
            if all(isinstance(sec[e], int | float) and 0 < sec[e] < 1 for e in ("low", "high")):
                hint = f" {{one_minus: {{low: {1 - sec['high']:.4g}, high: {1 - sec['low']:.4g}}}}} is the same range."
            raise self.error(
                f"is a factor near 1: search it as 1 - x on a log scale with {{one_minus: {{low, high}}}}, or give "
                f"log: false for a linear range.{hint}",
                key,
                raw,
            )
        low = self.number(sec["low"], f"{key}.low", integer=integer)
        high = self.number(sec["high"], f"{key}.high", integer=integer)
        if log and low <= 0:
            raise self.error(
                f"must be {'an int' if integer else 'a float'} > 0 on a log scale (log: false for a linear range).",
                f"{key}.low",
                sec["low"],
            )
        for end in (
            "low",
            "high",
        ):  # the ends must be valid values themselves (lr > 0, batch >= 1, warmup >= 0)
            self.scalar(sec[end], f"{key}.{end}", name)
        if not low < high:
            raise self.error(f"must be > low = {low:g}.", f"{key}.high", sec["high"])
        return Range(low, high, log, integer)

    def branches(
        self,
        raw,
        key: str,
        kind: str,
        catalogue: Mapping[str, tuple[str, ...]],
        build: Callable,
        required: Mapping[str, tuple[str, ...]],
    ) -> tuple[tuple[Branch, ...], bool]:
        """``name`` | ``{name: ..., param: ...}`` | ``{choices: {name: {param: ...}}}`` (or a list of names)."""
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise self.error(f"must be a {kind} name, {{name: ..., params}} or {{choices: ...}}.", key, raw)
        if "choices" in raw:
            self.mapping(raw, key, ("choices",))
            choices = raw["choices"]
            if isinstance(choices, list) and all(isinstance(c, str) for c in choices):
                if len(set(choices)) < len(choices):
                    raise self.error("must not repeat a name.", f"{key}.choices", choices)
                choices = {c: {} for c in choices}
            if not isinstance(choices, dict) or not choices:
                raise self.error(
                    f"must map {kind} names to their parameters.", f"{key}.choices", raw["choices"]
                )
            branches = tuple(
                self.branch(
                    name,
                    params if params is not None else {},
                    f"{key}.choices.{name}",
                    kind,
                    catalogue,
                    build,
                    required,
                    name_key=f"{key}.choices",
                )
                for name, params in choices.items()
            )
            return branches, True
        if "name" not in raw:
            raise self.error("missing required key (or give choices).", f"{key}.name")
        params = {k: v for k, v in raw.items() if k != "name"}
        return (
            self.branch(raw["name"], params, key, kind, catalogue, build, required, name_key=f"{key}.name"),
        ), False

    def branch(self, name, raw, key: str, kind: str, catalogue, build, required, name_key: str) -> Branch:
        name = self.string(name, name_key, catalogue, kind)
        valid = catalogue[name]
        if not isinstance(raw, dict):
            raise self.error(f"must map parameter names of {kind} {name} to values.", key, raw)
        for k in raw:
            if k not in valid:
                shown = ("name", *valid) if name_key.endswith(".name") else valid
                listed = (
                    f"valid keys are {', '.join(shown)}" if valid else f"{kind} {name} takes no parameters"
                )
                raise self.error(f"unknown key; {listed}.", _join(key, str(k)))
        for k in required.get(name, ()):
            if k not in raw:
                raise self.error(
                    f"missing required key (the {name} {kind} has no default for it).", f"{key}.{k}"
                )
        params = {p: self.param(v, f"{key}.{p}", p) for p, v in raw.items()}
        self.check_with_factory(lambda kv: build(name, kv), params, key, skip=("warmup_steps",))
        return Branch(name, params, key)

    def check_with_factory(
        self, build: Callable[[dict], object], params: Mapping[str, Param], key: str, skip: Iterable[str] = ()
    ) -> None:
        """Check values by calling their factory: all at a representative value (fixed values, the low end of
        ranges, first choices), then each end / choice of every sampled one with the others representative.

        A factory's ArgumentError becomes a ConfigError at the key of the parameter it names (``exc.param``), any
        other ValueError one at ``key``. ``skip``: parameters checked elsewhere.
        """
        params = {p: v for p, v in params.items() if p not in skip}
        base = {p: v.representative for p, v in params.items()}
        self._try_build(build, base, key, params, None)
        for p, v in params.items():
            for sub, given, value in v.ends():
                self._try_build(build, {**base, p: value}, key, params, (p, sub, given))

    def _try_build(self, build, kwargs: dict, key: str, params: Mapping[str, Param], varied) -> None:
        try:
            build(kwargs)
        except ArgumentError as exc:
            self._raise_at_key(exc.rule, exc.param, key, params, varied)
        except ValueError as exc:
            self._raise_at_key(str(exc), None, key, params, varied)

    def _raise_at_key(self, message: str, named: str | None, key: str, params, varied) -> None:
        if varied is not None and named in (None, varied[0]):
            p, sub, given = varied
            raise self.error(message, f"{key}.{p}{sub}", given) from None
        if named in params:
            # The representative value is one of the ends (a range's low end, the first choice): name that end,
            # as a failure at any other end is named (search.optimizer.beta.low, not the whole range).
            end = next((e for e in params[named].ends() if e[2] == params[named].representative), None)
            if end is not None:
                raise self.error(message, f"{key}.{named}{end[0]}", end[1]) from None
            raise self.error(message, f"{key}.{named}", params[named].shown) from None
        raise self.error(message, key, {p: v.shown for p, v in params.items()}) from None


def _join(prefix: str | None, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
