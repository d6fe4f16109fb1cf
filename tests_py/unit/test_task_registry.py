"""tasks.py without a server: @task registers a handler under its name (or one given),
refuses a second handler for a name and a bad timeout, tells async handlers from sync
ones, and imports task modules from files."""

from __future__ import annotations

import pytest
from pgjobs import tasks


@pytest.fixture(autouse=True)
def empty_registry(monkeypatch):
    monkeypatch.setattr(tasks, "_registry", {})


def test_register_by_function_name_or_given_name():
    @tasks.task
    def plain(payload, job):
        pass

    @tasks.task("send_email", timeout=2.5)
    async def mail(payload, job):
        pass

    assert tasks.registered() == {"plain": plain, "send_email": mail}
    assert tasks.default_timeout(plain) is None
    assert tasks.default_timeout(mail) == 2.5
    assert not tasks.is_async(plain) and tasks.is_async(mail)


def test_refusals():
    @tasks.task("one")
    def first(payload, job):
        pass

    with pytest.raises(ValueError, match="already registered"):
        tasks.task("one")(lambda payload, job: None)
    tasks.task("one")(first)  # the same handler again is fine
    with pytest.raises(ValueError, match="positive"):
        tasks.task("two", timeout=0)
    with pytest.raises(TypeError):
        tasks.task(42)


def test_async_callable_object_is_async():
    class Handler:
        async def __call__(self, payload, job):
            pass

    assert tasks.is_async(Handler())


def test_import_task_modules_from_a_file(tmp_path):
    path = tmp_path / "my_tasks.py"
    path.write_text("import pgjobs\n\n@pgjobs.task\ndef from_file(payload, job):\n    pass\n")
    assert list(tasks.import_task_modules([str(path)])) == ["from_file"]
