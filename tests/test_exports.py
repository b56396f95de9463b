"""The public surface is curated: this test pins it."""

from __future__ import annotations

import rivetkit


def test_top_level_exports() -> None:
    assert sorted(rivetkit.__all__) == [
        "ActionContext",
        "ActorContext",
        "ActorDb",
        "ActorDefinition",
        "ActorError",
        "ActorKv",
        "ActorOptions",
        "ActorQueue",
        "BigInt",
        "Conn",
        "CriticalError",
        "Cron",
        "CronFire",
        "CronJob",
        "DefinitionError",
        "HistoryDivergedError",
        "JoinError",
        "QueueMessage",
        "QueueSpec",
        "RaceError",
        "RaceResult",
        "Registry",
        "RegistryConfig",
        "RivetError",
        "RollbackError",
        "Schedule",
        "ScheduleErrorInfo",
        "ScheduledEvent",
        "ScheduledFireInfo",
        "StepExhaustedError",
        "StepTimeoutError",
        "TryBlockFailure",
        "TryBlockResult",
        "TryStepFailure",
        "TryStepResult",
        "UserError",
        "WorkflowContext",
        "WorkflowError",
        "WorkflowErrorEvent",
        "WorkflowQueueMessage",
        "__version__",
        "actor",
        "event",
        "queue",
        "setup",
        "workflow",
    ]
    for name in rivetkit.__all__:
        assert getattr(rivetkit, name) is not None


def test_testing_exports() -> None:
    import rivetkit.testing

    assert sorted(rivetkit.testing.__all__) == [
        "ActorTest",
        "FakeClock",
        "actor_test",
        "run_test_registry",
    ]
