"""Small Triton helpers shared by the kernels."""

import triton
import triton.language as tl

from ._backend import interpreter_on


def dot_upcast() -> bool:
    """Whether `tile_dot` must upcast half inputs: Triton's CPU interpreter multiplies bf16 tiles
    wrongly (it reads their raw bits), so under the interpreter tiles go to fp32 first, which gives
    the same fp32-accumulated products that tensor cores give."""
    return interpreter_on()


@triton.jit
def tile_dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with fp32 accumulation; PRECISION is tl.dot's input_precision for fp32 tiles."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PRECISION)
    else:
        return tl.dot(a, b, input_precision=PRECISION)
