"""Which destinations wait for a spent quota, and until when: what `gateway deliveries` and the admin API show."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.delivery.next_state import waiting_for_quota
from gateway.mask import Masker
from gateway.model import DestinationPause
from gateway.routing.compiled import LoadedConfig
from gateway.store.base import Store

Pauses = Mapping[str, DestinationPause]


async def quota_pauses(store: Store, now_ms: int) -> Pauses:
    """The destinations waiting for a spent quota to come back, by name."""
    return {pause.destination: pause for pause in await store.pauses(now_ms)}


def pause_document(pause: DestinationPause, masker: Masker) -> dict[str, Any]:
    reason = masker.url(pause.reason)
    return {
        "destination": pause.destination,
        "until_ms": pause.until_ms,
        "reason": reason,
        "text": f"{waiting_for_quota(pause.until_ms)}: {reason}",
    }


def destinations_document(loaded: LoadedConfig, pauses: Pauses, masker: Masker) -> dict[str, Any]:
    """Each destination of the config, and the quota it waits for, if any."""
    return {
        "destinations": [
            {"name": name, "type": config.type,
             "waiting_for_quota": pause_document(pauses[name], masker) if name in pauses else None}
            for name, config in loaded.config.destinations.items()
        ]
    }  # fmt: skip
