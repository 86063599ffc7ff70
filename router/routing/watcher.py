"""Provider updates -> one route table, swapped atomically.

Each provider publishes its complete state. Updates are debounced, merged in provider
order, dropped when nothing changed, compiled (which never does I/O) and swapped in one
assignment, so requests in flight keep the table they started with.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Sequence

from router.api.provider import Provider, ProviderUpdate, Publish, RouteProblem
from router.config.models import Route
from router.observability.metrics import Metrics
from router.routing.compiled import CompiledRoute
from router.routing.holder import TableHolder
from router.routing.table import RouteTable

logger = logging.getLogger("commons_router.routing")

Compile = Callable[[Sequence[Route]], tuple[RouteTable[CompiledRoute], list[RouteProblem]]]


async def run_provider(provider: Provider, publish: Publish) -> None:
    """Run ``provider`` until cancelled, restarting it (after a growing delay) if it fails;
    the last routes it published keep serving meanwhile."""
    backoff = 1.0
    while True:
        try:
            await provider.run(publish)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("provider %s failed; restarting in %.0fs", provider.name, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)


class RouteWatcher:
    def __init__(
        self,
        compile_routes: Compile,
        holder: TableHolder,
        metrics: Metrics,
        *,
        debounce: float = 0.1,
    ) -> None:
        self._compile = compile_routes
        self._holder = holder
        self._metrics = metrics
        self._debounce = debounce
        self._latest: dict[str, ProviderUpdate] = {}
        self._order: list[str] = []
        self._applied: list[Route] | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._compile_problems: list[RouteProblem] = []
        self.problems: tuple[RouteProblem, ...] = ()

    def publish(self, update: ProviderUpdate) -> None:
        if update.provider not in self._order:
            self._order.append(update.provider)
        self._latest[update.provider] = update
        if self._pending is None:
            loop = asyncio.get_running_loop()
            self._pending = loop.call_later(self._debounce, self._apply_pending)

    def _apply_pending(self) -> None:
        self._pending = None
        self.apply_now()

    def apply_now(self) -> bool:
        """Merge, compile and swap; returns False when nothing changed."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        routes: list[Route] = []
        problems: list[RouteProblem] = []
        owners: dict[str, str] = {}
        for provider in self._order:
            update = self._latest[provider]
            problems.extend(update.problems)
            for route in update.routes:
                owner = owners.get(route.name)
                if owner is not None:
                    problems.append(
                        RouteProblem(
                            f"{provider}:{route.name}",
                            f"route name already used by provider {owner!r}; route disabled",
                            route.name,
                        )
                    )
                    continue
                owners[route.name] = provider
                routes.append(route)
        if self._applied is not None and routes == self._applied:
            self.problems = tuple(problems) + tuple(self._compile_problems)
            return False
        # Building a table allocates an object or more per route and no garbage cycles;
        # with the collector paused it does not traverse the whole heap again and again
        # meanwhile. This is synchronous: collection resumes right after.
        collecting = gc.isenabled()
        gc.disable()
        try:
            table, compile_problems = self._compile(routes)
        finally:
            if collecting:
                gc.enable()
        self._compile_problems = compile_problems
        for conflict in table.conflicts:
            compile_problems.append(
                RouteProblem(
                    f"route:{conflict.route}", conflict.message + "; route disabled", conflict.route
                )
            )
        self._holder.swap(table)
        self._applied = routes
        self._metrics.table_generation = self._holder.generation
        logged = set(self.problems)
        self.problems = tuple(problems) + tuple(compile_problems)
        for problem in self.problems:
            # Each problem is logged when it appears, not again at every table change.
            if problem not in logged:
                if problem.route is None:
                    logger.warning("route problem in %s: %s", problem.source, problem.message)
                else:
                    logger.warning(
                        "route problem in %s, route %s: %s",
                        problem.source,
                        problem.route,
                        problem.message,
                    )
        logger.info("route table %d applied: %d routes", self._holder.generation, len(table.routes))
        return True
