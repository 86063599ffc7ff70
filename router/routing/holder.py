"""The route table in force, swapped whole."""

from __future__ import annotations

from router.routing.compiled import CompiledRoute
from router.routing.table import RouteTable


class TableHolder:
    """The current route table. Swapped by assignment: readers never see a partial one."""

    __slots__ = ("generation", "table")

    def __init__(self) -> None:
        self.table: RouteTable[CompiledRoute] = RouteTable(())
        self.generation = 0

    def swap(self, table: RouteTable[CompiledRoute]) -> None:
        self.table = table
        self.generation += 1
