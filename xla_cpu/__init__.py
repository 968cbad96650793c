"""Everything that exists only for XLA:CPU: retrax's native kernels (attention, layer norm) and
their build, the dense layers' split weight gradient, the compile options, and the host memory
of the training process (the block cache and huge pages).

`retrax.ops` chooses these on XLA:CPU and `python -m retrax.train` calls `with_host_memory`;
nothing else imports this package. None of it runs, or re-executes a process, on TPU or GPU.
"""
from .attention import applies as attention_applies
from .attention import attention as fused_attention
from .attention import packed_attention
from .compile_options import options as compiler_options
from .dense import dot_general as dense_dot_general
from .host_memory import with_host_memory
from .kernels import enabled as kernels_enabled
from .layer_norm import applies as layer_norm_applies
from .layer_norm import layer_norm as fused_layer_norm
