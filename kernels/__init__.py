"""Triton kernels (installed as ``fastpicard.kernels``). Each module holds the kernels of one op
and a launcher taking plain tensors; validation and autograd live in ``fastpicard.ops``."""
