"""Optuna's database storage with its trial reads and writes in SQLAlchemy Core: :class:`OwnedRDBStorage`.

Optuna's ``RDBStorage`` builds every trial it reads through its ORM (a model object per row, one lazy or select-in
query per table: 7.2 ms for one trial of the reference study on PostgreSQL here) and writes each attribute as a
lookup and an insert in a transaction of its own. A trial of the reference study made about 75 round trips to
PostgreSQL that way. :class:`OwnedRDBStorage` keeps Optuna's tables, checks, errors and retries and changes how
they are read and written:

- **Reads** in two statements (the trials, then every row that hangs from them in one ``UNION ALL``):
  :func:`read_trials`, 2.2 ms a trial on PostgreSQL.
- **A worker's own trials** (PostgreSQL, SQLite) are kept as it writes them and read from that copy: Optuna reads
  a trial it runs 3 times and re-reads it among the study's trials twice more.
- **PostgreSQL**: a lone read or a one-statement write is sent without a transaction around it (READ COMMITTED
  gives each statement its own snapshot); a running trial's param or attribute is one guarded INSERT; a new
  trial is 3 statements in one transaction; a trial's end (state and values) and its last attributes and curve
  are one statement each (data-modifying WITH clauses).

``tests/test_rdb_core.py`` compares every field of every trial, and every refusal, with a plain ``RDBStorage`` on
SQLite, PostgreSQL and MariaDB (the oracle), and this worker's copies of its own trials with what the database
gives back.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

from pipeline.tuning.rdb_sql import (
    end_statement,
    guarded_insert,
    local_to_utc,
    read_trials,
    row_lock,
    trial_end_statement,
    trial_insert,
    updatable,
    upsert,
    upsert_statement,
    utc_to_local,
    write_end_in_session,
)


class OwnedRDBStorage(RDBStorage):
    """Optuna's RDBStorage whose new trials carry their owner (``host:pid:start``) from the transaction that creates
    them, as :class:`pipeline.tuning.repair.OwnedJournalStorage` does for journal files: no instant without an
    owner, and no separate write for it (the objective's ``claim`` then finds itself already recorded)."""

    def __init__(self, *args, **kwargs) -> None:
        # Optuna creates the engine first, then its tables and version row through it. When that fails (the race
        # open_database retries, a schema it refuses), the engine's pooled connections would stay open on the
        # server until a garbage collection finds the storage's reference cycles: seconds, during which a retry's
        # new engine holds connections too. Closed here, at once.
        self._own: dict[int, FrozenTrial] = {}
        self._own_lock = threading.Lock()
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            engine = getattr(self, "engine", None)
            if engine is not None:
                engine.dispose()
            raise

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_own_lock", None)
        state["_own"] = {}
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._own_lock = threading.Lock()

    # A worker's own trials. A RUNNING trial is written only by the worker that runs it; another worker may only
    # end it (the heartbeat's stale-trial check, ``repair``'s owner check). So this worker's trials are kept here
    # as it writes them, each write stored as the reader would give it back (JSON, distributions, the stored
    # forms of values), and read from here: Optuna reads a trial it runs 3 times and re-reads it among the
    # study's trials twice more, 10 round trips a trial on their own. Where Optuna reads a study's trials, their
    # rows are still read from the database, and a copy whose row disagrees (a trial another worker ended) is
    # dropped and the trial read whole. A write that fails drops the copy too; the next read goes to the
    # database. A finished trial's copy lives until the study's trials are read once more (Optuna's cache then
    # keeps it). Optuna 2's cache kept its "owned" trials the same way. On PostgreSQL and SQLite, whose stored
    # datetimes keep their microseconds (MySQL's DATETIME drops them): a copy reads back equal field by field
    # (tests/test_rdb_core.py).

    def _keeps_own(self) -> bool:
        return self.engine.dialect.name in ("postgresql", "sqlite")

    def _own_remember(self, frozen: FrozenTrial) -> None:
        if frozen.state != optuna.trial.TrialState.RUNNING or not self._keeps_own():
            return
        kept = copy.deepcopy(frozen)
        kept.user_attrs = {k: _json_copy(v) for k, v in kept.user_attrs.items()}
        kept.system_attrs = {k: _json_copy(v) for k, v in kept.system_attrs.items()}
        kept.datetime_start = utc_to_local(local_to_utc(kept.datetime_start))
        with self._own_lock:
            for trial_id in [i for i, t in self._own.items() if t.state.is_finished()]:
                del self._own[trial_id]  # read by now, or read from the database if not
            self._own[frozen._trial_id] = kept

    def _own_forget(self, trial_id: int) -> None:
        with self._own_lock:
            self._own.pop(trial_id, None)

    def _own_apply(self, trial_id: int, change: Callable[[FrozenTrial], Any]) -> None:
        with self._own_lock:
            kept = self._own.get(trial_id)
            if kept is not None:
                change(kept)

    @contextlib.contextmanager
    def _own_write(self, trial_id: int):
        """Around a write of trial ``trial_id``: yields ``apply(change)``, to call once the write is done; a
        write that raises drops the trial's copy."""
        try:
            yield functools.partial(self._own_apply, trial_id)
        except BaseException:
            self._own_forget(trial_id)
            raise

    def _own_rows(self, rows) -> dict[int, FrozenTrial]:
        """Copies of the kept trials among ``rows`` (trials-table rows) whose row agrees with the copy; the
        others are dropped, as are finished ones once given (Optuna's cache keeps them from then on)."""
        given: dict[int, FrozenTrial] = {}
        with self._own_lock:
            if not self._own:
                return given
            for r in rows:
                kept = self._own.get(r.trial_id)
                if kept is None:
                    continue
                if (
                    r.number == kept.number
                    and r.state == kept.state
                    and utc_to_local(r.datetime_start) == kept.datetime_start
                    and utc_to_local(r.datetime_complete) == kept.datetime_complete
                ):
                    given[r.trial_id] = copy.deepcopy(kept)
                    if not kept.state.is_finished():
                        continue
                del self._own[r.trial_id]
        return given

    # Transactions. PostgreSQL at its default isolation, READ COMMITTED, gives every statement a snapshot of its
    # own, in a transaction or not: there a read, or a write that is one statement, needs no transaction, and
    # runs without the BEGIN and the COMMIT or ROLLBACK around it (two round trips of the five a lone read costs:
    # 1.4 -> 1.0 ms a trial read here). Elsewhere (SQLite; MySQL, whose REPEATABLE READ makes a transaction's
    # statements agree) every call keeps its transaction.

    def _single_statements(self) -> bool:
        dialect = self.engine.dialect
        return dialect.name == "postgresql" and dialect.default_isolation_level == "READ COMMITTED"

    @contextlib.contextmanager
    def _connect(self, autocommit: bool = True):
        """A pooled connection; in autocommit where :meth:`_single_statements`. SQLAlchemy's errors become
        Optuna's StorageInternalError, as in Optuna's sessions."""
        import sqlalchemy.exc

        try:
            with self.engine.connect() as conn:
                if autocommit and self._single_statements():
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn
        except sqlalchemy.exc.IntegrityError:
            raise
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit. This typically happens due to invalid data in the "
                "commit, e.g. exceeding max length. "
            ) from exc

    # Reads. Optuna builds a trial through its ORM (a model object per row, lazy relationships, the session's
    # identity map): 7 ms for one trial of the reference study on PostgreSQL here, where the same 6 SELECTs run in
    # SQLAlchemy Core take a fraction of it. Every trial reads itself 3 times (ask, tell, the callbacks) and
    # re-reads itself and any new trial 3 times more (the cache's sync for the waiting queue, TPE's search space,
    # TPE's constant liar). Same statements, same transaction shape, same FrozenTrial (tests/test_rdb_core.py
    # compares every field with Optuna's own reader).

    def get_trial(self, trial_id: int) -> FrozenTrial:
        from optuna.storages._rdb import models

        with self._own_lock:
            kept = self._own.get(trial_id)
            if kept is not None:
                return copy.deepcopy(kept)
        with self._connect() as conn:
            found = read_trials(
                conn, models.TrialModel.__table__.c.trial_id == trial_id, known=self._own_rows
            )
        if not found:
            raise KeyError(models.NOT_FOUND_MSG)
        return found[0]

    def _get_trials(
        self,
        study_id: int,
        states,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        import sqlalchemy
        from optuna.storages._rdb import models

        included = {i for i in included_trial_ids if i <= trial_id_greater_than}
        trials = models.TrialModel.__table__
        where = sqlalchemy.true()
        if states is not None:
            where = sqlalchemy.and_(where, trials.c.state.in_(list(states)))
        if trial_id_greater_than > -1:
            newer = trials.c.trial_id > trial_id_greater_than
            where = sqlalchemy.and_(
                where, sqlalchemy.or_(trials.c.trial_id.in_(included), newer) if included else newer
            )
        with self._connect() as conn:
            found = read_trials(conn, where, study_id=study_id, known=self._own_rows)
        if found is None:
            raise KeyError(models.NOT_FOUND_MSG)
        return found

    # Writes a running trial makes (its params, its user and system attributes): Optuna's own statements, each a
    # trial lookup through the ORM then an insert or an upsert, here in Core with statements compiled once. Same
    # checks (the trial exists and is not finished; a param's distribution fits the study's), same errors.

    def _set_trial_attr_without_commit(self, session, model_cls, trial_id: int, key: str, value: Any) -> None:
        statement = upsert_statement(
            session.get_bind().dialect.name, model_cls, ("trial_id", "key"), ("value_json",)
        )
        if statement is None:
            super()._set_trial_attr_without_commit(session, model_cls, trial_id, key, value)
            return
        updatable(self, session, trial_id)
        session.execute(statement, [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}])

    def _set_trial_param_without_commit(
        self,
        session,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution,
        previous_distribution=None,
    ) -> None:
        import sqlalchemy
        from optuna.storages._rdb import models

        row = _checked_param(
            self, session, trial_id, param_name, param_value_internal, distribution, previous_distribution
        )
        session.execute(sqlalchemy.insert(models.TrialParamModel.__table__), [row])

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution,
        previous_distribution=None,
    ) -> None:
        from optuna import distributions

        with self._own_write(trial_id) as apply:
            self._write_param(trial_id, param_name, param_value_internal, distribution, previous_distribution)
            stored = distributions.json_to_distribution(distributions.distribution_to_json(distribution))

            def kept(trial: FrozenTrial) -> None:
                trial.distributions[param_name] = stored
                trial.params[param_name] = stored.to_external_repr(param_value_internal)

            apply(kept)

    def _write_param(
        self, trial_id: int, param_name: str, internal: float, distribution, previous_distribution
    ) -> None:
        if not self._single_statements():
            super()._set_trial_param(trial_id, param_name, internal, distribution, previous_distribution)
            return
        from optuna.storages._rdb import models

        if previous_distribution is None:  # the first param of this name this process writes: one read more
            with self._connect() as conn:
                row = _checked_param(self, conn, trial_id, param_name, internal, distribution, None)
        else:
            row = _checked_param(
                self, None, trial_id, param_name, internal, distribution, previous_distribution
            )
        self._write_running(trial_id, models.TrialParamModel, None, row)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        from optuna.storages._rdb import models

        with self._own_write(trial_id) as apply:
            self._set_attr(models.TrialUserAttributeModel, trial_id, key, value)
            apply(lambda trial: trial.user_attrs.__setitem__(key, _json_copy(value)))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        from optuna.storages._rdb import models

        with self._own_write(trial_id) as apply:
            self._set_attr(models.TrialSystemAttributeModel, trial_id, key, value)
            apply(lambda trial: trial.system_attrs.__setitem__(key, _json_copy(value)))

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        """Optuna's (a report, when a pruner reads the curve as the trial runs); on PostgreSQL one guarded
        upsert (:meth:`_write_running`) where Optuna's ORM sends a lookup, a read of the step and a write."""
        from optuna.storages._rdb import models

        steps = models.TrialIntermediateValueModel
        with self._own_write(trial_id) as apply:
            if self._single_statements():
                stored, kind = steps.intermediate_value_to_stored_repr(intermediate_value)
                row = {
                    "trial_id": trial_id,
                    "step": step,
                    "intermediate_value": stored,
                    "intermediate_value_type": kind,
                }
                self._write_running(trial_id, steps, ("trial_id", "step"), row)
            else:
                super().set_trial_intermediate_value(trial_id, step, intermediate_value)
            value = _stored_step(intermediate_value)
            apply(lambda trial: trial.intermediate_values.__setitem__(step, value))

    def _set_attr(self, model, trial_id: int, key: str, value: Any) -> None:
        from optuna.storages._rdb.storage import _create_scoped_session

        if not self._single_statements():
            with _create_scoped_session(self.scoped_session, True) as session:
                self._set_trial_attr_without_commit(session, model, trial_id, key, value)
            return
        row = {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
        self._write_running(trial_id, model, ("trial_id", "key"), row)

    def _write_running(self, trial_id: int, model, keys: tuple[str, ...] | None, row: dict) -> None:
        """``row`` written into ``model``'s table in one statement (:func:`guarded_insert`, upserted on ``keys``)
        when trial ``trial_id`` exists and is not finished; else Optuna's KeyError or UpdateFinishedTrialError
        (read after the write matched nothing). Optuna's writers ignore an IntegrityError (a param another
        writer stored under the same name at the same moment); so does this one."""
        import sqlalchemy.exc

        try:
            with self._connect() as conn:
                if conn.execute(guarded_insert(model, keys, tuple(row)), row).first() is not None:
                    return
                updatable(self, conn, trial_id)
        except sqlalchemy.exc.IntegrityError:
            return
        raise optuna.exceptions.StorageInternalError(
            f"trial {trial_id}: a write to {model.__tablename__} matched no running trial"
        )

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        # The method both RDBStorage.create_new_trial and Optuna's cache in front of it call.
        if template_trial is None:
            import datetime

            from pipeline.tuning.repair import owned_trial

            template_trial = owned_trial(
                datetime.datetime.now()
            )  # naive local time, as RDBStorage stores its own
            if self._single_statements():
                created = self._create_owned_trial(study_id, template_trial)
            else:
                created = super()._create_new_trial(study_id, template_trial)
            self._own_remember(created)
            return created
        return super()._create_new_trial(study_id, template_trial)

    def _create_owned_trial(self, study_id: int, template: FrozenTrial) -> FrozenTrial:
        """A new RUNNING trial with ``template``'s start and user attributes (its owner), in Core: the study's
        row locked, the trial inserted with its number counted in the same statement, its attributes in one
        insert; 3 statements in one transaction, where Optuna's ORM sends 7 and reads the trial back after the
        commit. The number is Optuna's (the trials of the study before this one), counted under the lock Optuna
        takes too, so that workers creating trials at once get distinct numbers. Optuna's retries on a deadlock."""
        import random
        import time

        from optuna.storages._rdb import models

        study_row = row_lock(models.StudyModel, "study_id", "study_id")
        for attempt in range(1, 6):
            try:
                with self._connect(autocommit=False) as conn, conn.begin():
                    if conn.execute(study_row, {"study_id": study_id}).first() is None:
                        raise KeyError(models.NOT_FOUND_MSG)
                    created = conn.execute(
                        trial_insert(),
                        {
                            "study_id": study_id,
                            "state": optuna.trial.TrialState.RUNNING,
                            "datetime_start": local_to_utc(template.datetime_start),
                        },
                    ).one()
                    if template.user_attrs:
                        rows = [
                            {"trial_id": created.trial_id, "key": key, "value_json": json.dumps(value)}
                            for key, value in template.user_attrs.items()
                        ]
                        conn.execute(models.TrialUserAttributeModel.__table__.insert(), rows)
                break
            except optuna.exceptions.StorageInternalError:
                if attempt == 5:
                    raise
                time.sleep(random.random() * 2.0)
        frozen = copy.deepcopy(template)
        frozen.number = created.number
        frozen.datetime_start = utc_to_local(created.datetime_start)
        frozen._trial_id = created.trial_id
        return frozen

    def set_trial_state_values(self, trial_id: int, state, values=None) -> bool:
        """Optuna's (the trial's row locked, its values upserted, its state and times set), on PostgreSQL in
        Core: a trial's end in one statement (:meth:`_end`), any other change in 3 statements in one transaction,
        where Optuna's ORM sends 5. Same checks, same False (a trial no longer WAITING that was to be RUNNING; a
        conflicting write), same times (now, stored naive UTC)."""
        if not self._single_statements():
            self._own_forget(trial_id)  # Optuna's own write: its times are not known here
            return super().set_trial_state_values(trial_id, state, values)
        with self._own_write(trial_id) as apply:
            done = self._end(trial_id, state, values) if state.is_finished() else None
            if done is None:
                done = self._write_state(trial_id, state, values)
            if done is None:
                self._own_forget(trial_id)
                return False
            kept_values = None if values is None else [_stored_value(v) for v in values]

            def kept(trial: FrozenTrial) -> None:
                trial.state = state
                if kept_values is not None:
                    trial.values = kept_values
                if state == optuna.trial.TrialState.RUNNING:
                    trial.datetime_start = done
                if state.is_finished():
                    trial.datetime_complete = done

            apply(kept)
            return True

    def _end(self, trial_id: int, state, values):
        """A trial's end on PostgreSQL in one statement (:func:`end_statement`): its state and time set only
        where it is not finished (the UPDATE's own check, taken again on a row another transaction changed),
        its values upserted only then. The time written (naive local, as read back), or None when the trial was
        not updated; Optuna's KeyError or UpdateFinishedTrialError come from :meth:`_write_state` then."""
        import datetime

        from optuna.storages._rdb import models

        value_model = models.TrialValueModel
        stored = [value_model.value_to_stored_repr(v) for v in values or ()]
        now = local_to_utc(datetime.datetime.now())
        params = {
            "trial_id": trial_id,
            "state": state.name,
            "now": now,
            "objectives": list(range(len(stored))),
            "values": [value for value, _kind in stored],
            "kinds": [kind.name for _value, kind in stored],
        }
        with self._connect() as conn:
            if conn.execute(end_statement(), params).first() is None:
                return None
        return utc_to_local(now)

    def write_trial_end(self, trial_id: int, attrs: Mapping[str, Any], values: Mapping[int, float]) -> None:
        """A trial's last user attributes and kept intermediate values ``{step: value}`` (see
        :func:`pipeline.tuning.rdb.write_trial_end`): one statement on PostgreSQL (:meth:`_write_end`), one
        transaction elsewhere; kept in this worker's copy of the trial once written."""
        from optuna.storages._rdb.storage import _create_scoped_session

        with self._own_write(trial_id) as apply:  # a failed write drops this worker's copy of the trial
            if self._single_statements():
                self._write_end(trial_id, attrs, values)
            else:
                with _create_scoped_session(self.scoped_session, True) as session:
                    write_end_in_session(self, session, trial_id, attrs, values)
            kept_attrs = {k: _json_copy(v) for k, v in attrs.items()}
            kept_steps = {int(s): _stored_step(float(v)) for s, v in values.items()}

            def kept(frozen: FrozenTrial) -> None:
                frozen.user_attrs.update(kept_attrs)
                frozen.intermediate_values.update(kept_steps)

            apply(kept)

    def _write_end(self, trial_id: int, attrs: Mapping[str, Any], values: Mapping[int, float]) -> None:
        """:func:`write_trial_end` on PostgreSQL: one statement (:func:`trial_end_statement`), written only
        where the trial exists and is not finished; else Optuna's KeyError or UpdateFinishedTrialError."""
        from optuna.storages._rdb import models

        steps = models.TrialIntermediateValueModel
        points = [
            (int(step), *steps.intermediate_value_to_stored_repr(float(v)))
            for step, v in sorted(values.items())
        ]
        params = {
            "trial_id": trial_id,
            "keys": list(attrs),
            "jsons": [json.dumps(v) for v in attrs.values()],
            "steps": [step for step, _v, _k in points],
            "values": [value for _s, value, _k in points],
            "kinds": [kind.name for _s, _v, kind in points],
        }
        with self._connect() as conn:
            if conn.execute(trial_end_statement(), params).first() is not None:
                return
            updatable(self, conn, trial_id)
        raise optuna.exceptions.StorageInternalError(f"trial {trial_id}: its end matched no running trial")

    def _write_state(self, trial_id: int, state, values):
        """:meth:`set_trial_state_values` on PostgreSQL: the time written (naive local, as read back), or None
        where Optuna's returns False."""
        import datetime

        import sqlalchemy
        import sqlalchemy.exc
        from optuna.storages._rdb import models
        from optuna.trial import TrialState

        trials = models.TrialModel.__table__
        try:
            with self._connect(autocommit=False) as conn, conn.begin():
                row = conn.execute(
                    row_lock(models.TrialModel, "trial_id", "state"), {"trial_id": trial_id}
                ).first()
                if row is None:
                    raise KeyError(models.NOT_FOUND_MSG)
                self.check_trial_is_updatable(trial_id, row.state)
                if values is not None:
                    value_model = models.TrialValueModel
                    rows = []
                    for objective, value in enumerate(values):
                        stored, kind = value_model.value_to_stored_repr(value)
                        rows.append(
                            {
                                "trial_id": trial_id,
                                "objective": objective,
                                "value": stored,
                                "value_type": kind,
                            }
                        )
                    if rows:
                        upsert(conn, value_model, rows, ("trial_id", "objective"), ("value", "value_type"))
                if state == TrialState.RUNNING and row.state != TrialState.WAITING:
                    return None  # the values stay written, as in Optuna's
                changes: dict[str, Any] = {"state": state}
                now = local_to_utc(datetime.datetime.now())
                if state == TrialState.RUNNING:
                    changes["datetime_start"] = now
                if state.is_finished():
                    changes["datetime_complete"] = now
                conn.execute(sqlalchemy.update(trials).where(trials.c.trial_id == trial_id).values(**changes))
        except sqlalchemy.exc.IntegrityError:
            return None
        return utc_to_local(now)


def _json_copy(value):
    """``value`` as its stored JSON reads back (tuples become lists, ...)."""
    return json.loads(json.dumps(value))


def _stored_value(value: float) -> float:
    """A trial's value as it reads back from its stored form (inf and -inf kept as a type, not a number)."""
    from optuna.storages._rdb import models

    return models.TrialValueModel.stored_repr_to_value(*models.TrialValueModel.value_to_stored_repr(value))


def _stored_step(value: float) -> float:
    """An intermediate value as it reads back from its stored form (nan, inf and -inf kept as a type)."""
    from optuna.storages._rdb import models

    steps = models.TrialIntermediateValueModel
    return steps.stored_repr_to_intermediate_value(*steps.intermediate_value_to_stored_repr(value))


def _checked_param(
    storage: RDBStorage, executor, trial_id: int, name: str, internal: float, distribution, previous
) -> dict:
    """The row of a param about to be written, after Optuna's checks: with no ``previous`` distribution (none
    cached) the trial is looked up (KeyError, UpdateFinishedTrialError) and the study's first distribution of
    that name read through ``executor``; a distribution of another kind is refused (ValueError)."""
    import sqlalchemy
    from optuna import distributions
    from optuna.storages._rdb import models

    if previous is None:
        study_id = updatable(storage, executor, trial_id)
        params, trials = models.TrialParamModel.__table__, models.TrialModel.__table__
        stored = executor.execute(
            sqlalchemy.select(params.c.distribution_json)
            .join(trials, trials.c.trial_id == params.c.trial_id)
            .where(trials.c.study_id == study_id, params.c.param_name == name)
            .limit(1)
        ).scalar()
        if stored is not None:
            previous = distributions.json_to_distribution(stored)
    if previous is not None:
        distributions.check_distribution_compatibility(previous, distribution)
    return {
        "trial_id": trial_id,
        "param_name": name,
        "param_value": internal,
        "distribution_json": distributions.distribution_to_json(distribution),
    }
