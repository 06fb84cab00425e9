"""The database storage's trial reads and writes (pipeline.tuning.rdb.OwnedRDBStorage) against Optuna's own.

OwnedRDBStorage reads and writes trials with SQLAlchemy Core instead of Optuna's ORM models. The oracle is Optuna
(a plain ``RDBStorage`` on the same database, its readers and writers): every field of every trial,
in studies that hold every state, every kind of value (inf, -inf, nan), every distribution and nested JSON
attributes, on SQLite, the local PostgreSQL and MariaDB, in a time zone other than UTC (the stored datetimes are naive
UTC, given back as naive local time).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import uuid

import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from servers import PG, databases

from pipeline.tuning import rdb
from pipeline.tuning.storage import open_storage


@contextlib.contextmanager
def _time_zone(name: str):
    before = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


def _plain(value):
    """A value with NaN made comparable (nan != nan would fail equal dicts)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _fields(trial) -> dict:
    return {
        "trial_id": trial._trial_id,
        "number": trial.number,
        "state": trial.state,
        "values": _plain(trial.values),
        "datetime_start": trial.datetime_start,
        "datetime_complete": trial.datetime_complete,
        "params": _plain(trial.params),
        "param_types": {k: type(v) for k, v in trial.params.items()},
        "distributions": trial.distributions,
        "user_attrs": _plain(trial.user_attrs),
        "system_attrs": _plain(trial.system_attrs),
        "intermediate_values": _plain(trial.intermediate_values),
    }


def _fill(storage, name: str, directions) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    n = len(directions)

    def suggest(trial):
        trial.suggest_float("lr", 1e-5, 10, log=True)
        trial.suggest_float("momentum", 0.0, 0.99, step=0.01)
        trial.suggest_int("batch", 8, 512, log=True)
        trial.suggest_int("layers", 1, 9, step=2)
        trial.suggest_categorical("schedule", ["exponential", "cosine", None, True, 3, 2.5])

    for k, value in enumerate([0.25, math.inf, -math.inf, 1e-300, -7.5]):
        trial = study.ask()
        suggest(trial)
        trial.set_user_attr("curve", {"loss": [1.0, 0.5, math.inf, -1e308], "note": "ü ✓", "k": k})
        trial.set_user_attr("empty", {})
        trial.storage.set_trial_system_attr(trial._trial_id, "nested", [[1, 2], {"a": None}])
        for step, point in enumerate([1.0, math.nan, math.inf, -math.inf, 0.0, 1e-308]):
            trial.storage.set_trial_intermediate_value(trial._trial_id, step * 7, point)
        study.tell(trial, [value] * n if n > 1 else value)
    pruned = study.ask()
    suggest(pruned)
    pruned.storage.set_trial_intermediate_value(pruned._trial_id, 0, 3.0)
    study.tell(pruned, state=TrialState.PRUNED)
    failed = study.ask()
    study.tell(failed, state=TrialState.FAIL)
    running = study.ask()  # left RUNNING, with params and an attribute
    suggest(running)
    running.set_user_attr("alive", True)
    study.ask(  # RUNNING too, its params given as distributions up front
        {"x": CategoricalDistribution(["a", "b"]), "y": FloatDistribution(0, 1), "z": IntDistribution(0, 3)}
    )
    study.enqueue_trial({"lr": 0.01, "schedule": "cosine"}, user_attrs={"queued": 1})  # WAITING
    return study


def _stock(storage: rdb.OwnedRDBStorage) -> RDBStorage:
    """Optuna's own storage on the same database: the oracle for every read and write (a method of RDBStorage
    called on ``storage`` itself would still reach the overridden helpers through ``self``)."""
    stock = RDBStorage(storage.url)
    assert type(stock) is RDBStorage
    return stock


@contextlib.contextmanager
def _mariadb():
    """A fresh database on the local MariaDB/MySQL (skipped when none answers), dropped afterwards."""
    pymysql = pytest.importorskip("pymysql")
    name = f"lr_reads_{uuid.uuid4().hex[:8]}"
    try:
        conn = pymysql.connect(host="127.0.0.1", user="root", connect_timeout=3, autocommit=True)
    except pymysql.err.MySQLError as exc:
        pytest.skip(f"no MariaDB/MySQL server at 127.0.0.1: {exc}")
    try:
        conn.cursor().execute(f"CREATE DATABASE {name}")
        yield f"mysql+pymysql://root@127.0.0.1/{name}"
    finally:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def storage(request, tmp_path):
    with _time_zone("America/Los_Angeles"):
        if request.param == "sqlite":
            yield open_storage(f"sqlite:///{tmp_path / 'reads.db'}")
            return
        with databases("reads") if request.param == "postgresql" else _mariadb() as found:
            url = f"{PG}/{found[0]}" if request.param == "postgresql" else found
            backend = open_storage(url)
            yield backend
            backend.engine.dispose()


def test_every_trial_reads_back_as_optunas_own_reader_builds_it(storage):
    assert isinstance(storage, rdb.OwnedRDBStorage)
    stock = _stock(storage)
    single = _fill(storage, "single", ["minimize"])
    multi = _fill(storage, "multi", ["minimize", "maximize"])
    for study in (single, multi):
        stored = stock.get_all_trials(study._study_id, deepcopy=False)
        assert {t.state for t in stored} == set(TrialState)  # the oracle holds every state
        assert len(stored) == 10
        for trial in stored:
            ours = storage.get_trial(trial._trial_id)
            assert _fields(ours) == _fields(stock.get_trial(trial._trial_id))
            assert (ours.datetime_start is None) == (ours.state == TrialState.WAITING)
        ids = [t._trial_id for t in stored]
        cases = [
            (None, set(), -1),
            ((TrialState.COMPLETE,), set(), -1),
            ((TrialState.WAITING,), set(), -1),
            ((TrialState.RUNNING, TrialState.WAITING), set(), ids[3]),
            (None, {ids[1], ids[2], ids[-1] + 5}, ids[4]),  # unfinished ones below the mark, one beyond
            (None, set(), ids[-1]),  # nothing new
            (None, {ids[0]}, -1),  # included ids only count below the mark, as Optuna's reader has it
        ]
        for states, included, greater in cases:
            ours = storage._get_trials(study._study_id, states, included, greater)
            theirs = stock._get_trials(study._study_id, states, included, greater)
            assert [_fields(t) for t in ours] == [_fields(t) for t in theirs], (states, included, greater)
    stock.engine.dispose()


def test_a_missing_trial_or_study_is_a_key_error_as_in_optuna(storage):
    study = optuna.create_study(storage=storage, study_name="one")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    stock = _stock(storage)
    for reader in (storage, stock):
        with pytest.raises(KeyError):
            reader.get_trial(10_000)
        with pytest.raises(KeyError):
            reader._get_trials(10_000, None, set(), -1)
    stock.engine.dispose()


def test_a_study_of_more_trials_than_one_in_list_holds_reads_whole(tmp_path):
    """SQLite's oldest limit is 999 variables per statement: the reader's IN lists are cut into chunks."""
    storage = open_storage(f"sqlite:///{tmp_path / 'many.db'}")
    study = optuna.create_study(storage=storage, study_name="many")
    for k in range(1900):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": k / 1900},
                distributions={"x": FloatDistribution(0, 1)},
                value=float(k),
                intermediate_values={0: float(k)},
            )
        )
    trials = storage._get_trials(study._study_id, None, set(), -1)
    assert [t.number for t in trials] == list(range(1900))
    assert [t.intermediate_values[0] for t in trials] == [float(k) for k in range(1900)]
    assert [t.params["x"] for t in trials] == [k / 1900 for k in range(1900)]


def test_the_cached_storage_in_front_sees_other_workers_trials(storage):
    """Optuna's cache calls _get_trials with the ids it has not seen finish: a trial another process finishes,
    and one it adds, both reach this process's next read."""
    mine = optuna.create_study(storage=storage, study_name="shared")
    other = optuna.load_study(
        study_name="shared", storage=RDBStorage(storage.url)
    )  # Optuna's own, no override
    theirs = other.ask()
    assert [t.state for t in mine.get_trials()] == [TrialState.RUNNING]
    other.tell(theirs, 1.5)
    other.optimize(lambda t: 2.5, n_trials=1)
    assert [(t.state, t.value) for t in mine.get_trials()] == [
        (TrialState.COMPLETE, 1.5),
        (TrialState.COMPLETE, 2.5),
    ]
    other._storage._backend.engine.dispose()


def test_a_trials_end_in_one_statement_per_table_reads_as_optunas_own_writes(storage):
    """write_trial_end's upserts against Optuna's set_user_attr and report on a twin trial: the same attributes
    and intermediate values (inf, -inf, nan included), an attribute and a step that already existed replaced."""
    study = optuna.create_study(storage=storage, study_name="ends")
    ours, theirs = study.ask(), study.ask()
    for trial in (ours, theirs):
        trial.set_user_attr("epochs_run", -1)  # replaced below
        trial.storage.set_trial_intermediate_value(trial._trial_id, 3, 99.0)  # a retry's inherited step
    attrs = {"epochs_run": 12, "prune_reason": None, "stop": {"why": "ü", "at": [1, 2]}}
    curve = {0: 1.0, 3: 0.5, 5: math.inf, 7: -math.inf, 9: math.nan, 11: 1e-308}
    commits = []
    sqlalchemy.event.listen(storage.engine, "commit", lambda conn: commits.append(1))
    with _statements(storage) as sent:
        rdb.write_trial_end(ours, attrs, curve)
    if storage.engine.dialect.name == "postgresql":  # one statement, in autocommit
        assert (len(sent), commits) == (1, [])
    else:
        assert len(commits) == 1
    stock = _stock(storage)
    for key, value in attrs.items():
        stock.set_trial_user_attr(theirs._trial_id, key, value)
    for step, value in curve.items():
        stock.set_trial_intermediate_value(theirs._trial_id, step, value)
    a, b = (stock.get_trial(t._trial_id) for t in (ours, theirs))
    assert _plain(a.user_attrs) == _plain(b.user_attrs) == _plain({"owner": a.user_attrs["owner"], **attrs})
    assert _plain(a.intermediate_values) == _plain(b.intermediate_values) == _plain(curve)
    study.tell(ours, 0.5)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        rdb.write_trial_end(ours, {"late": 1}, {20: 1.0})
    assert "late" not in stock.get_trial(ours._trial_id).user_attrs
    stock.engine.dispose()


def test_a_running_trials_params_and_attributes_are_written_as_optuna_writes_them(storage):
    """OwnedRDBStorage's Core writes against Optuna's RDBStorage methods on a twin trial: the same stored trial,
    and the same refusals (an incompatible distribution, a finished trial, no such trial)."""
    study = optuna.create_study(storage=storage, study_name="writes")
    ours, theirs = study.ask(), study.ask()
    stock = _stock(storage)
    space = {
        "lr": (0.01, FloatDistribution(1e-5, 1, log=True)),
        "batch": (3.0, IntDistribution(1, 9, step=2)),
        "schedule": (1.0, CategoricalDistribution(["exp", None, True])),
    }
    for name, (internal, dist) in space.items():
        storage.set_trial_param(ours._trial_id, name, internal, dist)
        stock.set_trial_param(theirs._trial_id, name, internal, dist)
    for key, value in {"note": "ü", "nested": {"a": [1, None]}, "note2": 1.5}.items():
        storage.set_trial_user_attr(ours._trial_id, key, value)
        stock.set_trial_user_attr(theirs._trial_id, key, value)
        storage.set_trial_system_attr(ours._trial_id, key, value)
        stock.set_trial_system_attr(theirs._trial_id, key, value)
    storage.set_trial_user_attr(ours._trial_id, "note", "replaced")
    stock.set_trial_user_attr(theirs._trial_id, "note", "replaced")
    a, b = (stock.get_trial(t._trial_id) for t in (ours, theirs))
    for field in ("params", "distributions", "user_attrs", "system_attrs"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.params == {"lr": 0.01, "batch": 3, "schedule": None}

    other = study.ask()
    for writer in (storage, stock):
        with pytest.raises(ValueError, match="Cannot set different distribution kind"):
            writer.set_trial_param(other._trial_id, "lr", 2.0, IntDistribution(1, 9))
    study.tell(ours, 1.0)
    for writer in (storage, stock):
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            writer.set_trial_user_attr(ours._trial_id, "late", 1)
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            writer.set_trial_param(ours._trial_id, "late", 0.5, FloatDistribution(0, 1))
        with pytest.raises(KeyError):
            writer.set_trial_system_attr(10_000, "x", 1)
        for state in (TrialState.COMPLETE, TrialState.FAIL):  # a trial ends once
            with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
                writer.set_trial_state_values(
                    ours._trial_id, state, [2.0] if state == TrialState.COMPLETE else None
                )
        with pytest.raises(KeyError):
            writer.set_trial_state_values(10_000, TrialState.COMPLETE, [2.0])
    assert stock.get_trial(ours._trial_id).value == 1.0
    assert "late" not in stock.get_trial(ours._trial_id).user_attrs
    stock.engine.dispose()


def _statements(storage):
    """A list that grows by one for every statement ``storage``'s engine sends (a context manager)."""
    sent: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        sent.append(statement)

    @contextlib.contextmanager
    def counting():
        sqlalchemy.event.listen(storage.engine, "before_cursor_execute", count)
        try:
            yield sent
        finally:
            sqlalchemy.event.remove(storage.engine, "before_cursor_execute", count)

    return counting()


def _same_as_stored(storage, stock, trial_id: int, kept: bool) -> None:
    """The trial as this worker reads it equals the trial as Optuna's own reader builds it from the database;
    read from this worker's copy (no statement) where ``kept``."""
    with _statements(storage) as sent:
        ours = storage.get_trial(trial_id)
    stored = stock.get_trial(trial_id)
    assert _fields(ours) == _fields(stored)
    for attrs in ("user_attrs", "system_attrs"):  # with their types: a tuple is stored as a list
        assert repr(sorted(getattr(ours, attrs).items())) == repr(sorted(getattr(stored, attrs).items()))
    assert (sent == []) == kept, sent


def test_a_workers_own_trial_reads_from_what_it_wrote_as_the_database_gives_it_back(storage):
    """Trials this worker runs are read from a copy kept as it writes them (PostgreSQL and SQLite): each write is
    kept as it reads back (tuples as lists, inf, -inf and nan, categorical choices, ints), so at every step, and
    once finished, the copy equals Optuna's reader on the database, field by field."""
    keeps = storage.engine.dialect.name in ("postgresql", "sqlite")
    stock = _stock(storage)
    study = optuna.create_study(storage=storage, study_name="own")
    for end in (math.inf, 0.125, -math.inf, "pruned", "fail"):
        trial = study.ask()
        _same_as_stored(storage, stock, trial._trial_id, keeps)
        trial.suggest_float("lr", 1e-5, 10, log=True)
        trial.suggest_int("layers", 1, 9, step=2)
        trial.suggest_categorical("schedule", ["exponential", None, True, 3, 2.5])
        trial.set_user_attr("shape", (1, [2, (3,)], {"k": None}))
        trial.storage.set_trial_system_attr(trial._trial_id, "nested", {"a": (math.nan, "ü")})
        for step, point in enumerate([1.0, math.nan, math.inf, -math.inf]):
            trial.report(point, step)
        _same_as_stored(storage, stock, trial._trial_id, keeps)
        rdb.write_trial_end(trial, {"epochs_run": 7, "why": ("a", 1)}, {4: 0.5, 1: 2.0, 9: -math.inf})
        _same_as_stored(storage, stock, trial._trial_id, keeps)
        if end == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif end == "fail":
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, end)
        # a trial's end is kept where this pipeline writes it (PostgreSQL); elsewhere Optuna's write sets its time
        _same_as_stored(storage, stock, trial._trial_id, storage.engine.dialect.name == "postgresql")
    ours = study.get_trials()
    assert [_fields(t) for t in ours] == [_fields(t) for t in stock.get_all_trials(study._study_id)]
    assert [t.state for t in ours] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED, TrialState.FAIL]
    assert [t.value for t in ours[:3]] == [math.inf, 0.125, -math.inf]
    stock.engine.dispose()


def test_a_trial_another_worker_ends_reads_as_stored_and_refuses_this_workers_writes(storage):
    """Another worker may end this worker's running trial (the heartbeat's stale check): the study's trials then
    read it as stored, this worker's next write to it is refused as Optuna refuses it, and it reads FAIL after."""
    stock = _stock(storage)
    study = optuna.create_study(storage=storage, study_name="ended")
    first, second = study.ask(), study.ask()
    for trial in (first, second):
        trial.suggest_float("lr", 1e-5, 10, log=True)
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING] * 2
    stock.set_trial_state_values(first._trial_id, TrialState.FAIL)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.RUNNING]
    _same_as_stored(storage, stock, first._trial_id, kept=False)
    stock.set_trial_state_values(second._trial_id, TrialState.FAIL)  # with no read of the study after it
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        second.set_user_attr("late", 1)
    _same_as_stored(storage, stock, second._trial_id, kept=False)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        second.report(1.0, 3)
    with pytest.raises(ValueError, match="Cannot tell a FAIL trial"):  # Optuna's own refusal
        study.tell(second, 1.0)
    assert "late" not in stock.get_trial(second._trial_id).user_attrs
    stock.engine.dispose()
