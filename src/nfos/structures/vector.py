"""Vector: a fixed array of records or scalars; one transactional object per element.

Two transactions conflict only when they use the same index and one of them
writes it.  Recipe for a hot element: a DistributedObj.
"""

from __future__ import annotations

from nfos import _core
from nfos.records import is_record_type, scalar_type
from nfos.structures.base import check_count, record


class Vector(_core.VectorBase):
    """``Vector(Record or scalar type, size)``: ``v[i]`` reads (a record view or an int),
    ``v[i].field = x`` or ``v[i] = x`` writes."""

    def __init__(self, element: object, size: int) -> None:
        check_count(size, "Vector size")
        if is_record_type(element):
            super().__init__(element, element.__nfos_size__, size, -1)
        else:
            st = scalar_type(element, "Vector element")
            super().__init__(None, st.size, size, st.kind)
        self.element = element
        self.info = record(self, "Vector", size=size)

    def __repr__(self) -> str:
        name = getattr(self.element, "__name__", repr(self.element))
        return f"<Vector of {len(self)} {name} ({self.info.created_at})>"
