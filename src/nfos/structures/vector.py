"""Vector: a fixed array of records or scalars; one transactional object per element.

Two transactions conflict only when they use the same index and one of them
writes it.  Recipe for a hot element: a DistributedObj.
"""

from __future__ import annotations

from nfos import _core
from nfos.records import is_record_type, scalar_type
from nfos.structures.base import Conflict, Diagnosis, StructInfo, Structure, check_count, record


class Vector(_core.VectorBase, Structure):
    """``Vector(Record or scalar type, size)``: ``v[i]`` reads (a record view or an int),
    ``v[i].field = x`` or ``v[i] = x`` writes."""

    kind = "Vector"
    operations = ("read", "write")
    unknown_other_op = "write"

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

    @classmethod
    def classify(cls, c: Conflict, info: StructInfo, params: dict[str, object]) -> Diagnosis:
        return Diagnosis(f"{c.own_op} vs {c.other_op}", "two transactions used the same element and at least one wrote it",
                         f"keep the hot element(s) of {info.called} in an nfos.DistributedObj (updates never conflict)",
                         "DistributedObj", f"[{c.element}]")
