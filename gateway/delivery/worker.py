"""The delivery loop: claim due deliveries, send each, classify the answer, record the next state.

Admission is per destination (`gateway.delivery.limits`), so a destination that is slow or down
only ever holds its own slots; deliveries to the others keep flowing.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace

from aiohttp import ClientSession

from gateway.clock import Clock, SystemClock
from gateway.config.schema import DestinationConfig
from gateway.delivery.auth import CredentialsBook, TokenFailure
from gateway.delivery.chains import releases
from gateway.delivery.classify import classify
from gateway.delivery.limits import Limits, LocalLimits
from gateway.delivery.next_state import dead, next_state, waiting_for_quota
from gateway.delivery.send import Response, TransportFailure, send
from gateway.errors import StoreUnavailable
from gateway.mask import Masker
from gateway.model import AttemptResult, Delivery, DeliveryStatus, RenderedRequest
from gateway.store.base import Store

logger = logging.getLogger("gateway.worker")

# Time allowed, beyond the destination's timeout, to record an outcome before the lease runs out
# (the default of `storage.lease_margin`).
LEASE_MARGIN_S = 30.0
# Deliveries to destinations no longer in the config are claimed this many at a time, to be dead-lettered.
ORPHAN_BATCH = 100
ORPHAN_SCAN_INTERVAL_MS = 60_000
# New events start a round at most this often: at 300 events/s a round claims about six events, and a delivery
# costs about a third less CPU than with a round per event, for at most 20 ms more on its way.
ROUND_SPACING_S = 0.02

OnAttempt = Callable[[Delivery, AttemptResult], None]


class Worker:
    """Delivers what the store holds. `run()` serves until `stop()`; `drain()` is burst mode for tests."""

    def __init__(
        self,
        store: Store,
        destinations: Mapping[str, DestinationConfig],
        session: ClientSession,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        poll_interval_s: float = 0.5,
        limits: Limits | None = None,
        on_attempt: OnAttempt | None = None,
        lease_margin_s: float = LEASE_MARGIN_S,
        masker: Masker | None = None,
        public_session: ClientSession | None = None,
        round_spacing_s: float = ROUND_SPACING_S,
    ) -> None:
        """`public_session` (`make_session(public_only=True)`) sends the requests whose host came from a template;
        without one, those are refused. `round_spacing_s`: see `wake`."""
        self._store = store
        self._destinations = destinations
        self._session = session
        self._public_session = public_session
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._poll_interval_s = poll_interval_s
        self._limits = limits or LocalLimits(destinations)
        self._credentials = CredentialsBook(destinations)
        self._masker = masker or Masker()
        self._on_attempt = on_attempt
        self._lease_margin_s = lease_margin_s
        self._lease_ms = _lease_ms(destinations, lease_margin_s)
        self._tasks: set[asyncio.Task[bool]] = set()
        self._wakeup = asyncio.Event()
        self._round_spacing_s = round_spacing_s
        self._round_started_at = 0.0  # loop time; spacing follows only a round that started deliveries
        self._spaced_wake: asyncio.TimerHandle | None = None
        self._last_round_started = False  # whether the last round started any delivery
        self._slots_wanted = False  # the last round left due deliveries waiting for a slot: a freed one matters
        self._stopping = False
        self._store_problem: str | None = None
        self._loop_exited: asyncio.Event | None = None
        self._orphans: frozenset[str] = frozenset()
        self._orphan_scan_due_ms = 0

    @property
    def lease_ms(self) -> int:
        """How long a claimed delivery stays leased to this worker."""
        return self._lease_ms

    @property
    def store_problem(self) -> str | None:
        """Why the last round could not claim or read the queue; None while the store answers. /readyz reports
        it and ingest refuses events meanwhile: an event it could not deliver must not get a 200."""
        return self._store_problem

    def wake(self) -> None:
        """Look for due deliveries: ingest calls this after storing new ones. After a round that started
        deliveries, the next starts once `round_spacing_s` have passed since it began: a steady stream of events
        is then claimed, sent and recorded in groups, not an event a round (a round costs a few transactions).
        After a round that started none (nothing was due, or other replicas held the slots), and for freed
        slots and due retries, a round starts at once."""
        if self._spaced_wake is not None:
            return
        loop = asyncio.get_running_loop()
        spacing_s = self._round_spacing_s if self._last_round_started else 0.0
        delay_s = self._round_started_at + spacing_s - loop.time()
        if delay_s <= 0:
            self._wakeup.set()
        else:
            self._spaced_wake = loop.call_later(delay_s, self._wakeup.set)

    async def reconfigure(self, destinations: Mapping[str, DestinationConfig], masker: Masker | None = None) -> None:
        """Deliver to `destinations` from the next claim on (a config reload); attempts in flight finish as they
        started and stay counted by the limits, which take the new settings too. `masker` hides the new
        config's secrets in the answers kept for request chains."""
        self._destinations = destinations
        self._masker = masker or self._masker
        self._lease_ms = _lease_ms(destinations, self._lease_margin_s)
        self._limits.reconfigure(destinations)
        self._credentials.reconfigure(destinations)
        self._orphan_scan_due_ms = 0
        self.wake()

    async def run(self) -> None:
        """Deliver until `stop()` is called. Waits in real time: with a FakeClock, use `drain()` instead."""
        self._loop_exited = asyncio.Event()
        try:
            while not self._stopping:
                self._wakeup.clear()
                self._round_started_at = asyncio.get_running_loop().time()
                if self._spaced_wake is not None:  # this round claims what that wake-up was for
                    self._spaced_wake.cancel()
                    self._spaced_wake = None
                await self._sleep_or_wake(await self._serve_once())
        finally:
            if self._spaced_wake is not None:
                self._spaced_wake.cancel()
            self._loop_exited.set()

    async def drain(self) -> None:
        """Deliver until nothing is pending and nothing is in flight, sleeping the clock through retry waits."""
        while True:
            now_ms = self._clock.now_ms()
            await self._fill(now_ms)
            if self._tasks:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            look_ms = await self._next_look_ms(now_ms)
            if look_ms is None:
                return
            if look_ms == 0:  # due, yet nothing was claimable: perhaps a destination removed from the config
                self._orphan_scan_due_ms = 0
            await self._clock.sleep(look_ms / 1000 if look_ms else self._poll_interval_s)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop claiming; let attempts in flight finish within `grace_s`, then cancel the rest.

        A cancelled attempt records nothing: its delivery stays pending and is claimed
        again once its lease runs out.
        """
        self._stopping = True
        self._wakeup.set()
        if self._loop_exited is not None:
            await self._loop_exited.wait()
        in_flight = len(self._tasks)
        late: set[asyncio.Task[bool]] = set()
        if in_flight:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        logger.info(
            "delivery worker stopped; attempts in flight: %d finished, %d cut short (sent again once their lease "
            "runs out)", in_flight - len(late), len(late),
        )

    async def _serve_once(self) -> float:
        """One round of the serving loop; returns how long to wait before the next one."""
        now_ms = self._clock.now_ms()
        try:
            await self._fill(now_ms)
            look_ms = await self._next_look_ms(now_ms)
        except StoreUnavailable as exc:
            if self._store_problem is None:
                logger.warning("store unavailable, trying again every %g s: %s", self._poll_interval_s, exc)
            self._store_problem = str(exc)
            return self._poll_interval_s
        if self._store_problem is not None:
            logger.info("store available again")
            self._store_problem = None
        if look_ms == 0:  # due, yet not claimed: held back by a concurrency cap
            self._slots_wanted = True
        return self._idle_s(look_ms)

    async def _fill(self, now_ms: int) -> None:
        """Claim what each destination may start at `now_ms` and start one task per delivery."""
        if now_ms >= self._orphan_scan_due_ms:
            await self._scan_orphans(now_ms)
        capacity = await self._limits.capacities(list(self._destinations), now_ms)
        capacity.update(dict.fromkeys(self._orphans, ORPHAN_BATCH))
        claimed: list[Delivery] = []
        try:
            if any(capacity.values()):
                claimed = await self._store.claim(capacity, now_ms, self._lease_ms)
        finally:
            started = Counter(delivery.destination for delivery in claimed)
            self._last_round_started = bool(claimed)
            self._slots_wanted = any(granted and started[name] >= granted for name, granted in capacity.items())
            await self._limits.started_each({name: started[name] for name in self._destinations})
        for delivery in claimed:
            holds_slot = delivery.destination in self._destinations
            task = asyncio.create_task(self._attempt(delivery, holds_slot), name=f"delivery {delivery.id}")
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[bool]) -> None:
        """Start a round when the attempt left work that may be due before the loop's next look, or freed a slot
        that deliveries wait for; otherwise a round would claim nothing (one per attempt cost a third of the
        CPU at a steady low rate)."""
        self._tasks.discard(task)
        if self._slots_wanted or task.cancelled() or task.exception() is not None or task.result():
            self._wakeup.set()

    async def _scan_orphans(self, now_ms: int) -> None:
        pending = (await self._store.stats()).by_destination
        self._orphans = frozenset(name for name, count in pending.items() if count and name not in self._destinations)
        self._orphan_scan_due_ms = now_ms + ORPHAN_SCAN_INTERVAL_MS

    async def _next_look_ms(self, now_ms: int) -> int | None:
        """Milliseconds from `now_ms`, when the round claimed, until something may be claimable: None if nothing
        is pending, 0 if it was due then and yet not claimed (held back). Measured from the claim, not from
        now: a retry that came due since would otherwise read as held back and wait for a poll."""
        due_ms = await self._store.next_due_ms()
        if due_ms is None:
            return None
        if due_ms > now_ms:
            return due_ms - now_ms
        ready = [await self._limits.next_ready_ms(name, now_ms) for name in self._destinations]
        return min((at_ms - now_ms for at_ms in ready if at_ms is not None and at_ms > now_ms), default=0)

    def _idle_s(self, look_ms: int | None) -> float:
        # 0 means due but held back by concurrency, which a finishing attempt ends with a wake-up.
        return self._poll_interval_s if not look_ms else min(look_ms / 1000, self._poll_interval_s)

    async def _sleep_or_wake(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        waiter = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()

    async def _attempt(self, delivery: Delivery, holds_slot: bool) -> bool:
        """Attempt `delivery` and record the outcome; True when it leaves work behind (a retry, a quota wait, a
        paused destination, released chained requests, or an outcome that could not be recorded)."""
        config = self._destinations.get(delivery.destination)
        try:
            result, answer = await self._try(delivery, config)
            result = _masked(result, self._credentials.mask)
            if delivery.step is not None:
                released = await releases(self._store, delivery, result, answer, self._masker, self._credentials.mask)
                result = replace(result, released=released)
            recorded = await self._store.finish(delivery, result)
        except StoreUnavailable as exc:
            logger.warning("delivery %s: outcome not recorded (%s); retried once its lease runs out", delivery.id, exc)
            return True
        except Exception:
            logger.exception("delivery %s: attempt failed unexpectedly; retried once its lease runs out", delivery.id)
            return True
        finally:
            if holds_slot:
                await self._limits.finished(delivery.destination)
        _log(delivery, result, recorded, self._clock.now_ms())
        if self._on_attempt is not None:
            self._on_attempt(delivery, result)
        return result.status is DeliveryStatus.PENDING or bool(result.released) or result.pause is not None

    async def _try(self, delivery: Delivery, config: DestinationConfig | None) -> tuple[AttemptResult, Response | None]:
        """The attempt's result, and the destination's answer when there was one."""
        started_at_ms = self._clock.now_ms()
        if config is None:
            reason = f"destination {delivery.destination!r} is not in the config; add it back and replay"
            return dead(delivery, started_at_ms, None, reason), None
        if delivery.request is None:
            reason = "nothing to send: the request was never rendered; fix the template and replay with --rerender"
            return dead(delivery, started_at_ms, None, reason), None
        answer = await self._send(delivery.request, delivery.destination, config)
        now_ms = self._clock.now_ms()
        outcome = answer.outcome if isinstance(answer, TokenFailure) else classify(config.type, answer, now_ms)
        result = next_state(delivery, config, started_at_ms, answer, outcome, now_ms, self._rng)
        return result, answer if isinstance(answer, Response) else None

    async def _send(
        self, request: RenderedRequest, destination: str, config: DestinationConfig
    ) -> Response | TransportFailure | TokenFailure:
        """Send with the destination's credentials; a 401 to an OAuth2 token gets one more try with a new token,
        at once and within the same attempt."""
        public_only = request.untrusted_host and not config.allow_private_hosts
        chosen = self._public_session if public_only else self._session
        if chosen is None:
            return TransportFailure("blocked", "its host came from a template and this worker sends none such", 0.0)
        session: ClientSession = chosen
        credentials = self._credentials.get(destination)
        if credentials is None:
            return await send(session, request, config.timeout, config.sign, public_only=public_only)

        async def authorized() -> tuple[str, Response | TransportFailure | TokenFailure]:
            assert credentials is not None
            authorization = await credentials.authorization(self._session, config.timeout, self._clock.now_ms())
            if isinstance(authorization, TokenFailure):
                return "", authorization
            answer = await send(session, request, config.timeout, config.sign, authorization, public_only)
            return authorization, answer

        used, answer = await authorized()
        if isinstance(answer, Response) and answer.status == 401 and credentials.renewable(used):
            used, answer = await authorized()
        return answer


def _lease_ms(destinations: Mapping[str, DestinationConfig], margin_s: float) -> int:
    longest_timeout_s = max((config.timeout for config in destinations.values()), default=0.0)
    return round((longest_timeout_s + margin_s) * 1000)


def _masked(result: AttemptResult, mask: Callable[[str], str]) -> AttemptResult:
    """`result` with run-time secrets (OAuth2 tokens an answer may echo) hidden in its error and excerpt."""
    attempt = result.attempt
    error = mask(attempt.error) if attempt.error is not None else None
    excerpt = mask(attempt.response_excerpt) if attempt.response_excerpt is not None else None
    if (error, excerpt) == (attempt.error, attempt.response_excerpt):
        return result
    return replace(result, attempt=replace(attempt, error=error, response_excerpt=excerpt))


def _log(delivery: Delivery, result: AttemptResult, recorded: bool, now_ms: int) -> None:
    """One line per state change; never the URL (it may carry credentials) nor the body."""
    attempt = result.attempt
    waiting = recorded and result.status is DeliveryStatus.PENDING and result.pause is not None
    fields: dict[str, object] = {
        "delivery_id": delivery.id,
        "event_id": delivery.event_id,
        "route": delivery.route,
        "destination": delivery.destination,
        "attempt": delivery.attempts + int(result.counted),  # attempts spent; a quota answer spends none
        "max_attempts": delivery.max_attempts,
        "status_code": attempt.status_code,
        "elapsed_ms": round(attempt.elapsed_ms),
        "outcome": "waiting" if waiting else result.status.value if recorded else "lease-lost",
    }
    state = str(fields["outcome"])
    error = attempt.error
    if waiting and result.pause is not None:
        fields["waiting_until_ms"] = result.pause.until_ms
        state, error = waiting_for_quota(result.pause.until_ms), result.pause.reason
    line = (
        f"delivery {delivery.id} {state}: route={delivery.route} destination={delivery.destination} "
        f"attempt={fields['attempt']}/{delivery.max_attempts} status={attempt.status_code or '-'} "
        f"elapsed_ms={fields['elapsed_ms']}"
    )
    if result.status is DeliveryStatus.PENDING and result.next_attempt_at_ms is not None and not waiting:
        line += f" retry_in_s={(result.next_attempt_at_ms - now_ms) / 1000:.1f}"
    if error:
        line += f" error={error}"
    level = logging.WARNING if result.status is DeliveryStatus.DEAD or not recorded else logging.INFO
    logger.log(level, line, extra=fields)
