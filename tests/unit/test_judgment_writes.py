"""worth_writing(): a judgement is written to status only when it says something status does not yet say."""

from specserve.decision import judgment
from specserve.observation import metrics
from tests.unit.test_judgment import BODY, judge, poll, spec


def judged(previous_status, result, now):
    body = {**BODY, "status": previous_status}
    return judge(body, spec(), result, now)


def first_write(result, now=1000.0):
    outcome = judged({}, result, now)
    return {**outcome.status}


def test_the_first_judgement_is_written():
    outcome = judged({}, poll(0.8), 1000.0)
    assert judgment.worth_writing({}, outcome, 1000.0, spec())


def test_the_same_verdict_on_similar_numbers_is_not_written():
    status = first_write(poll(0.8))
    again = judged(status, poll(0.81), 1060.0)
    assert again.decision.action == "keep"
    assert not judgment.worth_writing(status, again, 1060.0, spec())


def test_numbers_that_moved_are_written():
    status = first_write(poll(0.8))
    moved = judged(status, poll(0.72), 1060.0)
    assert judgment.worth_writing(status, moved, 1060.0, spec())


def test_a_repeated_hold_while_prometheus_is_down_is_not_written():
    status = first_write(metrics.MetricsError("ConnectionError: refused"))
    again = judged(status, metrics.MetricsError("ConnectionError: refused"), 1060.0)
    assert again.decision.action == "hold" and again.event is None
    assert not judgment.worth_writing(status, again, 1060.0, spec())


def test_metrics_coming_back_is_written():
    status = first_write(metrics.MetricsError("ConnectionError: refused"))
    back = judged(status, poll(0.8), 1060.0)
    assert judgment.worth_writing(status, back, 1060.0, spec())


def test_a_decision_is_always_written():
    status = first_write(poll(0.8))
    off = judged(status, poll(0.3), 1060.0)
    assert off.decision.action == "disable_speculation"
    assert judgment.worth_writing(status, off, 1060.0, spec())


def test_an_unchanged_record_is_not_rewritten_however_old():
    status = first_write(poll(0.8))
    a_day_later = 1000.0 + 86400
    assert not judgment.worth_writing(status, judged(status, poll(0.81), a_day_later), a_day_later, spec())


def test_a_breach_being_counted_is_written():
    s = spec(healthPolicy={"consecutiveBreaches": 3, "minDraftTokens": 100})
    status = {**judge(BODY, s, poll(0.8), 1000.0).status}
    breach = judge({**BODY, "status": status}, s, poll(0.3), 1060.0)
    assert breach.decision.action == "keep" and breach.status["health"]["consecutiveBreaches"] == 1
    assert judgment.worth_writing(status, breach, 1060.0, s)


def test_the_loop_remembers_evaluations_status_does_not_show():
    status = first_write(poll(0.8))
    assert not judgment.due(status, spec(), 1070.0, evaluated=1060.0)
    assert judgment.due(status, spec(), 1070.0)
