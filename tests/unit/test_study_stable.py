"""Study-stable detection: the service on SQLite timers with an injected clock, and the embedded worker
(event log in, StudyStable out, cursor and timers surviving a restart)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pacs.config import Settings
from pacs.events.embedded import EmbeddedEventLog
from pacs.events.publisher import STUDY_STABLE, STUDY_UPDATED
from pacs.services.stable_worker import SqliteTimerStore, StableWorker
from pacs.services.study_stable import StudyStableService

P, S = "default", "1.2.3"


@dataclass
class Study:
    n_series: int = 1
    n_instances: int = 1
    size: int = 100
    modalities: set[str] = field(default_factory=lambda: {"CT"})
    sop_classes: set[str] = field(default_factory=lambda: {"1.2.840.10008.5.1.4.1.1.2"})


class Catalog:
    def __init__(self) -> None:
        self.studies: dict[tuple[str, str], Study] = {}

    def get_study(self, partition: str, study_uid: str) -> Study | None:
        return self.studies.get((partition, study_uid))


class Events:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        if self.fail:
            raise OSError("bus down")
        self.published.append((detail_type, detail))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def updated(deleted: bool = False) -> dict[str, Any]:
    return {"partition": P, "studyInstanceUID": S, "deleted": deleted}


@pytest.fixture
def parts(tmp_path: Path) -> tuple[StudyStableService, Catalog, Events, Clock, SqliteTimerStore]:
    catalog, events, clock = Catalog(), Events(), Clock()
    catalog.studies[(P, S)] = Study()
    timers = SqliteTimerStore(str(tmp_path / "stable.db"))
    service = StudyStableService(catalog, timers, events, quiet_seconds=60, clock=clock)  # type: ignore[arg-type]
    return service, catalog, events, clock, timers


def test_arm_rearm_emit_once_then_generation_2(parts: Any) -> None:
    service, catalog, events, clock, _ = parts
    assert service.handle(STUDY_UPDATED, updated(), 1000.0)
    clock.now = 1050.0
    assert service.fire() == []
    assert service.handle(STUDY_UPDATED, updated(), 1050.0)  # re-armed: due at 1110
    clock.now = 1100.0
    assert service.fire() == []
    clock.now = 1110.0
    [detail] = service.fire()
    assert detail["generation"] == 1 and detail["quietSeconds"] == 60 and detail["numberOfInstances"] == 1
    assert detail["modalities"] == ["CT"] and "cause" not in detail and detail["lastChange"] == 1050.0
    clock.now = 5000.0
    assert service.fire() == []  # once
    catalog.studies[(P, S)].n_instances = 2
    assert service.handle(STUDY_UPDATED, updated(), 5000.0)  # a late instance
    clock.now = 5060.0
    [late] = service.fire()
    assert late["generation"] == 2 and late["numberOfInstances"] == 2
    assert [t for t, _ in events.published] == [STUDY_STABLE, STUDY_STABLE]


def test_redelivered_event_changes_nothing(parts: Any) -> None:
    service, _, events, clock, _ = parts
    service.handle(STUDY_UPDATED, updated(), 1000.0)
    clock.now = 1060.0
    assert len(service.fire()) == 1
    assert not service.handle(STUDY_UPDATED, updated(), 1000.0)  # redelivered
    assert not service.handle(STUDY_UPDATED, updated(), 990.0)  # an older one, late
    clock.now = 9999.0
    assert service.fire() == [] and len(events.published) == 1


def test_deleted_study_cancels_its_timer(parts: Any) -> None:
    service, catalog, events, clock, _ = parts
    service.handle(STUDY_UPDATED, updated(), 1000.0)
    del catalog.studies[(P, S)]
    service.handle(STUDY_UPDATED, updated(deleted=True), 1010.0)
    clock.now = 2000.0
    assert service.fire() == [] and events.published == []


def test_publish_failure_fires_again(parts: Any) -> None:
    service, _, events, clock, timers = parts
    service.handle(STUDY_UPDATED, updated(), 1000.0)
    clock.now = 1060.0
    events.fail = True
    with pytest.raises(OSError):
        service.fire()
    events.fail = False
    [detail] = service.fire()
    assert detail["generation"] == 1 and timers.pending() == []


def test_a_pending_claim_is_published_at_recovery_once(parts: Any) -> None:
    service, _, events, clock, timers = parts
    service.handle(STUDY_UPDATED, updated(), 1000.0)
    clock.now = 1060.0
    [timer] = timers.due(clock.now)
    assert timers.claim(timer)  # a crash before publishing
    assert service.recover(lambda t: False) == 1
    assert events.published[0][1]["generation"] == 1
    assert service.recover(lambda t: False) == 0 and service.fire() == []


def _settings(data: Path) -> Settings:
    return Settings(data_dir=data)


def test_worker_follows_the_log_and_survives_a_restart(tmp_path: Path) -> None:
    catalog, clock = Catalog(), Clock()
    catalog.studies[(P, S)] = Study()
    data = tmp_path / "data"
    data.mkdir()
    log = EmbeddedEventLog(data / "events.db")
    log.publish(STUDY_UPDATED, updated())
    at = log.read()[0].time
    clock.now = at + 1
    worker = StableWorker(_settings(data), catalog, quiet_seconds=5, clock=clock)  # type: ignore[arg-type]
    assert worker.step() == 0
    worker.close()
    clock.now = at + 100  # quiet time passed while down
    worker = StableWorker(_settings(data), catalog, quiet_seconds=5, clock=clock)  # type: ignore[arg-type]
    assert worker.cursor == 1
    assert worker.step() == 1
    assert worker.step() == 0
    worker.close()
    worker = StableWorker(_settings(data), catalog, quiet_seconds=5, clock=clock)  # type: ignore[arg-type]
    assert worker.step() == 0  # nothing again after a restart
    worker.close()
    stable = [e for e in log.read(0, 100) if e.detail_type == STUDY_STABLE]
    assert [e.detail["generation"] for e in stable] == [1]
    log.close()


def test_pacs_up_option_sets_the_quiet_time() -> None:
    import argparse

    from pacs.cli.main import _settings
    from pacs.cli.up import add_anonymizer_arguments, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    add_anonymizer_arguments(parser)
    assert _settings(parser.parse_args(["--study-quiet-seconds", "1"])).study_quiet_seconds == 1
    assert _settings(parser.parse_args(["--study-quiet-seconds", "0"])).study_quiet_seconds == 0
