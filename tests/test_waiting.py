"""The one wait helper: back-off, scaled timeouts, errors that say what was awaited."""
from __future__ import annotations

import asyncio

import pytest

from emulator import waiting
from emulator.errors import LnemuError
from emulator.waiting import WaitTimeout, wait_for, wait_until


class FakeClock:
    """Stands in for the ``time`` module inside ``emulator.waiting``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(waiting, "time", fake)
    monkeypatch.delenv(waiting.TIMEOUT_SCALE_ENV, raising=False)
    return fake


def test_returns_the_truthy_value_without_waiting(clock: FakeClock) -> None:
    assert wait_for(lambda: {"pid": 7}) == {"pid": 7}
    assert clock.sleeps == []


def test_polls_until_true_and_returns_its_value(clock: FakeClock) -> None:
    answers = iter([None, 0, "", [], "ready"])
    assert wait_for(lambda: next(answers), timeout=5) == "ready"
    assert len(clock.sleeps) == 4


def test_back_off_doubles_up_to_a_quarter_second(clock: FakeClock) -> None:
    with pytest.raises(WaitTimeout):
        wait_for(lambda: False, timeout=2.0, interval=0.01)
    assert clock.sleeps[:6] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16, 0.25])
    assert max(clock.sleeps) == pytest.approx(0.25)
    assert sum(clock.sleeps) == pytest.approx(2.0)  # the last pause ends at the deadline


def test_checks_once_more_at_the_deadline(clock: FakeClock) -> None:
    deadline = clock.now + 1.0
    assert wait_for(lambda: clock.now >= deadline, timeout=1.0) is True


def test_timeout_names_what_and_how_long(clock: FakeClock) -> None:
    with pytest.raises(WaitTimeout, match=r"1\.50 s waiting for alice's channel to open"):
        wait_for(lambda: False, timeout=1.5, what="alice's channel to open")


def test_timeout_without_what_names_the_predicate(clock: FakeClock) -> None:
    def chain_is_synced() -> bool:
        return False

    with pytest.raises(WaitTimeout, match="chain_is_synced"):
        wait_for(chain_is_synced, timeout=0.1)


def test_wait_timeout_is_a_typed_lnemu_error() -> None:
    assert issubclass(WaitTimeout, LnemuError)
    assert WaitTimeout("x").code == "timeout"


def test_timeout_is_scaled_by_the_environment(clock: FakeClock,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(waiting.TIMEOUT_SCALE_ENV, "3")
    start = clock.now
    with pytest.raises(WaitTimeout, match=r"3\.00 s"):
        wait_for(lambda: False, timeout=1.0)
    assert clock.now - start == pytest.approx(3.0)


@pytest.mark.parametrize("raw", ["fast", "0", "-2", "nan", "inf"])
def test_a_bad_scale_is_a_configuration_error(clock: FakeClock, raw: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(waiting.TIMEOUT_SCALE_ENV, raw)
    with pytest.raises(LnemuError, match=waiting.TIMEOUT_SCALE_ENV) as info:
        wait_for(lambda: True)
    assert info.value.code == "bad_config"


def test_exceptions_from_the_predicate_propagate(clock: FakeClock) -> None:
    def broken() -> bool:
        raise KeyError("no such peer")

    with pytest.raises(KeyError, match="no such peer"):
        wait_for(broken)


def test_real_clock_short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(waiting.TIMEOUT_SCALE_ENV, raising=False)
    calls = []
    assert wait_for(lambda: calls.append(1) or len(calls) >= 3, timeout=5) is True
    with pytest.raises(WaitTimeout):
        wait_for(lambda: False, timeout=0.05)


def test_wait_until_lets_the_loop_run_and_names_what_timed_out():
    """The async form returns the predicate's value once a task made it true, and
    names what it waited for when it never is."""
    async def scenario() -> object:
        box: list[str] = []
        asyncio.get_running_loop().call_later(0.02, box.append, "done")
        found = await wait_until(lambda: box and box[0], timeout=5)
        with pytest.raises(WaitTimeout, match="the impossible"):
            await wait_until(lambda: False, timeout=0.05, what="the impossible")
        return found

    assert asyncio.run(scenario()) == "done"
