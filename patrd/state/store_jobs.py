"""The Store's job runs: ``JOB_RUNS_KEPT`` per job, with their logs."""

from __future__ import annotations

import time
from typing import Any

from patrd.model.errors import NotFound
from patrd.model.records import JOB_RUNS_KEPT, JobRunRecord
from patrd.state.store_base import StoreBase
from patrd.state.store_rows import insert_event


class JobsPart(StoreBase):
    """Scheduled job runs (patrd/run/jobs.py): one row per run, its newest output."""

    async def start_job_run(self, deployment_id: str, job: str, trigger: str) -> JobRunRecord:
        now = time.time()
        async with self._tx() as db:
            cur = await db.execute(
                "INSERT INTO job_runs (deployment_id, job, trigger, started_at, outcome) "
                "VALUES (?, ?, ?, ?, 'running')",
                (deployment_id, job, trigger, now),
            )
            run_id = int(cur.lastrowid or 0)
        return JobRunRecord(run_id, deployment_id, job, trigger, now, None, None, "running", "")

    async def finish_job_run(
        self,
        run: JobRunRecord,
        *,
        exit_code: int | None,
        outcome: str,
        message: str,
        log: str,
        event: tuple[str, str],
    ) -> None:
        """Record the end of a run and its event (``job.ok``/``job.failed``) at once;
        the job's oldest runs beyond ``JOB_RUNS_KEPT`` go."""
        now = time.time()
        async with self._tx() as db:
            await db.execute(
                "UPDATE job_runs SET ended_at = ?, exit_code = ?, outcome = ?, message = ?, "
                "log = ? WHERE id = ?",
                (now, exit_code, outcome, message, log, run.id),
            )
            await db.execute(
                "DELETE FROM job_runs WHERE deployment_id = ? AND job = ? AND id NOT IN "
                "(SELECT id FROM job_runs WHERE deployment_id = ? AND job = ? "
                "ORDER BY id DESC LIMIT ?)",
                (run.deployment_id, run.job, run.deployment_id, run.job, JOB_RUNS_KEPT),
            )
            exists = await db.execute_fetchall(
                "SELECT 1 FROM deployments WHERE id = ?", (run.deployment_id,)
            )
            if list(exists):
                await insert_event(db, run.deployment_id, event[0], event[1], None, now)

    async def running_job_runs(self) -> list[JobRunRecord]:
        """Runs not finished: at start, the ones a previous daemon left."""
        rows = await self._all(
            "SELECT id, deployment_id, job, trigger, started_at, ended_at, exit_code, outcome, "
            "message FROM job_runs WHERE outcome = 'running' ORDER BY id"
        )
        return [JobRunRecord(*row) for row in rows]

    async def job_runs(
        self, deployment_id: str, job: str | None = None, limit: int = JOB_RUNS_KEPT
    ) -> list[JobRunRecord]:
        """Newest first, without their logs."""
        query = (
            "SELECT id, deployment_id, job, trigger, started_at, ended_at, exit_code, outcome, "
            "message FROM job_runs WHERE deployment_id = ?"
        )
        params: list[Any] = [deployment_id]
        if job is not None:
            query += " AND job = ?"
            params.append(job)
        rows = await self._all(query + " ORDER BY id DESC LIMIT ?", [*params, limit])
        return [JobRunRecord(*row) for row in rows]

    async def last_job_runs(self, deployment_id: str) -> dict[str, JobRunRecord]:
        """The newest run of each job of a deployment."""
        rows = await self._all(
            "SELECT id, deployment_id, job, trigger, started_at, ended_at, exit_code, outcome, "
            "message FROM job_runs WHERE id IN (SELECT MAX(id) FROM job_runs "
            "WHERE deployment_id = ? GROUP BY job)",
            (deployment_id,),
        )
        return {str(row[2]): JobRunRecord(*row) for row in rows}

    async def job_run_log(self, deployment_id: str, run_id: int) -> tuple[JobRunRecord, str]:
        row = await self._one(
            "SELECT id, deployment_id, job, trigger, started_at, ended_at, exit_code, outcome, "
            "message, log FROM job_runs WHERE deployment_id = ? AND id = ?",
            (deployment_id, run_id),
        )
        if row is None:
            raise NotFound(f"job run {run_id} not found")
        return JobRunRecord(*row[:9]), str(row[9])
