"""Requests whose host came from a template reach public addresses only: the policy, and the connection that
applies it to the address actually used. Nothing here resolves or contacts a name or address off this machine."""

from __future__ import annotations

import pytest

from gateway.delivery.addresses import refusal
from gateway.delivery.send import make_session
from gateway.delivery.worker import Worker
from gateway.model import DeliveryStatus
from tests.delivery.conftest import Rig, destination
from tests.fakes import FakeDestination, FakeDns


@pytest.mark.parametrize(
    ("address", "why"),
    [
        pytest.param("127.0.0.1", "loopback", id="loopback"),
        pytest.param("::1", "loopback", id="loopback-v6"),
        pytest.param("::ffff:127.0.0.1", "loopback", id="v4-mapped-loopback"),
        pytest.param("10.1.2.3", "private", id="private-10"),
        pytest.param("172.16.0.5", "private", id="private-172"),
        pytest.param("192.168.1.1", "private", id="private-192"),
        pytest.param("fc00::1", "private", id="unique-local-v6"),
        pytest.param("169.254.169.254", "link-local", id="cloud-metadata"),
        pytest.param("fe80::1%eth0", "link-local", id="link-local-v6-with-zone"),
        pytest.param("100.64.0.1", "shared (CGNAT)", id="cgnat"),
        pytest.param("224.0.0.1", "multicast", id="multicast"),
        pytest.param("ff02::1", "multicast", id="multicast-v6"),
        pytest.param("0.0.0.0", "unspecified", id="unspecified"),
        pytest.param("::", "unspecified", id="unspecified-v6"),
        pytest.param("240.0.0.1", "private", id="reserved"),
        pytest.param("8.8.8.8", None, id="public"),
        pytest.param("2001:4860:4860::8888", None, id="public-v6"),
    ],
)
def test_which_addresses_are_refused(address: str, why: str | None) -> None:
    assert refusal(address) == why


async def test_a_name_resolving_to_loopback_is_refused_at_connection_time(rig: Rig) -> None:
    """DNS rebinding: whatever a name was when checked, the connection goes only where the checked answer says."""
    dns = FakeDns({"rebound.example": ["127.0.0.1"]})  # both sessions: no real DNS server is ever asked
    async with FakeDestination([200]) as sink, make_session(resolver=dns) as session, make_session(
        public_only=True, resolver=dns
    ) as public:
        url = sink.url().replace("127.0.0.1", "rebound.example")
        (delivery_id,) = await rig.enqueue("hook", url, untrusted_host=True)
        worker = Worker(rig.store, {"hook": destination()}, session, clock=rig.clock, public_session=public)
        await worker.drain()
        stored = await rig.delivery(delivery_id)
    assert sink.received == []
    assert stored.status is DeliveryStatus.DEAD
    assert stored.last_error == (
        "blocked: refused to connect to rebound.example (127.0.0.1) (loopback address): the URL's host came from a "
        "template; set allow_private_hosts: true on the destination if it must reach it"
    )
