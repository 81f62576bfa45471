"""Mount jobtrack's dashboard into your own FastAPI app, under /ops/jobs.

Run it:  JOBTRACK_DATABASE_URL=sqlite:///jobs.db uvicorn mount_dashboard:app
then open http://127.0.0.1:8000/ops/jobs/ (your own routes stay where they were).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from celery import Celery
from fastapi import FastAPI

import jobtrack
from jobtrack.control import controller
from jobtrack.web import create_app

celery_app = Celery("myproject", broker="memory://")
tracker = jobtrack.install(celery_app)  # the database from JOBTRACK_DATABASE_URL
jobs = create_app(tracker.store, tracker.settings, control=controller(celery_app, tracker))


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    jobs.state.feed.close()  # a mounted app's own lifespan does not run


app = FastAPI(lifespan=lifespan)
app.mount("/ops/jobs", jobs)


@app.get("/")
def home() -> dict[str, str]:
    return {"dashboard": "/ops/jobs/"}
