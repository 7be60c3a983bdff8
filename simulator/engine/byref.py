"""Hand a large named tuple of arrays to compiled helpers as one pointer instead of by value.

Numba passes a tuple argument as all of its members: the compiled model has about 200 arrays of seven
machine words each, so every call of a kernel helper that LLVM did not inline copied some 2,000 words
on the stack (perf: 88% of the kernel's time went to those copies). `by_ref(t)` stores the tuple once
on the stack of the function that calls it and returns a pointer; its fields read as the tuple's
(`ref.name`), so the helpers are written as before. The pointer is valid only while that function
runs: take it in the entry point and pass it down, never return it. It does not own the tuple's arrays:
Numba frees a tuple made inside the function right after its last use, which is the `by_ref` call itself,
so only tuples the caller holds (arguments) may be taken by pointer.
"""

from __future__ import annotations

from typing import Any

from numba import config
from numba.core import cgutils, types
from numba.core.datamodel import models
from numba.core.extending import intrinsic, register_model
from numba.core.imputils import impl_ret_borrowed, lower_getattr_generic
from numba.core.typing.templates import AttributeTemplate, infer_getattr


class ByRef(types.Type):
    """A pointer to a named tuple on the caller's stack."""

    def __init__(self, tuple_type: types.BaseNamedTuple) -> None:
        self.tuple_type = tuple_type
        super().__init__(name=f"ByRef({tuple_type})")

    @property
    def key(self) -> types.BaseNamedTuple:
        return self.tuple_type


@register_model(ByRef)
class ByRefModel(models.PrimitiveModel):
    """The pointer to the tuple's LLVM value."""

    def __init__(self, dmm: Any, fe_type: ByRef) -> None:
        super().__init__(dmm, fe_type, dmm.lookup(fe_type.tuple_type).get_value_type().as_pointer())


@infer_getattr
class ByRefAttributes(AttributeTemplate):
    key = ByRef

    def generic_resolve(self, typ: ByRef, attr: str) -> types.Type | None:
        fields = typ.tuple_type.fields
        return typ.tuple_type.types[fields.index(attr)] if attr in fields else None


@lower_getattr_generic(ByRef)
def _field(context: Any, builder: Any, typ: ByRef, value: Any, attr: str) -> Any:
    """Load one member through the pointer, as a borrowed reference (increfed where the caller counts
    references, so that its decref at the end of use leaves the tuple's arrays alive)."""
    index = typ.tuple_type.fields.index(attr)
    member = builder.load(cgutils.gep_inbounds(builder, value, 0, index))
    return impl_ret_borrowed(context, builder, typ.tuple_type.types[index], member)


@intrinsic
def _by_ref(typingctx: Any, tup: types.BaseNamedTuple) -> Any:
    """The named tuple, stored once on this function's stack, as a pointer to pass to helpers."""
    if not isinstance(tup, types.BaseNamedTuple):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return cgutils.alloca_once_value(builder, args[0])

    return ByRef(tup)(tup), codegen


def _same(tup: tuple) -> tuple:
    """Without the JIT (NUMBA_DISABLE_JIT=1) the kernel runs as Python: the tuple itself."""
    return tup


by_ref = _same if config.DISABLE_JIT else _by_ref
