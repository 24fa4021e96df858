"""The `deliver_webhook` task (jobs queue): one attempt of one outbox delivery.

The row is the truth (`service.webhooks.delivery`): a message lost, duplicated or
handed back after a worker died costs at most a wait for the periodic scan, never a
delivery, and never a second one sent at the same time.
"""

from __future__ import annotations

from typing import Any

from service.config import get_settings
from service.db import get_sessionmaker
from service.queue import WEBHOOK_TASK, app
from service.webhooks.delivery import deliver
from workers.task_options import durable_task


@app.task(  # type: ignore[untyped-decorator]
    **durable_task(WEBHOOK_TASK)
)
def deliver_webhook(self: Any, delivery_id: str, held: str) -> dict[str, Any]:
    done = deliver(get_sessionmaker(), get_settings(), delivery_id, held)
    return {"delivery_id": delivery_id, "done": done}
