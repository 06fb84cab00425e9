"""The SQL of the database storage (:class:`pipeline.tuning.rdb_core.OwnedRDBStorage`), in SQLAlchemy Core.

Statements are built once (``functools.cache``) with their values bound at each execution: building one cost up
to 1 ms, writing rows into its text 5 ms a call to compile. The reader (:func:`read_trials`) works on SQLite,
PostgreSQL and MariaDB; the one-round-trip writes (:func:`guarded_insert`, :func:`end_statement`,
:func:`trial_end_statement`) are PostgreSQL's. Table, column and enum type names are Optuna's.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial


def updatable(storage: RDBStorage, session, trial_id: int) -> int:
    """The trial's study id; KeyError when there is no such trial, Optuna's UpdateFinishedTrialError when it is
    finished (what its ``find_or_raise_by_id`` and ``check_trial_is_updatable`` do), in one Core SELECT."""
    import sqlalchemy
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    row = session.execute(
        sqlalchemy.select(trials.c.study_id, trials.c.state).where(trials.c.trial_id == trial_id)
    ).first()
    if row is None:
        raise KeyError(models.NOT_FOUND_MSG)
    storage.check_trial_is_updatable(trial_id, row.state)
    return row.study_id


@functools.cache
def guarded_insert(model, keys: tuple[str, ...] | None, columns: tuple[str, ...]):
    """PostgreSQL: ``INSERT INTO <model> (columns) SELECT :columns WHERE EXISTS (trial :trial_id, not finished)``,
    ``ON CONFLICT (keys) DO UPDATE`` the other columns when ``keys`` are given, ``RETURNING`` nothing when the
    trial is missing or finished: Optuna's lookup and its write in one atomic statement. Built once."""
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.trial import TrialState
    from sqlalchemy.dialects import postgresql

    table, trials = model.__table__, models.TrialModel.__table__
    binds = {c: sqlalchemy.bindparam(c, type_=table.c[c].type) for c in columns}
    finished = [s for s in TrialState if s.is_finished()]
    running = sqlalchemy.exists().where(
        trials.c.trial_id == binds["trial_id"], trials.c.state.not_in(finished)
    )
    statement = postgresql.insert(table).from_select(
        list(columns), sqlalchemy.select(*binds.values()).where(running)
    )
    if keys:
        statement = statement.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys],
            set_={c: statement.excluded[c] for c in columns if c not in keys},
        )
    # a row when one was written (INSERT's row count is not kept)
    return statement.returning(table.c.trial_id)


# PostgreSQL statements that write a trial's rows in one round trip: data-modifying WITH clauses, each executed
# once whether the final SELECT reads it or not, all from one snapshot; rows bound as arrays (unnest), so that one
# text serves every number of rows and is prepared once by the driver. Table and type names are Optuna's.
FINISHED = "('COMPLETE', 'PRUNED', 'FAIL')"


@functools.cache
def end_statement():
    import sqlalchemy

    return sqlalchemy.text(f"""
        WITH ended AS (
            UPDATE trials SET state = CAST(:state AS trialstate), datetime_complete = :now
            WHERE trial_id = :trial_id AND state NOT IN {FINISHED}
            RETURNING trial_id
        ), kept AS (
            INSERT INTO trial_values (trial_id, objective, value, value_type)
            SELECT ended.trial_id, v.objective, v.value, CAST(v.kind AS trialvaluetype)
            FROM ended, unnest(CAST(:objectives AS INTEGER[]), CAST(:values AS DOUBLE PRECISION[]),
                               CAST(:kinds AS TEXT[])) AS v(objective, value, kind)
            ON CONFLICT (trial_id, objective) DO UPDATE
                SET value = excluded.value, value_type = excluded.value_type
            RETURNING 1
        )
        SELECT trial_id FROM ended""")


@functools.cache
def trial_end_statement():
    import sqlalchemy

    return sqlalchemy.text(f"""
        WITH running AS (
            SELECT trial_id FROM trials WHERE trial_id = :trial_id AND state NOT IN {FINISHED}
        ), attrs AS (
            INSERT INTO trial_user_attributes (trial_id, key, value_json)
            SELECT running.trial_id, a.key, a.value_json
            FROM running, unnest(CAST(:keys AS VARCHAR[]), CAST(:jsons AS TEXT[])) AS a(key, value_json)
            ON CONFLICT (trial_id, key) DO UPDATE SET value_json = excluded.value_json
            RETURNING 1
        ), points AS (
            INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type)
            SELECT running.trial_id, p.step, p.value, CAST(p.kind AS trialintermediatevaluetype)
            FROM running, unnest(CAST(:steps AS INTEGER[]), CAST(:values AS DOUBLE PRECISION[]),
                                 CAST(:kinds AS TEXT[])) AS p(step, value, kind)
            ON CONFLICT (trial_id, step) DO UPDATE
                SET intermediate_value = excluded.intermediate_value,
                    intermediate_value_type = excluded.intermediate_value_type
            RETURNING 1
        )
        SELECT trial_id FROM running""")


@functools.cache
def row_lock(model, key: str, column: str):
    """``SELECT column FROM model's table WHERE key = :key FOR UPDATE``: a study's or a trial's row locked."""
    import sqlalchemy

    table = model.__table__
    return (
        sqlalchemy.select(table.c[column]).where(table.c[key] == sqlalchemy.bindparam(key)).with_for_update()
    )


@functools.cache
def trial_insert():
    """A new trial, numbered as Optuna numbers it (the study's trials so far: callers hold the study's lock)."""
    import sqlalchemy
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    study_id = sqlalchemy.bindparam("study_id", type_=trials.c.study_id.type)
    number = (
        sqlalchemy.select(sqlalchemy.func.count(trials.c.trial_id)).where(trials.c.study_id == study_id)
    ).scalar_subquery()
    return (
        sqlalchemy.insert(trials)
        .values(
            number=number,
            study_id=study_id,
            state=sqlalchemy.bindparam("state", type_=trials.c.state.type),
            datetime_start=sqlalchemy.bindparam("datetime_start", type_=trials.c.datetime_start.type),
            datetime_complete=None,
        )
        .returning(trials.c.trial_id, trials.c.number, trials.c.datetime_start)
    )


def local_to_utc(value):
    """Naive local time as RDBStorage stores it: naive UTC (its TrialModel.datetime_start setter)."""
    import datetime

    if value is None:
        return None
    return value.astimezone(datetime.UTC).replace(tzinfo=None)


def utc_to_local(value):
    """RDBStorage's datetimes: stored naive UTC, given naive local (its TrialModel.datetime_start)."""
    import datetime

    if value is None:
        return None
    return value.replace(tzinfo=datetime.UTC).astimezone().replace(tzinfo=None)


def read_trials(
    conn, where, *, study_id: int | None = None, known: Callable[[list], dict[int, FrozenTrial]] | None = None
) -> list[FrozenTrial] | None:
    """The trials matching ``where`` (a condition on Optuna's ``trials`` table), ordered by id, built as Optuna's
    ``RDBStorage._build_frozen_trial_from_trial_model`` builds them, in two SELECTs and no ORM objects: the trials
    (outer-joined to their study when ``study_id`` is given: None when there is no such study), then the rows of
    the five tables that hang from them in one ``UNION ALL`` (Optuna's ``selectinload`` sends one SELECT each).
    Each round trip costs about 0.4 ms on a local PostgreSQL here, busy or not."""
    import json

    import sqlalchemy
    from optuna import distributions
    from optuna.storages._rdb import models

    t = models.TrialModel.__table__
    columns = (t.c.trial_id, t.c.number, t.c.state, t.c.datetime_start, t.c.datetime_complete)
    if study_id is None:
        query = sqlalchemy.select(*columns).where(where)
    else:
        studies = models.StudyModel.__table__
        joined = studies.outerjoin(t, sqlalchemy.and_(t.c.study_id == studies.c.study_id, where))
        query = sqlalchemy.select(studies.c.study_id, *columns).select_from(joined)
        query = query.where(studies.c.study_id == study_id)
    rows = conn.execute(query.order_by(t.c.trial_id)).all()
    if study_id is not None:
        if not rows:
            return None
        rows = [r for r in rows if r.trial_id is not None]
    if not rows:
        return []
    given = known(rows) if known is not None else {}
    ids = [r.trial_id for r in rows if r.trial_id not in given]
    children = {i: ([], [], [], [], []) for i in ids}
    for chunk in (ids[i : i + 900] for i in range(0, len(ids), 900)):  # SQLite's oldest limit: 999 variables
        for kind, trial_id, _order, key, number, value, text in conn.execute(
            children_query(), {"ids": chunk}
        ):
            children[trial_id][kind].append((key, number, value, text))
    value_type = models.TrialValueModel.TrialValueType
    step_type = models.TrialIntermediateValueModel.TrialIntermediateValueType
    to_value = models.TrialValueModel.stored_repr_to_value
    to_step = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    out = []
    for r in rows:
        if r.trial_id in given:
            out.append(given[r.trial_id])
            continue
        params, values, user, system, steps = children[r.trial_id]
        trial_values = None
        if values:
            trial_values = [0.0] * len(values)
            for _k, objective, value, kind in values:
                trial_values[objective] = to_value(value, value_type[kind])
        dists = {name: distributions.json_to_distribution(text) for name, _n, _v, text in params}
        out.append(
            FrozenTrial(
                number=r.number,
                state=r.state,
                value=None,
                values=trial_values,
                datetime_start=utc_to_local(r.datetime_start),
                datetime_complete=utc_to_local(r.datetime_complete),
                params={name: dists[name].to_external_repr(value) for name, _n, value, _t in params},
                distributions=dists,
                user_attrs={key: json.loads(text) for key, _n, _v, text in user},
                system_attrs={key: json.loads(text) for key, _n, _v, text in system},
                intermediate_values={
                    step: to_step(value, step_type[kind]) for _k, step, value, kind in steps
                },
                trial_id=r.trial_id,
            )
        )
    return out


@functools.cache
def children_query():
    """(kind, trial_id, order, key, number, value, text) of every row hanging from the trials ``:ids``: kind 0
    params (name, -, value, distribution JSON), 1 values (-, objective, value, type), 2 user and 3 system
    attributes (key, -, -, JSON), 4 intermediate values (-, step, value, type); ordered as Optuna reads them. Enum
    columns are cast to text (on PostgreSQL they are enum types, which a UNION cannot mix with text); the NULLs
    of a part stay bare, for the database to type from the other parts (portable to SQLite, PostgreSQL, MariaDB).
    """
    import sqlalchemy
    from optuna.storages._rdb import models

    String, Integer, Float = sqlalchemy.String, sqlalchemy.Integer, sqlalchemy.Float(precision=53)

    def none(kind):  # a bare NULL, typed for the result only: MariaDB has no CAST(... AS FLOAT(53))
        return sqlalchemy.type_coerce(sqlalchemy.null(), kind)

    def part(kind: int, model, order, key, number, value, text, enum=False):
        table = model.__table__
        return sqlalchemy.select(
            sqlalchemy.literal(kind, Integer).label("kind"),
            table.c.trial_id.label("trial_id"),
            table.c[order].label("ord"),
            (table.c[key] if key else none(String)).label("k"),
            (table.c[number] if number else none(Integer)).label("n"),
            (table.c[value] if value else none(Float)).label("v"),
            (sqlalchemy.cast(table.c[text], String) if enum else table.c[text]).label("t"),
        ).where(table.c.trial_id.in_(ids))

    # One statement, built once (building it cost 1 ms a call), its ids bound at each execution.
    ids = sqlalchemy.bindparam("ids", expanding=True)

    query = sqlalchemy.union_all(
        part(0, models.TrialParamModel, "param_id", "param_name", None, "param_value", "distribution_json"),
        part(1, models.TrialValueModel, "trial_value_id", None, "objective", "value", "value_type", True),
        part(2, models.TrialUserAttributeModel, "trial_user_attribute_id", "key", None, None, "value_json"),
        part(
            3, models.TrialSystemAttributeModel, "trial_system_attribute_id", "key", None, None, "value_json"
        ),
        part(
            4,
            models.TrialIntermediateValueModel,
            "trial_intermediate_value_id",
            None,
            "step",
            "intermediate_value",
            "intermediate_value_type",
            True,
        ),
    )
    return query.order_by(sqlalchemy.literal_column("kind"), sqlalchemy.literal_column("ord"))


def write_end_in_session(rdb: RDBStorage, session, trial_id: int, attrs, values) -> None:
    """:func:`write_trial_end` in one transaction (``session``): the trial looked up, then one multi-row upsert
    per table (Optuna's own write: a trial lookup and an upsert per attribute, an ORM object per step), or
    Optuna's own writes where SQLAlchemy has no upsert for the database. A retry that inherited its original's
    values has them replaced, as a report would."""
    from optuna.storages._rdb import models

    steps = models.TrialIntermediateValueModel
    updatable(rdb, session, trial_id)
    rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
    if rows and not upsert(
        session, models.TrialUserAttributeModel, rows, ("trial_id", "key"), ("value_json",)
    ):
        for key, value in attrs.items():  # another database: Optuna's own upsert, minus its commit
            rdb._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial_id, key, value)
    rows = []
    for step, value in sorted(values.items()):
        stored, kind = steps.intermediate_value_to_stored_repr(float(value))
        rows.append(
            {
                "trial_id": trial_id,
                "step": int(step),
                "intermediate_value": stored,
                "intermediate_value_type": kind,
            }
        )
    columns = ("intermediate_value", "intermediate_value_type")
    if rows and not upsert(session, steps, rows, ("trial_id", "step"), columns):
        existing = {m.step: m for m in session.query(steps).filter(steps.trial_id == trial_id).all()}
        for row in rows:
            if row["step"] in existing:
                for column in columns:
                    setattr(existing[row["step"]], column, row[column])
            else:
                session.add(steps(**row))


def upsert(session, model, rows: list[dict], keys: tuple[str, ...], columns: tuple[str, ...]) -> bool:
    """``rows`` inserted into ``model``'s table, the ``columns`` of those whose ``keys`` exist updated instead: one
    statement with the rows as parameters (SQLAlchemy sends them as one multi-row INSERT, compiled once per shape;
    the rows written into the statement's text cost 5 ms a call to compile). False, with nothing written, on a
    database without an upsert SQLAlchemy can write."""
    dialect = (
        session.dialect if hasattr(session, "dialect") else session.get_bind().dialect
    )  # a Connection, a Session
    statement = upsert_statement(dialect.name, model, keys, columns)
    if statement is None:
        return False
    session.execute(statement, rows)
    return True


@functools.cache
def upsert_statement(dialect: str, model, keys: tuple[str, ...], columns: tuple[str, ...]):
    table = model.__table__
    if dialect in ("postgresql", "sqlite"):
        from sqlalchemy.dialects import postgresql, sqlite

        statement = (postgresql if dialect == "postgresql" else sqlite).insert(table)
        return statement.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys], set_={c: statement.excluded[c] for c in columns}
        )
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects import mysql

        statement = mysql.insert(table)
        return statement.on_duplicate_key_update({c: statement.inserted[c] for c in columns})
    return None
