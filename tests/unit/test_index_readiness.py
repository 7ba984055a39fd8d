"""indexes.CountedToggleSet: Kopf's start-up wait for the indexes, without waking every worker at every object."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits import aiotoggles

from specserve.cluster import indexes


def test_kopf_builds_counted_sets():
    assert aiotoggles.ToggleSet is indexes.CountedToggleSet


def test_all_set_is_on_exactly_when_every_toggle_is_on():
    async def main() -> None:
        s = indexes.CountedToggleSet(all)
        assert s.is_on()  # empty: all([]) is True, as in Kopf
        a = await s.make_toggle(name="a")
        b = await s.make_toggle(True, name="b")
        assert s.is_off() and len(s) == 2
        await a.turn_to(True)
        assert s.is_on()
        await b.turn_to(False)
        assert s.is_off()
        await s.drop_toggle(b)
        assert s.is_on()
        await s.drop_toggle(b)  # dropping twice changes nothing
        assert s.is_on() and len(s) == 1

    asyncio.run(main())


def test_any_set_as_the_peering_pause_uses_it():
    async def main() -> None:
        s = indexes.CountedToggleSet(any)
        assert s.is_off()
        a = await s.make_toggle(name="a")
        assert s.is_off()
        await a.turn_to(True)
        assert s.is_on()
        b = await s.make_toggle(True, name="b")
        await s.drop_toggles([a, b])
        assert s.is_off()

    asyncio.run(main())


def test_waiters_wake_when_the_last_toggle_goes_and_only_then():
    async def main() -> None:
        s = indexes.CountedToggleSet(all)
        toggles = [await s.make_toggle(name=str(i)) for i in range(100)]
        woken = 0
        real_notify = s._condition.notify_all

        def counting_notify() -> None:
            nonlocal woken
            woken += 1
            real_notify()

        s._condition.notify_all = counting_notify  # type: ignore[method-assign]
        waiters = [asyncio.create_task(s.wait_for(True)) for _ in range(50)]
        await asyncio.sleep(0)
        for t in toggles[:-1]:
            await s.drop_toggle(t)
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters) and woken == 0
        await s.drop_toggle(toggles[-1])
        await asyncio.wait_for(asyncio.gather(*waiters), 1)
        assert woken == 1

    asyncio.run(main())


def test_a_member_toggle_waited_on_by_itself_still_wakes():
    async def main() -> None:
        s = indexes.CountedToggleSet(any)
        t = await s.make_toggle(name="t")
        waiter = asyncio.create_task(t.wait_for(True))
        await asyncio.sleep(0)
        await t.turn_to(True)
        await asyncio.wait_for(waiter, 1)
        assert s.is_on()

    asyncio.run(main())
